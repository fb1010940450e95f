"""scripts/run_marl.py end to end, with budgets of a few hundred env steps.

Each training test calls ``main(argv)`` in-process (fast); one test runs
``--help`` in a subprocess, as a user would.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import run_marl
from marl.experiment import cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_marl.py"

#: simple_spread with 10-step episodes; 2 iterations of 200 env steps each.
TINY = [
    "--env-config", '{"N": 3, "max_cycles": 10, "continuous_actions": false}',
    "--train_batch_size_per_learner=200", "--minibatch_size=100", "--num_epochs=1",
    "--num-envs-per-env-runner", "2", "--stop-iters", "2", "--no-progress",
]
AGENTS = ["agent_0", "agent_1", "agent_2"]


pytestmark = pytest.mark.usefixtures("isolated_run_dir")


def read_rows(run_dir: Path) -> list:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def two_teams(agent_id, episode=None, **kwargs):
    """A custom policy_mapping_fn for --policy-mapping-fn (imported by path)."""
    return "team_a" if agent_id == "agent_0" else "team_b"


def typo_mapping(agent_id, episode=None, **kwargs):
    return "agnet_0" if agent_id == "agent_0" else str(agent_id)


def shared_typo_mapping(agent_id, episode=None, **kwargs):
    return "default_polcy"


def to_encoder_mapping(agent_id, episode=None, **kwargs):
    return "shared_encoder"


# ---------------------------------------------------------------- training runs
@pytest.mark.parametrize(
    "setup, modules",
    [
        ("shared", {"default_policy"}),
        ("per-agent", set(AGENTS)),
        ("shared-encoder", set(AGENTS) | {"shared_encoder"}),
    ],
)
def test_each_policy_setup_trains_and_fills_its_run_dir(tmp_path, setup, modules):
    from marl import Algorithm

    run_dir = tmp_path / f"run-{setup}"
    out = run_marl.main(TINY + ["--policy-setup", setup, "--run-dir", str(run_dir)])

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["policy_setup"] == setup
    assert config["env"] == "mpe2.simple_spread_v3"
    assert config["env_config"]["max_cycles"] == 10
    assert config["hyperparameters"]["train_batch_size_per_learner"] == 200
    assert config["algorithm_config"]["num_epochs"] == 1

    rows = read_rows(run_dir)
    assert [r["training_iteration"] for r in rows] == [1, 2]
    steps = [r["num_env_steps_sampled_lifetime"] for r in rows]
    assert steps[0] > 0 and steps[1] > steps[0]
    assert all("time_this_iter_s" in r for r in rows)
    assert isinstance(rows[-1]["env_runners/episode_return_mean"], float)

    assert (run_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    algo = Algorithm.from_checkpoint(str(run_dir / "checkpoint"))
    try:
        assert set(algo.get_module(None).keys()) == modules
        assert algo.iteration == 2
    finally:
        algo.stop()
    assert out["final"]["training_iteration"] == 2


def test_default_run_dir_is_named_after_env_algo_and_setup(tmp_path):
    out = run_marl.main(TINY[:-3] + ["--stop-iters", "1", "--no-progress"])
    run_dir = Path(out["run_dir"])
    assert run_dir.parent == Path("runs")
    assert run_dir.name.startswith("mpe2.simple_spread_v3-ppo-shared-encoder-")
    assert (tmp_path / run_dir / "metrics.jsonl").is_file()


def test_resume_continues_the_step_counter_and_appends_metrics(tmp_path):
    run_dir = tmp_path / "run"
    run_marl.main(TINY + ["--run-dir", str(run_dir)])
    before = read_rows(run_dir)
    # A row written after the checkpoint (a crash between save and exit) must be dropped.
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"training_iteration": 3, "num_env_steps_sampled_lifetime": 999999}) + "\n")

    out = run_marl.main(["--resume", str(run_dir), "--stop-iters", "4", "--no-progress"])

    rows = read_rows(run_dir)
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == before
    assert rows[2]["num_env_steps_sampled_lifetime"] > before[-1]["num_env_steps_sampled_lifetime"]
    assert rows[2]["num_env_steps_sampled_lifetime"] != 999999
    assert out["iterations_this_session"] == 2
    # The resumed run kept its settings (from config.yaml) and took the new stop condition.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["hyperparameters"]["train_batch_size_per_learner"] == 200
    assert config["stop_iters"] == 4
    assert config["resumed_from"].endswith("checkpoint")


def test_checkpoint_every_saves_during_training(tmp_path, monkeypatch):
    from marl.algorithms.algorithm import Algorithm

    saved_at = []
    original = Algorithm.save_to_path

    def spy(self, path=None):
        saved_at.append(self.iteration)
        return original(self, path)

    monkeypatch.setattr(Algorithm, "save_to_path", spy)
    run_marl.main(TINY[:-3] + ["--stop-iters", "3", "--checkpoint-every", "2", "--no-progress",
                               "--run-dir", str(tmp_path / "run")])
    assert saved_at == [2, 3]  # periodic at 2, final at 3


def test_eval_prints_greedy_returns_and_writes_a_gif(tmp_path, capsys):
    from PIL import Image

    run_dir = tmp_path / "run"
    run_marl.main(TINY + ["--run-dir", str(run_dir)])
    capsys.readouterr()
    gif = tmp_path / "episodes.gif"
    out = run_marl.main(["--eval", str(run_dir / "checkpoint"), "--eval-episodes", "2", "--render",
                         "--gif", str(gif)])
    printed = capsys.readouterr().out
    assert len(out["returns"]) == 2
    assert "episode returns:" in printed and f"{out['returns'][0]:.2f}" in printed
    with Image.open(gif) as image:
        assert image.format == "GIF"
        assert image.n_frames >= 2 * 10  # two 10-step episodes


def test_custom_policy_mapping_fn_decides_the_module_ids():
    from marl.experiment.algo_config import build_algorithm_config

    spec = cli.resolve(TINY + ["--policy-setup", "per-agent", "--policy-mapping-fn", "tests.test_run_marl:two_teams",
                               "--policies", "team_a,team_b"])
    config, setup = build_algorithm_config(spec)
    assert set(config.policies) == {"team_a", "team_b"}
    assert setup.agent_to_module == {"agent_0": "team_a", "agent_1": "team_b", "agent_2": "team_b"}


# ---------------------------------------------------------------- argument resolution
def test_config_file_is_overridden_by_the_command_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "policy-setup": "per-agent",
        "stop_iters": 7,
        "hyperparameters": {"lr": 0.002, "num_epochs": 3},
        "entropy_coeff": 0.05,  # a hyperparameter at the top level
    }))
    spec = cli.resolve(["--config", str(path), "--lr=0.0005", "--algo", "ppo"])
    assert spec.policy_setup == "per-agent"
    assert spec.stop_iters == 7 and spec.stop_timesteps is None  # the file's stop replaces the preset's
    assert spec.hyperparameters["lr"] == 0.0005
    assert spec.hyperparameters["num_epochs"] == 3
    assert spec.hyperparameters["entropy_coeff"] == 0.05


def test_wandb_agent_style_arguments_are_parsed():
    spec = cli.resolve([
        "--lr=1e-05", "--use_kl_loss=true", "--stop_iters=3", "--entropy-coeff", "0.02",
        "--env_config={'N': 2, 'max_cycles': 10}", "--model_config.fcnet_hiddens=[32, 32]", "--lambda=0.9",
    ])
    assert spec.hyperparameters["lr"] == pytest.approx(1e-05)
    assert spec.hyperparameters["use_kl_loss"] is True
    assert spec.hyperparameters["entropy_coeff"] == 0.02
    assert spec.hyperparameters["lambda_"] == 0.9
    assert spec.stop_iters == 3
    assert spec.env_config == {"N": 2, "max_cycles": 10}
    assert spec.model_config["fcnet_hiddens"] == [32, 32]
    assert spec.model_config["fcnet_activation"] == "tanh"  # the rest of the preset stays


def test_default_experiment_is_ippo_with_a_shared_encoder_on_simple_spread():
    spec = cli.resolve([])
    assert (spec.env, spec.algo, spec.policy_setup) == ("mpe2.simple_spread_v3", "ppo", "shared-encoder")
    assert spec.env_config == {"N": 3, "max_cycles": 25, "continuous_actions": False}
    assert spec.stop_conditions()  # it stops on its own


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--policy-setup", "bogus"],
         ["argument --policy-setup: invalid choice: 'bogus'", "shared", "per-agent", "shared-encoder"]),
        (["--algo", "a2c"], ["argument --algo: invalid choice: 'a2c'", "ppo", "mappo", "qmix", "sac"]),
        (["--env-config", "{bad json"], ["argument --env-config", "JSON object"]),
        (["--model-config", '{"fcnet_hidden": [8]}'], ["argument --model-config", "fcnet_hidden", "fcnet_hiddens"]),
        (["--lrr=0.1"], ["argument --lrr", "did you mean 'lr'", "valid keys", "entropy_coeff"]),
        (["--clip_param=0.1", "--algo", "vpg"], ["argument --clip_param", "for --algo vpg"]),
        (["--stop-iters", "0"], ["argument --stop-iters", ">= 1"]),
        (["--lr=-1"], ["argument --lr", "positive"]),
        (["--env", "NoSuchEnv-v9"], ["argument --env", "NoSuchEnv-v9"]),
        (["--resume", "does-not-exist"], ["argument --resume", "does-not-exist"]),
        (["--policy-mapping-fn", "no_such_module_xyz:fn"], ["argument --policy-mapping-fn", "no_such_module_xyz"]),
        (["--rl_module_spec=x"], ["argument --rl_module_spec", "--policy-setup"]),
        # a misspelt option is told apart from a hyperparameter
        (["--stop-timestep", "5"], ["unrecognized arguments: --stop-timestep", "did you mean --stop-timesteps?"]),
        (["--seed", "0,1"], ["argument --seed", "use --seeds 0,1"]),
        (["--parallel", "2"], ["argument --parallel", "--seeds"]),
        (["--seeds", "0,1", "--seed", "3"], ["argument --seeds: not allowed with --seed"]),
        # a mapping to a module id the setup does not define is refused, naming the valid ones
        (["--policy-setup", "per-agent", "--policy-mapping-fn", "tests.test_run_marl:typo_mapping"],
         ["argument --policy-mapping-fn", "'agnet_0'", "did you mean 'agent_0'",
          "valid module ids: agent_0, agent_1, agent_2"]),
        (["--policy-setup", "shared", "--policy-mapping-fn", "tests.test_run_marl:shared_typo_mapping"],
         ["argument --policy-mapping-fn", "'default_polcy'", "valid module ids: default_policy"]),
        (["--policy-mapping-fn", "tests.test_run_marl:to_encoder_mapping"],
         ["argument --policy-mapping-fn", "'shared_encoder'", "not a policy",
          "valid module ids: agent_0, agent_1, agent_2"]),
        (["--policies", "shared_encoder,b"], ["argument --policies", "'shared_encoder'", "not a policy"]),
    ],
)
def test_bad_arguments_name_the_argument_and_write_nothing(tmp_path, capsys, argv, fragments):
    with pytest.raises(SystemExit) as exit_info:
        run_marl.main(argv + ["--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "runs").exists()


def test_help_documents_every_option():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for option in [
        "--env", "--env-config", "--algo", "--policy-setup", "--policy-mapping-fn", "--model-config", "--config",
        "--stop-iters", "--stop-timesteps", "--stop-return", "--stop-time", "--num-env-runners",
        "--num-envs-per-env-runner", "--seed", "--run-dir", "--checkpoint-every", "--resume", "--eval",
        "--eval-episodes", "--render", "--wandb", "--wandb-project", "--wandb-entity", "--wandb-group",
        "--wandb-tags", "--wandb-mode", "--seeds", "--parallel", "--policies", "--tensorboard", "--quiet",
        "--eval-interval", "--eval-explore",
    ]:
        assert option in proc.stdout, option
    assert "--stop-timesteps 200000" in proc.stdout  # the default run's budget is stated
    assert "entropy_coeff" in proc.stdout and "train_batch_size_per_learner" in proc.stdout


def test_summary_compares_the_first_and_last_five_iterations():
    from rich.console import Console

    from marl.experiment import progress

    rows = [{"training_iteration": i + 1, "num_env_steps_sampled_lifetime": 100 * (i + 1),
             "env_runners/episode_return_mean": float(i), "env_runners/num_env_steps_sampled": 100}
            for i in range(12)]
    table = progress.summary_table(title="t", rows=rows, session_rows=rows, session_seconds=2.0, facts={})
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert "mean of first 5 iterations │ 2.00" in text  # (0+1+2+3+4)/5
    assert "mean of last 5 iterations  │ 9.00" in text  # (7+...+11)/5
    assert "+7.00" in text and "600 env steps/s" in text


def test_env_runner_worker_processes_use_the_setups_mapping(tmp_path):
    run_dir = tmp_path / "run"
    run_marl.main(TINY[:-3] + ["--stop-iters", "1", "--no-progress", "--num-env-runners", "1",
                               "--policy-setup", "per-agent", "--run-dir", str(run_dir)])
    (row,) = read_rows(run_dir)
    assert row["env_runners/num_healthy_env_runners"] == 1
    assert {f"learners/{a}/num_module_steps_trained" for a in AGENTS} <= set(row)


def test_stop_conditions_any_one_stops_the_run():
    from marl.experiment.stopping import StopConditions

    row = {"training_iteration": 3, "num_env_steps_sampled_lifetime": 600, "env_runners/episode_return_mean": -10.0}
    assert StopConditions(iters=3).reason(row, 0.0) == "reached --stop-iters 3"
    assert StopConditions(iters=4, timesteps=600).reason(row, 0.0) == "reached --stop-timesteps 600"
    assert "--stop-return" in StopConditions(iters=9, episode_return=-11.0).reason(row, 0.0)
    assert StopConditions(iters=9, episode_return=-9.0).reason(row, 0.0) is None
    assert StopConditions(seconds=5.0).reason(row, 5.1) == "reached --stop-time 5s"
    assert StopConditions(seconds=5.0).reason({"training_iteration": 1}, 1.0) is None


def test_a_runs_config_yaml_reproduces_it_in_a_new_directory(tmp_path):
    run_dir = tmp_path / "first"
    run_marl.main(TINY + ["--policy-setup", "per-agent", "--seed", "7", "--run-dir", str(run_dir)])
    spec = cli.resolve(["--config", str(run_dir / "config.yaml")])
    assert spec.run_dir is None  # a fresh directory, not the original one
    assert (spec.policy_setup, spec.seed, spec.stop_iters) == ("per-agent", 7, 2)
    assert spec.hyperparameters["num_epochs"] == 1 and spec.env_config["max_cycles"] == 10


# ---------------------------------------------------------------- untrusted checkpoints
def test_resume_and_eval_never_run_code_planted_in_a_checkpoint(tmp_path):
    """A pickle and JSON payloads (checksums recomputed, as an attacker would) in a run's
    checkpoint: --resume ignores them (it rebuilds from config.yaml), --eval refuses them."""
    import pickle

    from marl.core.checkpoint_io import CheckpointError
    from tests.test_checkpoint_safety import _Plant, reseal

    run_dir = tmp_path / "run"
    run_marl.main(TINY + ["--stop-iters", "1", "--run-dir", str(run_dir)])
    ckpt = run_dir / "checkpoint"
    marker = tmp_path / "pwned"
    for rel in ("algorithm_config.pkl", "env_runner/state.pkl", "env_runner/sampling_snapshot.pkl"):
        (ckpt / rel).write_bytes(pickle.dumps(_Plant(marker)))
    config = json.loads((ckpt / "algorithm_config.json").read_text())
    config["values"]["gamma"] = {"__dataclass__": "os:system", "fields": {"command": f"touch {marker}"}}
    (ckpt / "algorithm_config.json").write_text(json.dumps(config))
    reseal(ckpt)

    with pytest.raises(CheckpointError, match="os:system"):
        run_marl.main(["--eval", str(ckpt), "--eval-episodes", "1"])
    out = run_marl.main(["--resume", str(run_dir), "--stop-iters", "2", "--no-progress"])
    assert out["final"]["training_iteration"] == 2
    assert not marker.exists()
    assert not list((run_dir / "checkpoint").rglob("*.pkl")), "the new checkpoint holds no pickle"
