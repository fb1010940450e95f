"""scripts/run_marl.py as an experiment tool: progress lines, loggers, seeds, evaluation, errors.

Every run is the tiny simple_spread of ``test_run_marl`` (10-step episodes,
200 env steps per iteration), called in-process through ``main(argv)``.
"""
from __future__ import annotations

import csv
import json
import re
import statistics

import pytest
import yaml

from scripts import run_marl
from marl.experiment import cli, progress
from marl.experiment.run_dir import EVAL_RETURN_KEY, RETURN_KEY, STEP_KEY
from tests.test_run_marl import TINY, read_rows

pytestmark = pytest.mark.usefixtures("isolated_run_dir")

#: TINY without its stop condition and progress option, for tests that set their own.
BASE = TINY[:-3]
LINE = re.compile(r"^iter (\d+) \| env steps ([\d,]+) \| return -?[\d,]+\.\d\d \| ([\d,]+) steps/s \| [\d.,]+ s$")


# ---------------------------------------------------------------- progress
@pytest.mark.parametrize("option", [[], ["--no-progress"]])
def test_one_line_per_iteration_when_stdout_is_not_a_terminal(tmp_path, capsys, option):
    run_marl.main(BASE + ["--stop-iters", "2", "--run-dir", str(tmp_path / "run")] + option)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("iter ")]
    assert [LINE.match(line).group(1, 2) for line in lines] == [("1", "200"), ("2", "400")], lines
    assert "training:" not in captured.err  # no tqdm bar went anywhere


def test_quiet_prints_no_per_iteration_lines_but_the_summary(tmp_path, capsys):
    run_marl.main(BASE + ["--stop-iters", "2", "--quiet", "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if line.startswith("iter ")]
    assert "return, final" in out


def test_the_bar_is_only_for_a_terminal():
    assert progress.progress_mode(progress=True, quiet=False, interactive=True) == "bar"
    assert progress.progress_mode(progress=True, quiet=False, interactive=False) == "lines"
    assert progress.progress_mode(progress=False, quiet=False, interactive=True) == "lines"
    assert progress.progress_mode(progress=True, quiet=True, interactive=True) == "off"


# ---------------------------------------------------------------- loggers
def test_tensorboard_events_hold_every_iterations_metrics_at_its_env_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run_marl.main(TINY + ["--tensorboard", "--run-dir", str(run_dir)])
    rows = read_rows(run_dir)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    returns = events.Scalars(RETURN_KEY)
    assert [e.step for e in returns] == [200, 400]
    assert [e.value for e in returns] == pytest.approx([r[RETURN_KEY] for r in rows], rel=1e-6)
    assert "learners/agent_0/entropy" in events.Tags()["scalars"]


def test_progress_csv_has_one_row_per_iteration_and_every_key_as_a_column(tmp_path):
    run_dir = tmp_path / "run"
    # Evaluation first appears in iteration 2: the header must widen, not drop it.
    run_marl.main(BASE + ["--stop-iters", "3", "--eval-interval", "2", "--eval-episodes", "1",
                          "--no-progress", "--run-dir", str(run_dir)])
    rows = read_rows(run_dir)
    with open(run_dir / "progress.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, table = reader.fieldnames, list(reader)

    assert header[:len(rows[0])] == list(rows[0])  # the first row's keys, in order, come first
    assert set(header) == {k for r in rows for k in r}
    assert [int(r["training_iteration"]) for r in table] == [1, 2, 3]
    assert [float(r[STEP_KEY]) for r in table] == [200, 400, 600]
    assert [float(r[RETURN_KEY]) for r in table] == pytest.approx([r[RETURN_KEY] for r in rows])
    assert [r[EVAL_RETURN_KEY] != "" for r in table] == [False, True, False]


def test_resume_rebuilds_progress_csv_from_metrics_jsonl(tmp_path):
    run_dir = tmp_path / "run"
    run_marl.main(TINY + ["--run-dir", str(run_dir)])
    with open(run_dir / "metrics.jsonl", "a") as f:  # written after the checkpoint: dropped on resume
        f.write(json.dumps({"training_iteration": 3, STEP_KEY: 999999}) + "\n")
    run_marl.main(["--resume", str(run_dir), "--stop-iters", "3", "--no-progress"])
    with open(run_dir / "progress.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r[STEP_KEY]) for r in table] == [r[STEP_KEY] for r in read_rows(run_dir)] == [200, 400, 600]


# ---------------------------------------------------------------- seeds
def test_seeds_make_one_run_per_seed_under_one_group_and_a_summary(tmp_path, capsys):
    group = tmp_path / "group"
    out = run_marl.main(TINY + ["--seeds", "0,1", "--run-dir", str(group)])

    assert out["group_dir"] == group
    assert [r["run_dir"] for r in out["runs"]] == [group / "seed-0", group / "seed-1"]
    finals = []
    for seed in (0, 1):
        config = yaml.safe_load((group / f"seed-{seed}" / "config.yaml").read_text())
        assert config["seed"] == seed and config["algorithm_config"]["seed"] == seed
        rows = read_rows(group / f"seed-{seed}")
        assert [r["training_iteration"] for r in rows] == [1, 2]
        finals.append(rows[-1][RETURN_KEY])
    assert finals[0] != finals[1]  # the seeds were applied

    summary = json.loads((group / "summary.json").read_text())
    assert [r["final_return"] for r in summary["runs"]] == finals
    assert summary["final_return"]["mean"] == pytest.approx(statistics.fmean(finals))
    assert summary["final_return"]["std"] == pytest.approx(statistics.stdev(finals))
    printed = capsys.readouterr().out
    assert f"{statistics.fmean(finals):.2f} ± {statistics.stdev(finals):.2f} (n=2)" in printed
    assert "seed 1 | iter 2 | env steps 400" in printed


def test_parallel_seeds_run_in_processes_and_match_a_single_seed_run(tmp_path):
    group = tmp_path / "group"
    out = run_marl.main(TINY + ["--seeds", "0,1", "--parallel", "2", "--run-dir", str(group)])
    alone = run_marl.main(TINY + ["--seed", "1", "--run-dir", str(tmp_path / "alone")])
    assert [r["seed"] for r in out["runs"]] == [0, 1]
    assert [yaml.safe_load((group / f"seed-{s}" / "config.yaml").read_text())["seed"] for s in (0, 1)] == [0, 1]
    assert out["runs"][1]["final_return"] == alone["final_return"]  # same seed, same run, any process


# ---------------------------------------------------------------- stopping and evaluation
def test_default_run_stops_on_env_steps_not_on_time():
    spec = cli.resolve([])
    assert spec.stop_conditions() == {"stop_timesteps": 200_000}
    assert spec.stop_time is None


def test_evaluation_shows_in_the_line_and_the_summary_and_its_episodes_differ(tmp_path, capsys):
    run_dir = tmp_path / "run"
    out = run_marl.main(BASE + ["--stop-iters", "2", "--eval-interval", "1", "--eval-episodes", "3",
                                "--num-envs-per-env-runner", "1", "--no-progress", "--run-dir", str(run_dir)])
    rows = read_rows(run_dir)
    printed = capsys.readouterr().out

    assert [r["evaluation/env_runners/num_episodes"] for r in rows] == [3, 3]
    for r in rows:  # greedy, yet three different games: each episode starts from its own env seed
        assert r["evaluation/env_runners/episode_return_min"] < r["evaluation/env_runners/episode_return_max"]
    final = rows[-1][EVAL_RETURN_KEY]
    assert out["final_eval_return"] == final
    assert f"| eval {final:.2f} |" in printed
    assert re.search(rf"evaluation return, final \(iteration 2, 3 episodes\)\s*│ {final:.2f}", printed)
    assert "every 1 iterations, 3 episodes, greedy" in printed


def test_eval_options_set_the_algorithms_evaluation():
    from marl.experiment.algo_config import build_algorithm_config

    config, _ = build_algorithm_config(cli.resolve(TINY + ["--eval-interval", "4", "--eval-episodes", "2",
                                                           "--eval-explore"]))
    assert (config.evaluation_interval, config.evaluation_duration, config.evaluation_explore) == (4, 2, True)
    config, _ = build_algorithm_config(cli.resolve(TINY))
    assert not config.evaluation_interval
