"""``Algorithm``: the training driver that wires envs, env runners and learners.

One ``train()`` call is one iteration: sample ``train_batch_size_per_learner``
env steps, update the learner, broadcast the new weights, report metrics
under RLlib's key names.
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections import deque
from typing import Any, Dict, Optional

import numpy as np
import torch

from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError
from marl.algorithms.module_setup import build_module_spec, resolve_policies
from marl.core.constants import DEFAULT_MODULE_ID, ModuleID



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
        from envs.agent_spaces import wrap_env_creator
        from envs.env_runner import infer_module_spaces
        from envs.registry import make_env_creator
        from envs.worker_pool import make_env_runner_group
        from learners.learner_group import LearnerGroup

        config.validate()
        self.config = config
        seed_everything(config.seed)
        level = "WARNING" if str(config.log_level).upper() == "WARN" else str(config.log_level).upper()
        for name in ("marl", "envs", "learners"):
            logging.getLogger(name).setLevel(level)
        self._env_creator = make_env_creator(config.env, config.env_config)
        self.policies, self.policy_mapping_fn = resolve_policies(config)
        self._env_creator = wrap_env_creator(
            self._env_creator, config.env_config, self.policy_mapping_fn,
            pad=config.pad_agent_spaces, add_agent_id=config.add_agent_id)

        probe_env = self._env_creator(dict(config.env_config or {}))
        try:
            module_spaces = infer_module_spaces(
                probe_env, self.policy_mapping_fn, config.env_to_module_connector
            )
            self._inspect_env(probe_env)
        finally:
            probe_env.close()
        unknown = sorted(set(module_spaces) - set(self.policies))
        if unknown:
            raise ConfigError(
                f"policy_mapping_fn returned module ids {unknown}, which are not policies; "
                f"valid ids: {sorted(self.policies)}"
            )
        self.module_spec = self._complete_module_spec(build_module_spec(config, self.policies, module_spaces))

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
            explore=config.explore,
            normalize_actions=config.normalize_actions,
            clip_actions=config.clip_actions,
            sample_timeout_s=config.sample_timeout_s,
            nonfinite_env_values=config.nonfinite_env_values,
            metrics_num_episodes=int(np.ceil(config.metrics_num_episodes_for_smoothing
                                             / max(1, config.num_env_runners))),
            **self._extra_runner_kwargs(),
        )
        if config.overlap_sampling:
            # The learner now runs beside the samplers: give it the cores they leave. More
            # intra-op threads than free cores make torch's thread pool spin against the
            # samplers (measured: the update 2.4x slower on 2 cores with 1 runner).
            threads = max(1, (os.cpu_count() or 1) - config.num_env_runners)
            if torch.get_num_threads() > threads:
                logging.getLogger("marl").info("overlap_sampling: torch.set_num_threads(%d) for the learner", threads)
                torch.set_num_threads(threads)
        self.env_runner_group = make_env_runner_group(
            config.num_env_runners, self._runner_kwargs, backend=config.env_runner_backend,
            num_cpus_per_env_runner=config.num_cpus_per_env_runner)
        self.env_runner_group.sync_weights(self.learner_group.get_weights())
        self._eval_runner = None
        self._prefetched = None  # an overlapped sample collected early (see _sample)
        self.iteration = 0
        self._time_total = 0.0
        self._counters = {
            "num_env_steps_sampled_lifetime": 0,
            "num_agent_steps_sampled_lifetime": 0,
            "num_env_steps_trained_lifetime": 0,
            "num_episodes_lifetime": 0,
        }
        self._episode_window: deque = deque(maxlen=config.metrics_num_episodes_for_smoothing)

    # ------------------------------------------------ hooks for algorithms
    def _inspect_env(self, env: Any) -> None:
        """Read what the algorithm needs from a probe env before modules are built."""

    def _complete_module_spec(self, spec: Any) -> Any:
        """Add the algorithm's own (non-policy) modules to the container spec."""
        return spec

    def _extra_runner_kwargs(self) -> Dict[str, Any]:
        """Extra ``MultiAgentEnvRunner`` settings the algorithm's learner relies on."""
        return {}

    # Algorithm-specific checkpoint parts (DQN's replay buffers): written into the
    # staging directory (covered by its checksums), read and checked before a
    # restore changes anything, applied last, undone with the rest on failure.
    def _save_extra_checkpoint(self, directory: Any) -> None:
        """Write the algorithm's own checkpoint files under ``directory``."""

    def _read_extra_checkpoint(self, directory: Any, verified: Any) -> Any:
        """Read and check them (raising ``CheckpointError``); None: nothing to apply."""
        return None

    def _apply_extra_checkpoint(self, payload: Any) -> None:
        """Apply what ``_read_extra_checkpoint`` returned."""

    def _extra_checkpoint_snapshot(self) -> Any:
        """What ``_apply_extra_checkpoint`` would replace (for undoing a failed restore)."""
        return None

    def _restore_extra_snapshot(self, snapshot: Any) -> None:
        """Put back a ``_extra_checkpoint_snapshot``."""

    def _fragment_length(self) -> int:
        cfg = self.config
        if cfg.rollout_fragment_length == "auto":
            per_runner = max(1, cfg.num_env_runners)
            return max(1, int(np.ceil(cfg.total_train_batch_size / (per_runner * cfg.num_envs_per_env_runner))))
        return int(cfg.rollout_fragment_length)

    # ------------------------------------------------------------------ access
    @property
    def env_creator(self) -> Any:
        """``env_config -> env`` as the env runners build it (with ``pad_agent_spaces`` /
        ``add_agent_id`` applied), e.g. for evaluating outside the algorithm."""
        return self._env_creator

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
        samples, runner_metrics = self._sample()
        sample_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        learner_results = self.learner_group.update_from_samples(samples)
        learn_time = time.perf_counter() - t0
        if not self.config.overlap_sampling:  # overlapped: the weights ride with the next sample request
            self.env_runner_group.sync_weights(self.learner_group.get_weights())

        env_steps = self._count_sampled(runner_metrics)
        self._counters["num_env_steps_trained_lifetime"] += env_steps
        episodes = self._record_episodes(runner_metrics)
        return self._iteration_result(start, runner_metrics, episodes, learner_results, env_steps,
                                      sample_time, learn_time)

    def _count_sampled(self, runner_metrics: Dict[str, Any]) -> int:
        """Add a sample call's steps to the lifetime counters; returns its env steps."""
        env_steps = int(runner_metrics.get("num_env_steps_sampled", 0))
        self._counters["num_env_steps_sampled_lifetime"] += env_steps
        self._counters["num_agent_steps_sampled_lifetime"] += int(runner_metrics.get("num_agent_steps_sampled", 0))
        return env_steps

    def _iteration_result(self, start: float, runner_metrics: Dict[str, Any], episodes: Optional[Dict[str, Any]],
                          learner_results: Dict[str, Any], env_steps: int, sample_time: float,
                          learn_time: float) -> Dict[str, Any]:
        """The RLlib-style result of an iteration that began at ``start`` (and its evaluation)."""
        elapsed = time.perf_counter() - start
        self._time_total += elapsed
        result: Dict[str, Any] = {
            "training_iteration": self.iteration,
            "env_runners": self._env_runner_results(runner_metrics, episodes),
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

    def _sample(self):
        """This iteration's batch. With ``overlap_sampling`` the workers sample the next
        batch while this one trains (with the weights this iteration starts from), so
        the batch trained on is one update behind the learner; PPO's ratio uses the
        recorded behaviour log-probabilities, so the loss stays correct for it."""
        group, n = self.env_runner_group, self.config.total_train_batch_size
        if not self.config.overlap_sampling:
            return group.sample(n)
        if self._prefetched is not None:
            result, self._prefetched = self._prefetched, None
        else:
            if not group.sample_in_flight:
                group.start_sample(n, weights=self.learner_group.get_weights())
            result = group.finish_sample()
        group.start_sample(n, weights=self.learner_group.get_weights())
        return result

    def _collect_sample_in_flight(self) -> None:
        """Before talking to the runners otherwise: collect an overlapped sample in
        flight and keep it for the next ``train()`` (nothing sampled is lost)."""
        group = self.env_runner_group
        if getattr(group, "sample_in_flight", False):
            self._prefetched = group.finish_sample()

    def _record_episodes(self, metrics: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """This iteration's episode statistics (None if no episode ended), also
        kept for the smoothed (cross-iteration) window."""
        from envs.sampling.episode_metrics import episode_summary

        self._counters["num_episodes_lifetime"] += int(metrics.get("num_episodes", 0))
        entry = episode_summary(metrics)
        if entry is not None:
            self._episode_window.append(entry)
        return entry

    def _window(self) -> list:
        """The latest iterations that together hold about metrics_num_episodes_for_smoothing episodes."""
        limit = self.config.metrics_num_episodes_for_smoothing
        chosen, total = [], 0
        for entry in reversed(self._episode_window):
            n = entry["num_episodes_for_metrics"]
            if chosen and total + n > limit:
                break
            chosen.append(entry)
            total += n
        return chosen

    def _env_runner_results(self, metrics: Dict[str, Any], episodes: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Runner counters, this iteration's episode statistics and the smoothed ones.

        ``episode_return_mean`` (min, max, ``episode_len_mean``,
        ``agent_episode_returns_mean``, ``module_episode_returns_mean``) keep
        RLlib 2.60's meaning: the episodes completed in this iteration, at
        most the latest ``metrics_num_episodes_for_smoothing``; absent when
        none completed. RLlib's stopping thresholds are defined on these.
        ``smoothed_*`` (marl's own) average the latest
        ``metrics_num_episodes_for_smoothing`` episodes across iterations: a
        steadier curve for plots and stopping rules.
        """
        out = {
            k: v
            for k, v in metrics.items()
            if not isinstance(v, (list, dict)) and not k.startswith("episode_return")
            and k not in ("episode_len_mean", "num_episodes_for_metrics")
        }
        out["num_module_steps_sampled"] = dict(metrics.get("num_module_steps_sampled", {}))
        out["num_env_steps_sampled_lifetime"] = self._counters["num_env_steps_sampled_lifetime"]
        out["num_episodes_lifetime"] = self._counters["num_episodes_lifetime"]
        out["num_episodes"] = int(metrics.get("num_episodes", 0))
        if episodes is not None:
            out.update(_rllib_episode_keys(episodes), episode_return_min=episodes["episode_return_min"],
                       episode_return_max=episodes["episode_return_max"])
        window = self._window()
        if window:
            from envs.sampling.episode_metrics import merge_metrics

            pooled = merge_metrics(window)
            out.update({f"smoothed_{k}": v for k, v in _rllib_episode_keys(pooled).items()},
                       smoothed_num_episodes=int(pooled["num_episodes_for_metrics"]))
        return out

    def build_local_env_runner(self, **overrides: Any):
        """A local env runner set up like the training runners (env, mapping,
        action handling, connectors), ``overrides`` replacing any of its
        keyword arguments; its connector statistics come from the training
        runners (``sync_connector_states``). Evaluation uses it."""
        from envs.env_runner import MultiAgentEnvRunner

        kwargs = {**self._runner_kwargs, "worker_index": 0, "metrics_num_episodes": None, **overrides}
        if "module" in overrides:
            kwargs.pop("module_spec", None)
        runner = MultiAgentEnvRunner(**kwargs)
        self.sync_connector_states(runner)
        return runner

    def sync_connector_states(self, runner: Any) -> None:
        """Give ``runner`` the training runners' connector states (e.g. a
        MeanStdFilter's statistics), so it sees observations as training did."""
        self._collect_sample_in_flight()
        runner.set_state({"env_to_module": self.env_runner_group.get_state().get("env_to_module", {})})

    def evaluate(self) -> Dict[str, Any]:
        """Greedy (unless ``evaluation_explore``) episodes with the current weights."""
        cfg = self.config
        if self._eval_runner is None:
            # Its own seed; evaluation averages every episode it ran.
            self._eval_runner = self.build_local_env_runner(seed=None if cfg.seed is None else cfg.seed + 10_000)
        else:
            self.sync_connector_states(self._eval_runner)
        self._eval_runner.set_weights(self.learner_group.get_weights())
        if cfg.evaluation_duration_unit == "episodes":
            _, metrics = self._eval_runner.sample(num_episodes=cfg.evaluation_duration, explore=cfg.evaluation_explore)
        else:
            _, metrics = self._eval_runner.sample(num_timesteps=cfg.evaluation_duration, explore=cfg.evaluation_explore)
        metrics.pop("connector_deltas", None)
        return {"env_runners": dict(metrics)}

    # -------------------------------------------------------------- checkpoints
    def save_to_path(self, path: Optional[str] = None) -> str:
        """Write the checkpoint tree of ARCHITECTURE.md atomically; returns the path.

        Only JSON and safetensors, each file's sha256 in the metadata. ``path``
        must be missing, empty or an earlier marl checkpoint (which is
        replaced); anything else raises ``CheckpointError`` and is left as it
        was. Config values without an import path (lambdas) are not saved,
        except a ``policy_mapping_fn``, saved as its agent -> module table.
        """
        from marl.algorithms.checkpointing import save_algorithm

        self._collect_sample_in_flight()
        # A batch sampled ahead is not stored: the resumed run samples a new one.
        self.env_runner_group.unsaved_sample_ahead = self._prefetched is not None
        return save_algorithm(self, path)

    save = save_to_path

    def restore_from_path(self, path: str, component: Optional[str] = None) -> None:
        """Restore everything, or one component such as
        ``"learner_group/learner/rl_module/<module_id>"`` (then ``path`` is that
        component's checkpoint); module weights reach the learner and every env runner.

        All or nothing: every file is verified and checked against this
        algorithm before anything changes; on an error (``CheckpointError``
        naming the file) the algorithm is as it was. This algorithm's config
        stays: optimizer hyperparameters such as ``lr`` come from it, not from
        the checkpoint.
        """
        from marl.algorithms.checkpointing import restore_algorithm

        self._collect_sample_in_flight()
        self._prefetched = None  # sampled before the restore: not part of the restored run
        restore_algorithm(self, path, component)
        self.learner_group.push_local_state()  # remote learners take the restored state

    @classmethod
    def from_checkpoint(cls, path: str, config: Optional[AlgorithmConfig] = None) -> "Algorithm":
        """Rebuild an algorithm and restore it.

        The config is ``config`` if given (its ``lr``, env settings, ... apply),
        else the one the checkpoint stores; that one loads only if every value
        was saved (a config with lambdas other than ``policy_mapping_fn``
        needs ``config=``). Nothing in the checkpoint is unpickled or called.
        """
        from marl.algorithms.checkpointing import load_algorithm

        return load_algorithm(path, config)

    def get_state(self) -> Dict[str, Any]:
        return {
            "iteration": self.iteration,
            "time_total_s": self._time_total,
            "counters": dict(self._counters),
            "episode_window": list(self._episode_window),
        }

    def set_state(self, state: Dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self._time_total = float(state.get("time_total_s", 0.0))
        self._counters.update(state["counters"])
        self._episode_window = deque(state.get("episode_window", []),
                                     maxlen=self.config.metrics_num_episodes_for_smoothing)

    def sync_weights_to_env_runners(self) -> None:
        self._collect_sample_in_flight()
        self.env_runner_group.sync_weights(self.learner_group.get_weights())

    def stop(self) -> None:
        self.env_runner_group.stop()
        self.learner_group.stop()
        if self._eval_runner is not None:
            self._eval_runner.stop()

    def __enter__(self) -> "Algorithm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _rllib_episode_keys(summary: Dict[str, Any]) -> Dict[str, Any]:
    """Pooled episode statistics under RLlib's result key names."""
    return {
        "episode_return_mean": summary["episode_return_mean"],
        "episode_len_mean": summary["episode_len_mean"],
        "agent_episode_returns_mean": dict(summary.get("agent_episode_return_mean", {})),
        "module_episode_returns_mean": dict(summary.get("module_episode_return_mean", {})),
    }
