"""scripts/benchmark.py: a tiny matrix writes the table, the CSVs and the curves (issue 17)."""
import csv
import json
import math

import pytest

from scripts import benchmark

TINY = ["--set", "train_batch_size_per_learner=200", "--set", "minibatch_size=100", "--set", "num_epochs=1",
        "--stop-iters", "2", "--eval-episodes", "2", "--torch-threads", "1"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_matrix(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = benchmark.main(["--algos", "ppo,mappo", "--envs", "envs.MultiAgentCartPole", "--seeds", "0,1",
                           "--env-config", '{"envs.MultiAgentCartPole": {"num_agents": 2}}', "--out", str(out), *TINY])
    assert code == 0
    return out


def test_summary_has_one_row_per_algo_and_env_with_mean_and_std_of_the_seed_rows(tiny_matrix):
    runs, summary = read_csv(tiny_matrix / "runs.csv"), read_csv(tiny_matrix / "summary.csv")
    assert [(r["algo"], r["seed"]) for r in runs] == [("ppo", "0"), ("ppo", "1"), ("mappo", "0"), ("mappo", "1")]
    assert [(r["algo"], r["env"], r["num_seeds"]) for r in summary] == [
        ("ppo", "envs.MultiAgentCartPole", "2"), ("mappo", "envs.MultiAgentCartPole", "2")]
    for row in summary:
        seeds = [r for r in runs if r["algo"] == row["algo"]]
        for metric in ("team_return", "per_agent_return", "episode_len", "eval_team_return", "env_steps",
                       "wall_time_s"):
            values = [float(r[metric]) for r in seeds]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            assert float(row[f"{metric}_mean"]) == pytest.approx(mean), metric
            assert float(row[f"{metric}_std"]) == pytest.approx(std), metric
    for run in runs:  # per-agent: the mean over the agents of each agent's own return
        agents = json.loads(run["agent_returns"])
        assert sorted(agents) == ["0", "1"]
        assert float(run["per_agent_return"]) == pytest.approx(sum(agents.values()) / 2)
        assert int(run["env_steps"]) == 400 and run["error"] == ""


def test_markdown_states_the_reward_convention_and_the_png_exists(tiny_matrix):
    text = (tiny_matrix / "results.md").read_text()
    assert "team return, training (sum over agents)" in text
    assert "per-agent return, training (mean over agents)" in text
    assert "Reward convention" in text and "mean ± std over seeds" in text and "ddof=0" in text
    assert "envs.MultiAgentCartPole (marl " in text  # env name with its package and version
    assert (tiny_matrix / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = read_csv(tiny_matrix / "curves.csv")
    assert len(curves) == 4 * 2 and {c["env_steps"] for c in curves} == {"200", "400"}


def test_bad_values_are_named_before_any_run(tmp_path, capsys):
    assert benchmark.main(["--algos", "ppo,bogus", "--out", str(tmp_path / "a")]) == 2
    assert "'bogus'" in capsys.readouterr().err and "mappo" in benchmark.ALGOS
    assert benchmark.main(["--algos", "ppo", "--envs", "CartPole-v1", "--set", "lrr=0.1",
                           "--out", str(tmp_path / "b")]) == 2
    assert "lrr" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_package_slash_module_env_names_resolve_and_carry_their_version():
    assert benchmark.resolve_env_name("mpe2/simple_spread_v3") == "mpe2.simple_spread_v3"
    assert benchmark.env_version("mpe2.simple_spread_v3").startswith("mpe2 ")
    assert benchmark.env_version("CartPole-v1").startswith("gymnasium ")
