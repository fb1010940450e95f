"""scripts/plot.py: curves of several runs, grouped across seeds (synthetic run directories)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from scripts import plot
from marl.experiment import plotting

STEP = "num_env_steps_sampled_lifetime"
RET = "env_runners/episode_return_mean"


def make_run(root: Path, name: str, lr: float, seed: int, returns, steps=None, agents=()) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"env": "mpe2.simple_spread_v3", "algo": "ppo", "policy_setup": "shared-encoder", "seed": seed,
              "run_dir": str(run_dir), "stop_iters": len(returns), "hyperparameters": {"lr": lr}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    steps = steps or [1000 * (i + 1) for i in range(len(returns))]
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i, (s, r) in enumerate(zip(steps, returns)):
            row = {"training_iteration": i + 1, STEP: s, RET: r, "learners/x": -r}
            row.update({f"env_runners/agent_episode_returns_mean/{a}": r / len(agents) for a in agents})
            f.write(json.dumps(row) + "\n")
    return run_dir


@pytest.fixture
def runs(tmp_path):
    return [
        make_run(tmp_path, "a-seed0", 0.001, 0, [-60, -50, -40]),
        make_run(tmp_path, "a-seed1", 0.001, 1, [-62, -54, -44]),
        make_run(tmp_path, "b-seed0", 0.003, 0, [-58, -45, -30]),
    ]


def test_runs_differing_only_in_seed_form_one_group(tmp_path, runs, capsys):
    out = plot.main([str(r) for r in runs] + ["--out", str(tmp_path / "curves.png")])
    groups = {label: sorted(p.name for p in paths) for label, paths in out["groups"].items()}
    assert groups == {"lr=0.001": ["a-seed0", "a-seed1"], "lr=0.003": ["b-seed0"]}
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lr=0.001: 2 run(s)" in capsys.readouterr().out


def test_group_by_a_config_key(tmp_path, runs):
    out = plot.main([str(r) for r in runs] + ["--group-by", "seed", "--out", str(tmp_path / "by_seed.png")])
    assert {label: len(paths) for label, paths in out["groups"].items()} == {"seed=0": 2, "seed=1": 1}


def test_a_directory_of_runs_expands_to_its_runs(tmp_path, runs):
    out = plot.main([str(tmp_path), "--metric", "learners/x", "--out", str(tmp_path / "x.png")])
    assert sum(len(paths) for paths in out["groups"].values()) == 3


def test_mean_and_band_across_seeds():
    x, mean, low, high = plotting.aggregate([([0, 1, 2], [0, 1, 2]), ([0, 1, 2], [0, 2, 4])], band="minmax")
    np.testing.assert_allclose(mean, [0, 1.5, 3])
    np.testing.assert_allclose(low, [0, 1, 2])
    np.testing.assert_allclose(high, [0, 2, 4])
    _, mean, low, high = plotting.aggregate([([0, 2], [0, 2]), ([0, 2], [2, 4])], band="std")
    np.testing.assert_allclose(high - mean, [1, 1])


def test_curves_with_different_x_are_interpolated_on_their_common_range():
    x, mean, _, _ = plotting.aggregate([([0, 10], [0, 10]), ([0, 5, 20], [0, 5, 20])], band="none", points=11)
    assert x[0] == 0 and x[-1] == 10  # the range both cover
    np.testing.assert_allclose(mean, x)


def test_an_unknown_metric_names_the_argument(tmp_path, runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(runs[0]), "--metric", "no/such/metric", "--out", str(tmp_path / "n.png")])
    assert exit_info.value.code == 2
    assert "argument --metric" in capsys.readouterr().err


def test_a_path_without_runs_names_the_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plot.main([str(tmp_path / "missing")])
    assert "argument RUN_DIR" in capsys.readouterr().err


def test_a_seed_group_is_drawn_as_mean_and_band_with_readable_labels(tmp_path):
    group = tmp_path / "group"
    make_run(group, "seed-0", 0.001, 0, [-60, -50, -40, -30])
    make_run(group, "seed-1", 0.001, 1, [-62, -54, -44, -20])
    out = plot.main([str(group), "--band", "std", "--smooth", "2", "--out", str(tmp_path / "seeds.png")])

    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = out["figure"].axes[0]
    assert ax.get_xlabel() == "env steps"
    assert ax.get_ylabel().startswith("episode return (sum over agents; mean of the iteration's episodes)")
    assert "moving average of 2 iterations" in ax.get_ylabel()
    (line,) = ax.get_lines()
    assert line.get_label().endswith("(n=2)")
    smoothed = (plotting.smooth([-60, -50, -40, -30], 2) + plotting.smooth([-62, -54, -44, -20], 2)) / 2
    np.testing.assert_allclose(line.get_ydata(), smoothed)
    assert len(ax.collections) == 1  # the std band


def test_per_agent_lines_come_from_the_per_agent_return_keys(tmp_path):
    group = tmp_path / "group"
    for seed in (0, 1):
        make_run(group, f"seed-{seed}", 0.001, seed, [-60, -50, -40], agents=("agent_0", "agent_1"))
    out = plot.main([str(group), "--per-agent", "--out", str(tmp_path / "agents.png")])
    labels = [line.get_label() for line in out["figure"].axes[0].get_lines()]
    group_label = "ppo shared-encoder on mpe2.simple_spread_v3"
    assert labels == [f"{group_label} (n=2)", f"{group_label}: agent_0 (n=2)", f"{group_label}: agent_1 (n=2)"]
    np.testing.assert_allclose(out["figure"].axes[0].get_lines()[1].get_ydata(), [-30, -25, -20])


def test_per_agent_without_per_agent_keys_names_the_argument(tmp_path, runs, capsys):
    with pytest.raises(SystemExit):
        plot.main([str(runs[0]), "--per-agent", "--out", str(tmp_path / "n.png")])
    assert "argument --per-agent" in capsys.readouterr().err


def test_unknown_keys_are_spelled_out_on_the_axes():
    assert plotting.axis_label("learners/agent_0/entropy") == "entropy (learners, agent_0)"
    assert plotting.axis_label("training_iteration") == "training iteration"


def test_smoothing_is_a_trailing_moving_average_that_keeps_every_point():
    np.testing.assert_allclose(plotting.smooth([1, 2, 3, 4, 5], 3), [1, 1.5, 2, 3, 4])
