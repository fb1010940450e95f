"""``Algorithm``: the training driver that wires envs, env runners and learners.

One ``train()`` call is one iteration: sample ``train_batch_size_per_learner``
env steps, update the learner, broadcast the new weights, report metrics
under RLlib's key names.
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Dict, Optional

import numpy as np
import torch

from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError
from marl.algorithms.module_setup import build_module_spec, resolve_policies
from marl.core.constants import DEFAULT_MODULE_ID, ModuleID

#: Episodes over which the reported episode-return metrics are averaged.
SMOOTHING_EPISODES = 100


def seed_everything(seed: Optional[int]) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Algorithm:
    """Build with ``config.build()``; then ``train()``, ``evaluate()``, save and restore."""

    config_class: type = AlgorithmConfig

    def __init__(self, config: AlgorithmConfig) -> None:
        from envs.env_runner import infer_module_spaces
        from envs.registry import make_env_creator
        from envs.worker_pool import EnvRunnerGroup
        from learners.learner_group import LearnerGroup

        config.validate()
        self.config = config
        seed_everything(config.seed)
        self._env_creator = make_env_creator(config.env, config.env_config)
        self.policies, self.policy_mapping_fn = resolve_policies(config)

        probe_env = self._env_creator(dict(config.env_config or {}))
        try:
            module_spaces = infer_module_spaces(
                probe_env, self.policy_mapping_fn, config.env_to_module_connector
            )
        finally:
            probe_env.close()
        unknown = sorted(set(module_spaces) - set(self.policies))
        if unknown:
            raise ConfigError(
                f"policy_mapping_fn returned module ids {unknown}, which are not policies; "
                f"valid ids: {sorted(self.policies)}"
            )
        self.module_spec = build_module_spec(config, self.policies, module_spaces)

        self.learner_group = LearnerGroup(
            config=config,
            learner_class=config.get_learner_class(),
            module_spec=self.module_spec,
        )
        self._runner_kwargs = dict(
            env_creator=self._env_creator,
            env_config=dict(config.env_config or {}),
            module_spec=self.module_spec,
            policy_mapping_fn=self.policy_mapping_fn,
            num_envs=config.num_envs_per_env_runner,
            rollout_fragment_length=self._fragment_length(),
            env_to_module_connector=config.env_to_module_connector,
            seed=config.seed,
        )
        self.env_runner_group = EnvRunnerGroup(config.num_env_runners, self._runner_kwargs)
        self.env_runner_group.sync_weights(self.learner_group.get_weights())
        self._eval_runner = None
        self.iteration = 0
        self._time_total = 0.0
        self._counters = {
            "num_env_steps_sampled_lifetime": 0,
            "num_agent_steps_sampled_lifetime": 0,
            "num_env_steps_trained_lifetime": 0,
            "num_episodes_lifetime": 0,
        }
        self._episode_returns: deque = deque(maxlen=SMOOTHING_EPISODES)
        self._episode_lens: deque = deque(maxlen=SMOOTHING_EPISODES)
        self._module_returns: Dict[str, deque] = {}
        self._agent_returns: Dict[str, deque] = {}

    def _fragment_length(self) -> int:
        cfg = self.config
        if cfg.rollout_fragment_length == "auto":
            per_runner = max(1, cfg.num_env_runners)
            return max(1, int(np.ceil(cfg.train_batch_size_per_learner / (per_runner * cfg.num_envs_per_env_runner))))
        return int(cfg.rollout_fragment_length)

    # ------------------------------------------------------------------ access
    @property
    def learner(self):
        return self.learner_group.learner

    def get_module(self, module_id: Optional[ModuleID] = DEFAULT_MODULE_ID):
        """The trained module: one policy by id, or the whole MultiRLModule for ``None``.

        In a multi-agent setup without a ``DEFAULT_MODULE_ID`` policy the
        default argument returns the container, so ``print(algo.get_module())``
        shows every module.
        """
        module = self.learner.module
        if module_id is None or (module_id == DEFAULT_MODULE_ID and module_id not in module):
            return module
        return module[module_id]

    # ---------------------------------------------------------------- training
    def train(self) -> Dict[str, Any]:
        """One iteration; returns RLlib-style nested results."""
        start = time.perf_counter()
        self.iteration += 1
        t0 = time.perf_counter()
        samples, runner_metrics = self.env_runner_group.sample(self.config.train_batch_size_per_learner)
        sample_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        learner_results = self.learner_group.update_from_samples(samples)
        learn_time = time.perf_counter() - t0
        self.env_runner_group.sync_weights(self.learner_group.get_weights())

        env_steps = int(runner_metrics.get("num_env_steps_sampled", 0))
        self._counters["num_env_steps_sampled_lifetime"] += env_steps
        self._counters["num_agent_steps_sampled_lifetime"] += int(runner_metrics.get("num_agent_steps_sampled", 0))
        self._counters["num_env_steps_trained_lifetime"] += env_steps
        self._record_episodes(runner_metrics)
        elapsed = time.perf_counter() - start
        self._time_total += elapsed

        result: Dict[str, Any] = {
            "training_iteration": self.iteration,
            "env_runners": self._env_runner_results(runner_metrics),
            "learners": learner_results,
            "time_this_iter_s": elapsed,
            "time_total_s": self._time_total,
            "timers": {"env_runner_sampling_timer": sample_time, "learner_update_timer": learn_time},
            "num_env_steps_sampled_lifetime": self._counters["num_env_steps_sampled_lifetime"],
            "num_agent_steps_sampled_lifetime": self._counters["num_agent_steps_sampled_lifetime"],
            "num_env_steps_sampled_per_s": env_steps / max(elapsed, 1e-9),
        }
        interval = self.config.evaluation_interval
        if interval and self.iteration % interval == 0:
            result["evaluation"] = self.evaluate()
        return result

    def _record_episodes(self, metrics: Dict[str, Any]) -> None:
        returns = metrics.get("episode_returns", [])
        self._episode_returns.extend(returns)
        self._episode_lens.extend(metrics.get("episode_lens", []))
        self._counters["num_episodes_lifetime"] += len(returns)
        for key, store in (("module_episode_returns", self._module_returns), ("agent_episode_returns", self._agent_returns)):
            for ident, values in metrics.get(key, {}).items():
                store.setdefault(str(ident), deque(maxlen=SMOOTHING_EPISODES)).extend(values)

    def _env_runner_results(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
        out = {
            k: v
            for k, v in metrics.items()
            if not isinstance(v, (list, dict)) and not k.startswith("episode_return") and k != "episode_len_mean"
        }
        out["num_env_steps_sampled_lifetime"] = self._counters["num_env_steps_sampled_lifetime"]
        out["num_episodes_lifetime"] = self._counters["num_episodes_lifetime"]
        out["num_episodes"] = len(metrics.get("episode_returns", []))
        if self._episode_returns:
            r = np.asarray(self._episode_returns, dtype=np.float64)
            out.update(
                episode_return_mean=float(r.mean()),
                episode_return_min=float(r.min()),
                episode_return_max=float(r.max()),
                episode_len_mean=float(np.mean(self._episode_lens)) if self._episode_lens else float("nan"),
            )
            out["module_episode_returns_mean"] = {k: float(np.mean(v)) for k, v in self._module_returns.items() if v}
            out["agent_episode_returns_mean"] = {k: float(np.mean(v)) for k, v in self._agent_returns.items() if v}
        return out

    def evaluate(self) -> Dict[str, Any]:
        """Greedy (unless ``evaluation_explore``) episodes with the current weights."""
        from envs.env_runner import MultiAgentEnvRunner

        cfg = self.config
        if self._eval_runner is None:
            kwargs = dict(self._runner_kwargs)
            kwargs["seed"] = None if cfg.seed is None else cfg.seed + 10_000
            kwargs["worker_index"] = 0
            self._eval_runner = MultiAgentEnvRunner(**kwargs)
        self._eval_runner.set_weights(self.learner_group.get_weights())
        if cfg.evaluation_duration_unit == "episodes":
            _, metrics = self._eval_runner.sample(num_episodes=cfg.evaluation_duration, explore=cfg.evaluation_explore)
        else:
            _, metrics = self._eval_runner.sample(num_timesteps=cfg.evaluation_duration, explore=cfg.evaluation_explore)
        returns = metrics.get("episode_returns", [])
        env_results = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        if returns:
            env_results.update(
                episode_return_mean=float(np.mean(returns)),
                episode_return_min=float(np.min(returns)),
                episode_return_max=float(np.max(returns)),
            )
        return {"env_runners": env_results}

    # -------------------------------------------------------------- checkpoints
    def save_to_path(self, path: Optional[str] = None) -> str:
        """Write the checkpoint tree of ARCHITECTURE.md atomically; returns the path."""
        from marl.algorithms.checkpointing import save_algorithm

        return save_algorithm(self, path)

    save = save_to_path

    def restore_from_path(self, path: str, component: Optional[str] = None) -> None:
        """Restore everything, or one component such as
        ``"learner_group/learner/rl_module/<module_id>"`` (then ``path`` is that
        component's checkpoint); module weights reach the learner and every env runner."""
        from marl.algorithms.checkpointing import restore_algorithm

        restore_algorithm(self, path, component)

    @classmethod
    def from_checkpoint(cls, path: str, config: Optional[AlgorithmConfig] = None) -> "Algorithm":
        """Rebuild an algorithm (its config from the checkpoint unless given) and restore it."""
        from marl.algorithms.checkpointing import load_algorithm

        return load_algorithm(path, config)

    def get_state(self) -> Dict[str, Any]:
        return {
            "iteration": self.iteration,
            "time_total_s": self._time_total,
            "counters": dict(self._counters),
            "episode_returns": list(self._episode_returns),
            "episode_lens": list(self._episode_lens),
            "module_episode_returns": {k: list(v) for k, v in self._module_returns.items()},
            "agent_episode_returns": {k: list(v) for k, v in self._agent_returns.items()},
        }

    def set_state(self, state: Dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self._time_total = float(state.get("time_total_s", 0.0))
        self._counters.update(state["counters"])
        self._episode_returns = deque(state.get("episode_returns", []), maxlen=SMOOTHING_EPISODES)
        self._episode_lens = deque(state.get("episode_lens", []), maxlen=SMOOTHING_EPISODES)
        self._module_returns = {k: deque(v, maxlen=SMOOTHING_EPISODES) for k, v in state.get("module_episode_returns", {}).items()}
        self._agent_returns = {k: deque(v, maxlen=SMOOTHING_EPISODES) for k, v in state.get("agent_episode_returns", {}).items()}

    def sync_weights_to_env_runners(self) -> None:
        self.env_runner_group.sync_weights(self.learner_group.get_weights())

    def stop(self) -> None:
        self.env_runner_group.stop()
        if self._eval_runner is not None:
            self._eval_runner.stop()

    def __enter__(self) -> "Algorithm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
