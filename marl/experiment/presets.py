"""The default experiment and the defaults filled in for every run.

`run_marl.py` with no arguments trains IPPO with a shared encoder on MPE's
``simple_spread`` (three agents covering three landmarks). The values below
were picked so that this run shows clear learning within its budget of
`DEFAULT_STOP_TIMESTEPS` env steps (a couple of minutes on two CPU cores);
see the README for measured numbers.

Precedence, lowest first: `GENERIC_DEFAULTS` < the env's `EnvPreset` < a
``--config`` file < the command line. A preset applies whenever ``--env``
names its env (so sweeps on that env inherit tuned values too); each of its
groups is replaced, not merged, by a user value (``--env-config '{"N": 2}'``
gives ``{"N": 2}``), except hyperparameters, which are set one by one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

#: The env of the default experiment.
DEFAULT_ENV = "mpe2.simple_spread_v3"
#: The default experiment's budget (``--stop-timesteps``).
DEFAULT_STOP_TIMESTEPS = 200_000


@dataclass(frozen=True)
class EnvPreset:
    """Defaults for one env string (as given to ``--env``)."""

    env_config: Dict[str, Any] = field(default_factory=dict)
    model_config: Dict[str, Any] = field(default_factory=dict)
    #: Per algorithm (``"ppo"``, ``"mappo"``, ``"vpg"``): hyperparameters (AlgorithmConfig keys).
    hyperparameters: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: Per algorithm, env_config values over ``env_config`` (SAC needs continuous actions).
    algo_env_config: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: Stop conditions used when the user gives none (``stop_iters``, ...).
    stop: Dict[str, Any] = field(default_factory=dict)
    num_envs_per_env_runner: Optional[int] = None


#: PPO on simple_spread; MAPPO uses the same values, so the two compare with
#: everything but the critic equal.
SIMPLE_SPREAD_PPO: Dict[str, Any] = {
    "lr": 3e-3,
    "gamma": 0.95,
    "lambda_": 0.95,
    "train_batch_size_per_learner": 2000,
    "minibatch_size": 500,
    "num_epochs": 15,
    "entropy_coeff": 0.01,
    "clip_param": 0.2,
    "vf_loss_coeff": 0.5,
    "grad_clip": 0.5,
    "use_kl_loss": False,
    # RLlib's vf_clip_param clamps the squared value error; returns
    # here reach -60, so a clamp of 10 would stop most value learning.
    "vf_clip_param": 10_000.0,
}

#: Value-based algorithms on simple_spread (measured: README "Value-based MARL"):
#: 64 replayed transitions per update, 8 replayed per sampled step. With 256 x 4,
#: VDN's per-agent Qs grew too slowly towards the team return's scale and its
#: greedy policy collapsed to one action (-73 at 150k vs -55 here).
SIMPLE_SPREAD_VALUE_BASED: Dict[str, Any] = {
    "train_batch_size_per_learner": 64,
    "training_intensity": 8,
    "lr": 5e-4,
}

#: ISAC on continuous simple_spread (measured: README "Continuous control").
SIMPLE_SPREAD_SAC: Dict[str, Any] = {
    "train_batch_size_per_learner": 256,
    "training_intensity": 16,
    "actor_lr": 3e-4,
    "critic_lr": 1e-3,
    "alpha_lr": 1e-3,
    "num_steps_sampled_before_learning_starts": 2000,
}

PRESETS: Dict[str, EnvPreset] = {
    DEFAULT_ENV: EnvPreset(
        env_config={"N": 3, "max_cycles": 25, "continuous_actions": False},
        algo_env_config={"sac": {"continuous_actions": True}, "masac": {"continuous_actions": True}},
        # fusionnet_hiddens: SAC's critic fusion sized like its streams (RLlib's [256, 256] default
        # on small streams learned too slowly in the ISAC learning test); other algorithms ignore it.
        model_config={"fcnet_hiddens": [128, 128], "fcnet_activation": "tanh", "head_fcnet_hiddens": [],
                      "fusionnet_hiddens": [128, 128]},
        hyperparameters={
            "ppo": dict(SIMPLE_SPREAD_PPO),
            "mappo": dict(SIMPLE_SPREAD_PPO),
            **{algo: dict(SIMPLE_SPREAD_VALUE_BASED) for algo in ("dqn", "iql", "vdn", "qmix")},
            "sac": dict(SIMPLE_SPREAD_SAC),
            "masac": dict(SIMPLE_SPREAD_SAC),
            "vpg": {
                "lr": 1e-3,
                "gamma": 0.95,
                "train_batch_size_per_learner": 2000,
                "entropy_coeff": 0.01,
            },
        },
        # A budget of env steps, not of seconds, so the default run gives the same result on
        # every machine; 200k steps take about 1.5 minutes on 2 quiet CPU cores, 2.5 busy.
        stop={"stop_timesteps": DEFAULT_STOP_TIMESTEPS},
        num_envs_per_env_runner=8,
    ),
}

#: Values of every option when neither a preset, a file nor the command line sets them.
GENERIC_DEFAULTS: Dict[str, Any] = {
    "env": DEFAULT_ENV,
    "env_config": {},
    "algo": "ppo",
    "policy_setup": "shared-encoder",
    "policy_mapping_fn": None,
    "policies": None,
    "model_config": {},
    "seed": 0,
    "num_env_runners": 0,
    "num_envs_per_env_runner": 1,
    "torch_threads": 1,
    "stop_iters": None,
    "stop_timesteps": None,
    "stop_return": None,
    "stop_time": None,
    "run_dir": None,
    "checkpoint_every": 0,
    "resume": None,
    "eval": None,
    "eval_episodes": 5,
    "eval_interval": 0,
    "eval_explore": False,
    "render": False,
    "gif": None,
    "progress": True,
    "quiet": False,
    "tensorboard": False,
    "seeds": None,
    "parallel": 1,
    "wandb": False,
    "wandb_project": "marl",
    "wandb_entity": None,
    "wandb_group": None,
    "wandb_tags": [],
    "wandb_mode": None,
}

#: The stop condition of a run on an env without a preset, when none is given.
GENERIC_STOP: Dict[str, Any] = {"stop_iters": 20}


def preset_for(env: Any) -> Optional[EnvPreset]:
    """The preset of ``env`` (a string as passed to ``--env``), if there is one."""
    return PRESETS.get(env) if isinstance(env, str) else None
