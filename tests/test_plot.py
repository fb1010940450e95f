"""scripts/plot.py: curves of several runs, grouped across seeds (synthetic run directories)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from scripts import plot
from scripts.experiment import plotting

STEP = "num_env_steps_sampled_lifetime"
RET = "env_runners/episode_return_mean"


def make_run(root: Path, name: str, lr: float, seed: int, returns, steps=None) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"env": "mpe2.simple_spread_v3", "algo": "ppo", "policy_setup": "shared-encoder", "seed": seed,
              "run_dir": str(run_dir), "stop_iters": len(returns), "hyperparameters": {"lr": lr}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    steps = steps or [1000 * (i + 1) for i in range(len(returns))]
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i, (s, r) in enumerate(zip(steps, returns)):
            f.write(json.dumps({"training_iteration": i + 1, STEP: s, RET: r, "learners/x": -r}) + "\n")
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
