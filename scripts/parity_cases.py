"""The learning-parity cases: one config each, run unchanged on marl and on RLlib.

Plain data only (no import of marl or ray), because the RLlib side runs in
its own virtual environment and imports this file too. Each case is one of
RLlib's tuned examples (configs unchanged) or this project's own config, with
the threshold and env-step budget RLlib is held to.

Keys: ``algo`` (``"ppo"``, the default, ``"dqn"`` or ``"sac"``), ``env`` (a gymnasium id, ``"multi_agent_cartpole"``,
``"multi_agent_pendulum"`` or ``"mpe2.simple_spread_v3"``), ``env_config``, ``training`` (``.training()``
keys), ``model`` (``DefaultModelConfig`` fields), ``env_runners``, ``reporting``,
``policies`` and ``policy_of`` (a format string over ``agent_id``, for
multi-agent cases), ``threshold`` and ``budget`` (env steps), and
``mean_std_filter``: observations go through a running mean/std filter
(RLlib's ``MeanStdFilter`` connector); ``per_module``: when True every policy's own return must reach the
threshold, otherwise the summed episode return must.
"""
from __future__ import annotations

from typing import Any, Dict

#: Every case runs with sampling in the driver process on both sides; where
#: sampling runs does not change what is learned, and on a small machine it
#: keeps the two libraries' timings comparable.
COMMON_ENV_RUNNERS = {"num_env_runners": 0}

#: RLlib's tuned pendulum_sac.py / multi_agent_pendulum_sac.py share these (their replay buffer
#: types differ); the xavier/orthogonal initialisers are given by name (RLlib takes names or functions).
_PENDULUM_SAC_TRAINING: Dict[str, Any] = {
    "initial_alpha": 1.001, "actor_lr": 2e-4, "critic_lr": 8e-4, "alpha_lr": 9e-4, "lr": None,
    "target_entropy": "auto", "n_step": (2, 5), "tau": 0.005, "train_batch_size_per_learner": 256,
    "target_network_update_freq": 1, "num_steps_sampled_before_learning_starts": 256}
_PENDULUM_SAC_MODEL: Dict[str, Any] = {
    "fcnet_hiddens": [256, 256], "fcnet_activation": "relu", "fcnet_kernel_initializer": "xavier_uniform_",
    "head_fcnet_hiddens": [], "head_fcnet_activation": None, "head_fcnet_kernel_initializer": "orthogonal_",
    "head_fcnet_kernel_initializer_kwargs": {"gain": 0.01}}

CASES: Dict[str, Dict[str, Any]] = {
    # The plain config: each side's defaults for everything else.
    "cartpole-plain": {
        "env": "CartPole-v1",
        "training": {"train_batch_size_per_learner": 4000, "minibatch_size": 128, "num_epochs": 10, "lr": 3e-4},
        "model": {"fcnet_hiddens": [64, 64]},
        "threshold": 450.0,
        "budget": 200_000,
    },
    # RLlib's tuned cartpole_ppo.py (rllib/tuned_examples/ppo/, now rllib/examples/algorithms/ppo/)
    "cartpole-tuned": {
        "env": "CartPole-v1",
        "training": {"lr": 3e-4, "num_epochs": 6, "vf_loss_coeff": 0.01},
        "model": {"fcnet_hiddens": [32], "fcnet_activation": "linear", "vf_share_layers": True},
        "threshold": 450.0,
        "budget": 150_000,
    },
    # RLlib's tuned multi_agent_cartpole_ppo.py (two agents, p0/p1; >= 400 each)
    "ma-cartpole": {
        "env": "multi_agent_cartpole",
        "env_config": {"num_agents": 2},
        "policies": ["p0", "p1"],
        "policy_of": "p{agent_id}",
        "env_runners": {"num_envs_per_env_runner": 2},
        "training": {"lr": 3e-4, "num_epochs": 6, "vf_loss_coeff": 0.01},
        "model": {"fcnet_hiddens": [32], "fcnet_activation": "linear", "vf_share_layers": True},
        "threshold": 400.0,
        "per_module": True,
        "budget": 300_000,
    },
    # RLlib's tuned pendulum_ppo.py (MeanStdFilter observations; num_epochs: PPO's 30)
    "pendulum": {
        "env": "Pendulum-v1",
        "env_runners": {"num_envs_per_env_runner": 20},
        "mean_std_filter": True,
        "training": {"train_batch_size_per_learner": 1024, "minibatch_size": 128, "lr": 2e-4,
                     "gamma": 0.95, "lambda_": 0.5},
        "model": {"fcnet_activation": "relu"},
        "threshold": -300.0,
        "budget": 400_000,
    },
    # This project's IPPO simple_spread config (marl/experiment/presets.py),
    # with one shared policy, which both libraries express without custom code.
    "simple-spread": {
        "env": "mpe2.simple_spread_v3",
        "env_config": {"N": 3, "max_cycles": 25, "continuous_actions": False},
        "policies": ["shared"],
        "policy_of": "shared",
        "env_runners": {"num_envs_per_env_runner": 8},
        "training": {"lr": 3e-3, "gamma": 0.95, "lambda_": 0.95, "train_batch_size_per_learner": 2000,
                     "minibatch_size": 500, "num_epochs": 15, "entropy_coeff": 0.01, "clip_param": 0.2,
                     "vf_loss_coeff": 0.5, "grad_clip": 0.5, "use_kl_loss": False,
                     "vf_clip_param": 10_000.0},
        "model": {"fcnet_hiddens": [128, 128], "fcnet_activation": "tanh"},
        # A random policy scores about -78.5 (summed over the three agents).
        "threshold": -65.0,
        "budget": 300_000,
    },
    # RLlib's tuned cartpole_dqn.py (rllib/tuned_examples/dqn/), config unchanged.
    "dqn-cartpole": {
        "algo": "dqn",
        "env": "CartPole-v1",
        "training": {"lr": 0.0005, "train_batch_size_per_learner": 32,
                     "replay_buffer_config": {"type": "PrioritizedEpisodeReplayBuffer", "capacity": 50000,
                                              "alpha": 0.6, "beta": 0.4},
                     "n_step": (2, 5), "double_q": True, "dueling": True, "epsilon": [(0, 1.0), (10000, 0.02)]},
        "model": {"fcnet_hiddens": [256], "fcnet_activation": "tanh", "fcnet_bias_initializer": "zeros_",
                  "head_fcnet_bias_initializer": "zeros_", "head_fcnet_hiddens": [256]},
        "threshold": 450.0,
        "budget": 200_000,
    },
    # RLlib's tuned pendulum_sac.py (rllib/tuned_examples/sac/), config unchanged.
    "sac-pendulum": {
        "algo": "sac",
        "env": "Pendulum-v1",
        "training": {**_PENDULUM_SAC_TRAINING,
                     "replay_buffer_config": {"type": "PrioritizedEpisodeReplayBuffer", "capacity": 100000,
                                              "alpha": 1.0, "beta": 0.0}},
        "model": _PENDULUM_SAC_MODEL,
        "reporting": {"metrics_num_episodes_for_smoothing": 5},
        "threshold": -250.0,
        "budget": 20_000,
    },
    # RLlib's tuned multi_agent_cartpole_dqn.py (two agents, p0/p1), config unchanged;
    # the stop is RLlib's: the summed return of both agents >= 150 per agent.
    "dqn-ma-cartpole": {
        "algo": "dqn",
        "env": "multi_agent_cartpole",
        "env_config": {"num_agents": 2},
        "policies": ["p0", "p1"],
        "policy_of": "p{agent_id}",
        "training": {"lr": 0.00065, "train_batch_size_per_learner": 48,
                     "replay_buffer_config": {"type": "MultiAgentPrioritizedEpisodeReplayBuffer", "capacity": 50000,
                                              "alpha": 0.6, "beta": 0.4},
                     "n_step": (2, 5), "double_q": True, "dueling": True, "epsilon": [(0, 1.0), (20000, 0.02)]},
        "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh", "fcnet_bias_initializer": "zeros_",
                  "head_fcnet_bias_initializer": "zeros_", "head_fcnet_hiddens": [256]},
        "threshold": 300.0,
        "budget": 500_000,
    },
    # RLlib's tuned multi_agent_pendulum_sac.py (two agents, p0/p1), config unchanged;
    # the stop is RLlib's: the summed return of both agents >= -450 per agent.
    "sac-ma-pendulum": {
        "algo": "sac",
        "env": "multi_agent_pendulum",
        "env_config": {"num_agents": 2},
        "policies": ["p0", "p1"],
        "policy_of": "p{agent_id}",
        "training": {**_PENDULUM_SAC_TRAINING,
                     "replay_buffer_config": {"type": "MultiAgentPrioritizedEpisodeReplayBuffer", "capacity": 100000,
                                              "alpha": 1.0, "beta": 0.0}},
        "model": _PENDULUM_SAC_MODEL,
        "reporting": {"metrics_num_episodes_for_smoothing": 5},
        "threshold": -900.0,
        "budget": 500_000,
    },
}


def algo_of(case: Dict[str, Any]) -> str:
    """The case's algorithm: ``"ppo"`` unless it names another."""
    return case.get("algo", "ppo")


def reached(case: Dict[str, Any], env_runner_results: Dict[str, Any]) -> float | None:
    """The value compared with the threshold, or None before any episode ended."""
    if case.get("per_module"):
        per_module = env_runner_results.get("module_episode_returns_mean") or {}
        if not all(p in per_module for p in case["policies"]):
            return None
        return float(min(per_module[p] for p in case["policies"]))
    value = env_runner_results.get("episode_return_mean")
    return None if value is None else float(value)
