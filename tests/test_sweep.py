"""scripts/sweep.py: wandb sweep YAML files run locally through Optuna."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from scripts import sweep
from marl.experiment import local_sweep

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "scripts" / "sweeps"


pytestmark = pytest.mark.usefixtures("isolated_run_dir")


def write_sweep(path: Path, **overrides) -> Path:
    config = {
        "name": "tiny",
        "program": "scripts/run_marl.py",
        "method": "grid",
        "metric": {"name": "env_runners/episode_return_mean", "goal": "maximize"},
        "parameters": {
            "lr": {"values": [0.001, 0.003]},
            "env_config": {"value": {"N": 3, "max_cycles": 10, "continuous_actions": False}},
            "train_batch_size_per_learner": {"value": 200},
            "minibatch_size": {"value": 100},
            "num_epochs": {"value": 1},
            "num_envs_per_env_runner": {"value": 2},
            "stop_iters": {"value": 1},
        },
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def test_local_grid_sweep_runs_each_trial_in_its_own_run_dir(tmp_path, capsys):
    file = write_sweep(tmp_path / "tiny.yaml")
    out = sweep.main([str(file), "--offline", "--sweep-dir", str(tmp_path / "sw"), "--no-progress", "--wandb"])

    assert out["mode"] == "local"
    trial_dirs = sorted((tmp_path / "sw").glob("trial-*"))
    assert [d.name for d in trial_dirs] == ["trial-000", "trial-001"]
    lrs = set()
    for d in trial_dirs:
        config = yaml.safe_load((d / "config.yaml").read_text())
        lrs.add(config["hyperparameters"]["lr"])
        assert config["env_config"]["max_cycles"] == 10 and config["stop_iters"] == 1
        assert (d / "metrics.jsonl").read_text().strip()
        assert list((d / "wandb").glob("offline-run-*")), "each trial is logged to wandb offline"
    assert lrs == {0.001, 0.003}

    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    values = [t["value"] for t in summary["trials"]]
    assert len(values) == 2 and all(isinstance(v, float) for v in values)
    assert values == sorted(values, reverse=True)  # best first for goal: maximize
    assert (tmp_path / "sw" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "sorted by env_runners/episode_return_mean" in printed and "trial-001" in printed


def test_repository_sweep_file_is_a_grid_over_lr_and_entropy():
    spec = local_sweep.load_sweep(SWEEPS / "ppo_simple_spread_lr_entropy.yaml")
    assert spec.method == "grid" and spec.program == "scripts/run_marl.py"
    assert (spec.metric, spec.goal) == ("env_runners/episode_return_mean", "maximize")
    assert {p.name for p in spec.search} == {"lr", "entropy_coeff"}
    assert spec.fixed["env"] == "mpe2.simple_spread_v3"
    assert spec.grid_size() == 9
    assert isinstance(local_sweep.make_sampler(spec, 0), optuna.samplers.GridSampler)


def test_every_repository_sweep_file_loads():
    for file in SWEEPS.glob("*.yaml"):
        spec = local_sweep.load_sweep(file)
        assert spec.search, file


def _fake_trials(spec, tmp_path, count):
    """Run the Optuna loop with a stand-in for run_marl that logs metric = -(lr - 0.01)^2."""
    seen = []

    def run_trial(argv, run_dir):
        params = dict(a[2:].split("=", 1) for a in argv)
        seen.append(params)
        run_dir.mkdir(parents=True)
        lr = float(params["lr"])
        row = {"num_env_steps_sampled_lifetime": 10, "env_runners/episode_return_mean": -((lr - 0.01) ** 2)}
        (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        return {"session_seconds": 0.0}

    records = local_sweep.run_local_sweep(spec, tmp_path / "sw", run_trial, count, seed=0)
    return records, seen


@pytest.mark.parametrize("method, sampler", [("random", optuna.samplers.RandomSampler),
                                             ("bayes", optuna.samplers.TPESampler)])
def test_random_and_bayes_sample_the_yaml_distributions(tmp_path, method, sampler):
    file = write_sweep(tmp_path / "s.yaml", method=method, parameters={
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "num_epochs": {"distribution": "int_uniform", "min": 1, "max": 4},
        "model_config": {"parameters": {"fcnet_hiddens": {"values": [[8], [16, 16]]}}},
        "env": {"value": "CartPole-v1"},
    })
    spec = local_sweep.load_sweep(file)
    assert isinstance(local_sweep.make_sampler(spec, 0), sampler)
    records, seen = _fake_trials(spec, tmp_path, count=5)
    assert len(records) == 5 and all(r.state == "COMPLETE" for r in records)
    for params in seen:
        assert params["env"] == "CartPole-v1"
        assert 1e-4 <= float(params["lr"]) <= 1e-1
        assert 1 <= int(params["num_epochs"]) <= 4
        assert json.loads(params["model_config.fcnet_hiddens"]) in ([8], [16, 16])
    ranked = local_sweep.sort_records(records, "maximize")
    assert ranked[0].value == max(r.value for r in records)


def test_grid_sweep_runs_the_whole_grid_by_default(tmp_path):
    file = write_sweep(tmp_path / "s.yaml", parameters={
        "lr": {"values": [0.001, 0.01, 0.1]}, "entropy_coeff": {"values": [0.0, 0.1]},
    })
    records, seen = _fake_trials(local_sweep.load_sweep(file), tmp_path, count=None)
    assert len(records) == 6
    assert {(p["lr"], p["entropy_coeff"]) for p in seen} == {
        (lr, ent) for lr in ("0.001", "0.01", "0.1") for ent in ("0.0", "0.1")
    }


@pytest.mark.parametrize(
    "parameters, fragment",
    [
        ({"lr": {"distribution": "normal", "mu": 0, "sigma": 1}}, "parameters.lr: distribution 'normal'"),
        ({"lr": {"min": 0.1, "max": 1.0}}, "parameters.lr: grid search needs 'values'"),
        ({"lr": 0.1}, "parameters.lr: expected a mapping"),
    ],
)
def test_bad_sweep_files_name_the_parameter(tmp_path, capsys, parameters, fragment):
    file = write_sweep(tmp_path / "bad.yaml", parameters=parameters)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([str(file), "--offline"])
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_last_logged_value_is_the_trial_value():
    rows = [{"m": 1.0}, {"m": 3.0}, {"m": None}, {"other": 1}]
    assert local_sweep.last_value(rows, "m") == 3.0
    assert local_sweep.last_value([{"m": math.nan}], "m") is None


def test_online_mode_hands_the_file_to_wandbs_controller_and_agent(tmp_path, monkeypatch):
    """Without a server: wandb.sweep / agent / init are stand-ins; the trial calls run_marl.main."""
    import wandb

    calls = {}

    class FakeRun:
        id = "abc123"
        config = {"lr": 0.003, "env_config": {"N": 3, "max_cycles": 10}, "stop_iters": 1}

    def fake_sweep(sweep, project=None, entity=None):
        calls["sweep"] = (sweep, project)
        return "sweep-id"

    def fake_agent(sweep_id, function=None, count=None, project=None, entity=None):
        calls["agent"] = (sweep_id, count)
        function()

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun())
    trial_argv = []
    monkeypatch.setattr(sweep, "_run_marl_main", lambda: trial_argv.append)

    file = write_sweep(tmp_path / "s.yaml")
    out = sweep.main([str(file), "--online", "--count", "1", "--sweep-dir", str(tmp_path / "sw")])

    assert out["mode"] == "wandb" and out["sweep_id"] == "sweep-id"
    sent, project = calls["sweep"]
    assert sent["method"] == "grid" and sent["parameters"]["lr"] == {"values": [0.001, 0.003]}
    assert project == "marl" and calls["agent"] == ("sweep-id", 1)
    (argv,) = trial_argv
    assert "--lr=0.003" in argv and "--stop_iters=1" in argv and "--wandb" in argv
    assert '--env_config={"N": 3, "max_cycles": 10}' in argv
    assert argv[argv.index("--run-dir") + 1] == str(tmp_path / "sw" / "trial-abc123")
