"""DQN (and IQL: DQN with one Q-module per agent or shared): off-policy training from replay.

An iteration, as RLlib's new-stack DQN runs it: repeat training steps until
at least ``min_sample_timesteps_per_iteration`` env steps were sampled; a
training step samples ``rollout_fragment_length`` steps per env of every
runner (``"auto"``: ``n_step``, or the high end of an ``n_step`` range, as
RLlib's DQN and SAC configs say), stores them as (n-step) transitions in each
module's replay buffer (an episode's windows run across sampling calls:
``NStepCarry`` holds back each running episode's last ``n - 1`` steps until
its next steps arrive) and, once ``num_steps_sampled_before_learning_starts``
env steps were sampled, runs one update of ``train_batch_size_per_learner``
replayed rows per module. So by default RLlib replays a batch every
``n_step`` sampled steps per env. ``training_intensity`` (replayed / sampled
steps) changes the ratio to several rounds per update or several updates
per round, with RLlib's ``calculate_rr_weights``. Each training step is
one sampling call, as in RLlib. Where stored rows cannot span calls
(recurrent modules' sequences, VDN/QMIX/MASAC's joint rows), marl groups as
many training steps into one call as fit in a train batch, each update at
its own training step's env-step count (``sampling_rounds``). Targets are synced when
``target_network_update_freq`` env steps passed since the last sync, with
``tau`` (1.0: a copy). Exploration is epsilon-greedy with RLlib's piecewise
linear ``epsilon`` schedule over sampled env steps.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np
import torch

from marl.algorithms.algorithm import Algorithm
from marl.algorithms.algorithm_config import (
    AlgorithmConfig, ConfigError, _bad_value, _is_int, check_bool, check_choice, check_int, check_number,
)
from marl.core.columns import Columns
from marl.core.nested import take_rows
from marl.core.multi_rl_module import MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec

logger = logging.getLogger("marl")

#: RLlib 2.60's DQNConfig defaults (new API stack).
RLLIB_DQN_TRAINING_DEFAULTS = {
    "lr": 5e-4, "gamma": 0.99, "train_batch_size_per_learner": 32, "grad_clip": 40.0,
    "grad_clip_by": "global_norm", "epsilon": [[0, 1.0], [10000, 0.05]], "target_network_update_freq": 500,
    "num_steps_sampled_before_learning_starts": 1000, "store_buffer_in_checkpoints": False, "tau": 1.0,
    "dueling": True, "double_q": True, "n_step": 1, "training_intensity": None, "td_error_loss_fn": "huber",
    "replay_buffer_config": {"type": "PrioritizedEpisodeReplayBuffer", "capacity": 50000, "alpha": 0.6, "beta": 0.4},
    "burn_in_len": 0,
}


#: marl's own DQN/SAC key (not RLlib's). ``shorten_n_step_at_episode_end``: False (RLlib's rule) throws
#: away a replay draw whose n-step window would run past its episode's end and draws again, so an
#: episode's last ``n - 1`` steps start windows only with a smaller n; True shortens the window to the
#: steps left instead (every step replayed with every n; ``gamma^k`` on the bootstrap). On RLlib's
#: tuned CartPole DQN, True reached 450 in a median 22.5k env steps over seeds 0-5, False in 36k.
MARL_DQN_TRAINING_DEFAULTS = {"shorten_n_step_at_episode_end": False}


def piecewise_linear(schedule: Any, t: float) -> float:
    """RLlib's ``Scheduler``: a number, or ``[[t0, v0], [t1, v1], ...]`` interpolated, held after the end."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    points = sorted((float(a), float(b)) for a, b in schedule)
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t < t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def check_n_step(n_step: Any, *, allow_range: bool = True) -> None:
    """An int >= 1, or (where ``allow_range``) RLlib's range ``(low, high)``: n drawn from low .. high - 1."""
    if isinstance(n_step, (list, tuple)) and allow_range:
        if not (len(n_step) == 2 and all(_is_int(v) for v in n_step) and 1 <= n_step[0] < n_step[1]):
            raise _bad_value("n_step", n_step, "an int >= 1 or a range (low, high) with 1 <= low < high",
                             "each replayed transition draws its n from low .. high - 1, as in RLlib")
        return
    check_int("n_step", n_step, 1, hint="" if allow_range else "this algorithm's joint rows need one n for "
              "every agent; a range (low, high) is for DQN and SAC")


def rllib_fragment_length(config: "DQNConfig") -> int:
    """RLlib's DQN/SAC ``get_rollout_fragment_length``: ``"auto"`` is ``n_step`` (a range's high end)."""
    from learners.transitions import n_step_range

    if config.rollout_fragment_length != "auto":
        return int(config.rollout_fragment_length)
    bounds = n_step_range(config.n_step)
    return bounds[1] if bounds else int(config.n_step)


class SamplingRounds(NamedTuple):
    """How an iteration's rounds go: ``training_steps`` of RLlib's training step per sampling call."""

    steps_per_env: int      #: env steps per env (and runner) sampled per round
    training_steps: int     #: RLlib training steps the round stands for
    updates_per_step: int   #: updates per training step (``round_robin_weights``)


def sampling_rounds(config: "DQNConfig", grouped: bool = False) -> SamplingRounds:
    """RLlib's training steps as sampling rounds: one each, or (``grouped``) several per round.

    One RLlib training step samples ``store`` fragments per env and runs
    ``update`` updates (``round_robin_weights``); a round is exactly that.
    ``grouped`` (with ``"auto"`` fragments; the algorithms whose stored rows
    cannot span sampling calls use it: recurrent sequences, VDN/QMIX/MASAC's
    joint rows) joins ``k`` training steps into one round, ``k`` as many as
    fit in both a train batch and ``min_sample_timesteps_per_iteration`` of
    sampled env steps, so the replayed/sampled ratio is RLlib's while
    sampling calls stay long. The round's updates then run with the env-step
    count each training step would have had (``DQN._update_once(timestep)``),
    so target syncs and the start of learning fall where RLlib's do.
    """
    fragment = rllib_fragment_length(config)
    store, update = round_robin_weights(config, fragment)
    per_env = store * fragment
    group = 1
    if grouped and config.rollout_fragment_length == "auto":
        env_steps = per_env * config.num_envs_per_env_runner * max(1, config.num_env_runners)
        room = min(config.train_batch_size_per_learner, config.min_sample_timesteps_per_iteration)
        group = max(1, room // env_steps)
    return SamplingRounds(per_env * group, group, update)


def round_robin_weights(config: "DQNConfig", rollout_fragment_length: int) -> List[int]:
    """``[rounds of sampling per update round, updates per round]`` (RLlib's ``calculate_rr_weights``)."""
    if not config.training_intensity:
        return [1, 1]
    native = config.train_batch_size_per_learner / (
        rollout_fragment_length * config.num_envs_per_env_runner * max(config.num_env_runners + 1, 1))
    weight = config.training_intensity / native
    if weight < 1:
        return [int(np.round(1 / weight)), 1]
    return [1, int(np.round(weight))]


class DQNConfig(AlgorithmConfig):
    """DQN settings with RLlib's names, meanings and defaults (``RLLIB_DQN_TRAINING_DEFAULTS``)."""

    _algo_training_keys = tuple(k for k in RLLIB_DQN_TRAINING_DEFAULTS if k not in (
        "lr", "gamma", "train_batch_size_per_learner", "grad_clip", "grad_clip_by")) + tuple(MARL_DQN_TRAINING_DEFAULTS)
    supports_multiple_learners = False  # replay buffers and target updates live in the driver

    def __init__(self, algo_class: Optional[type] = None) -> None:
        super().__init__(algo_class=algo_class or DQN)
        self.min_sample_timesteps_per_iteration = 1000
        # RLlib's other two iteration bounds (Algorithm.train repeats training steps until all hold).
        self.min_time_s_per_iteration: Optional[float] = None
        self.min_train_timesteps_per_iteration = 0
        for key, value in {**RLLIB_DQN_TRAINING_DEFAULTS, **MARL_DQN_TRAINING_DEFAULTS}.items():
            setattr(self, key, dict(value) if isinstance(value, dict) else value)

    def get_default_learner_class(self) -> type:
        from learners.dqn_learner import DQNTorchLearner

        return DQNTorchLearner

    def get_default_rl_module_class(self) -> type:
        from marl.models.default_dqn_rl_module import DefaultDQNTorchRLModule

        return DefaultDQNTorchRLModule

    def validate(self) -> None:
        super().validate()
        if self.overlap_sampling:
            raise _bad_value("overlap_sampling", True, "False for off-policy algorithms",
                             "their loop already interleaves sampling rounds and replayed updates")
        epsilon = self.epsilon
        if isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool):
            check_number("epsilon", epsilon, low=0.0, high=1.0)
        elif not (isinstance(epsilon, (list, tuple)) and epsilon and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and 0.0 <= float(p[1]) <= 1.0 for p in epsilon)):
            raise _bad_value("epsilon", epsilon, "a number in [0, 1] or a schedule [[timestep, epsilon], ...]")
        check_int("target_network_update_freq", self.target_network_update_freq, 0)
        check_int("num_steps_sampled_before_learning_starts", self.num_steps_sampled_before_learning_starts, 0)
        check_n_step(self.n_step)
        check_int("burn_in_len", self.burn_in_len, 0)
        check_int("min_sample_timesteps_per_iteration", self.min_sample_timesteps_per_iteration, 0)
        check_int("min_train_timesteps_per_iteration", self.min_train_timesteps_per_iteration, 0)
        check_number("min_time_s_per_iteration", self.min_time_s_per_iteration, low=0.0, none="no time bound")
        check_number("tau", self.tau, low=0.0, high=1.0, low_open=True)
        check_number("training_intensity", self.training_intensity, low=0.0, low_open=True,
                     none="RLlib's natural ratio: one update per training step of n_step env steps per env")
        for key in ("store_buffer_in_checkpoints", "dueling", "double_q", "shorten_n_step_at_episode_end"):
            check_bool(key, getattr(self, key))
        check_choice("td_error_loss_fn", self.td_error_loss_fn, ("huber", "mse"))
        if not isinstance(self.replay_buffer_config, dict):
            raise _bad_value("replay_buffer_config", self.replay_buffer_config, "a dict")
        from learners.replay_buffer import make_replay_buffer

        try:
            make_replay_buffer({**self.replay_buffer_config, "capacity": 1}, seed=0)
            check_int("replay_buffer_config['capacity']", self.replay_buffer_config.get("capacity", 50000), 1)
        except ValueError as err:
            raise ConfigError(f"replay_buffer_config: {err}") from None

    def reporting(self, **kwargs: Any) -> "DQNConfig":
        """metrics_num_episodes_for_smoothing, and RLlib's iteration bounds: an iteration repeats
        training steps until ``min_sample_timesteps_per_iteration`` env steps were sampled (DQN:
        1000, SAC: 100), ``min_train_timesteps_per_iteration`` replayed rows were trained on (0) and
        ``min_time_s_per_iteration`` seconds passed (DQN: None, SAC: 1), all three."""
        return self._set("reporting", {"metrics_num_episodes_for_smoothing", "min_sample_timesteps_per_iteration",
                                       "min_time_s_per_iteration", "min_train_timesteps_per_iteration"}, kwargs)


class DQN(Algorithm):
    """Off-policy training loop over per-module replay buffers."""

    config_class = DQNConfig

    def __init__(self, config: DQNConfig) -> None:
        super().__init__(config)
        self.replay_buffers: Dict[str, Any] = {}
        #: Per module, the steps held back until their n-step windows are complete (``NStepCarry``).
        self.nstep_carries: Dict[str, Any] = {}
        self._seq_lens = self._recurrent_seq_lens()
        for mid, length in self._seq_lens.items():
            if config.n_step != 1:
                raise ConfigError(f"n_step={config.n_step!r}: recurrent Q-module {mid!r} trains on stored "
                                  "sequences with 1-step targets; use n_step=1")
            if config.burn_in_len >= length:
                raise ConfigError(f"burn_in_len={config.burn_in_len!r}: expected less than module {mid!r}'s "
                                  f"max_seq_len ({length}), or no step would be trained")

    # ------------------------------------------------------------ modules
    def _complete_module_spec(self, spec: MultiRLModuleSpec) -> MultiRLModuleSpec:
        """Hand the default DQN modules their ``dueling`` setting."""
        from marl.models.default_dqn_rl_module import DefaultDQNTorchRLModule
        from marl.models.default_model_config import model_config_dict

        specs: Dict[str, RLModuleSpec] = dict(spec.rl_module_specs)
        for mid, sub in specs.items():
            if isinstance(sub.module_class, type) and issubclass(sub.module_class, DefaultDQNTorchRLModule):
                sub.model_config = {**model_config_dict(sub.model_config), "dueling": self.config.dueling}
        spec.rl_module_specs = specs
        return spec

    #: Whether stored rows can span sampling calls (n-step windows joined by ``NStepCarry``).
    #: Where they cannot (recurrent sequences, joint rows), RLlib's training steps are
    #: grouped into longer sampling calls (``sampling_rounds(grouped=True)``).
    _rows_span_calls = True

    def _recurrent_seq_lens(self) -> Dict[str, int]:
        """``{module_id: max_seq_len}`` of the recurrent Q-modules (they store sequences)."""
        return {mid: m.max_seq_len() for mid, m in self.learner.module.items()
                if mid in self.policies and m.is_stateful()}

    def _sampling_rounds(self) -> SamplingRounds:
        # Also called while Algorithm.__init__ builds the runners, before ``_seq_lens`` is set.
        recurrent = bool(self._recurrent_seq_lens())
        return sampling_rounds(self.config, grouped=recurrent or not self._rows_span_calls)

    def _fragment_length(self) -> int:
        return self._sampling_rounds().steps_per_env

    # -------------------------------------------------------- checkpoints
    REPLAY_DIR = "replay_buffer"

    def _save_extra_checkpoint(self, directory: Any) -> None:
        """``replay_buffer/<module_id>/{state.json, data.safetensors}`` when
        ``store_buffer_in_checkpoints`` (off by default, as in RLlib: buffers are large), with
        ``nstep_carry.{json,safetensors}``: the steps held back for their n-step windows."""
        if not self.config.store_buffer_in_checkpoints:
            return
        from marl.core import checkpoint_io as io

        root = directory / self.REPLAY_DIR
        root.mkdir()
        for module_id, buffer in sorted(self.replay_buffers.items()):
            sub = root / module_id
            sub.mkdir()
            json_state, arrays = buffer.get_state()
            io.write_json(sub / "state.json", json_state)
            io.save_tensors(sub / "data.safetensors",
                            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
            carry = self.nstep_carries.get(module_id)
            if carry is not None:
                json_state, arrays = carry.get_state()
                io.write_json(sub / "nstep_carry.json", json_state)
                io.save_tensors(sub / "nstep_carry.safetensors",
                                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})

    def _read_extra_checkpoint(self, directory: Any, verified: Any) -> Any:
        from learners.nstep_carry import NStepCarry, carry_horizon
        from learners.replay_buffer import make_replay_buffer
        from marl.core import checkpoint_io as io

        root = directory / self.REPLAY_DIR
        if not root.is_dir():  # no buffers stored: training refills them
            logger.warning("this checkpoint holds no replay buffers (store_buffer_in_checkpoints=False): "
                           "training continues from empty buffers, so it is not an exact resume")
            return None
        buffers, carries = {}, {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            state_path = verified.require(sub / "state.json")
            arrays = {k: v.numpy() for k, v in io.load_tensors(verified.require(sub / "data.safetensors")).items()}
            buffer = make_replay_buffer(self.config.replay_buffer_config, seed=0)
            try:
                buffer.set_state(io.read_json(state_path), arrays)
            except (KeyError, ValueError, TypeError, IndexError) as err:
                raise io.CheckpointError(f"checkpoint directory {str(sub)!r}: not a replay buffer of this "
                                         f"config: {type(err).__name__}: {err}") from None
            buffers[sub.name] = buffer
            if (sub / "nstep_carry.json").exists():  # absent in checkpoints written before windows spanned calls
                carry = NStepCarry(carry_horizon(self.config.n_step))
                carry_json = io.read_json(verified.require(sub / "nstep_carry.json"))
                carry_arrays = {k: v.numpy() for k, v in
                                io.load_tensors(verified.require(sub / "nstep_carry.safetensors")).items()}
                try:
                    carry.set_state(carry_json, carry_arrays)
                except (KeyError, ValueError, TypeError) as err:
                    raise io.CheckpointError(f"checkpoint directory {str(sub)!r}: held-back n-step steps do not "
                                             f"fit this config: {type(err).__name__}: {err}") from None
                carries[sub.name] = carry
        return buffers, carries

    def _apply_extra_checkpoint(self, payload: Any) -> None:
        buffers, carries = payload
        self.replay_buffers, self.nstep_carries = dict(buffers), dict(carries)

    def _extra_checkpoint_snapshot(self) -> Any:
        return dict(self.replay_buffers), dict(self.nstep_carries)

    def _restore_extra_snapshot(self, snapshot: Any) -> None:
        self._apply_extra_checkpoint(snapshot)

    # ----------------------------------------------------------- training
    def _set_epsilon(self) -> None:
        epsilon = piecewise_linear(self.config.epsilon, self._counters["num_env_steps_sampled_lifetime"])
        for module in self.learner.module.values():
            buffer = getattr(module, "epsilon", None)
            if isinstance(buffer, torch.Tensor):
                buffer.fill_(epsilon)

    def _buffer_for(self, module_id: str):
        from learners.replay_buffer import make_replay_buffer

        if module_id not in self.replay_buffers:
            index = sorted(self.policies).index(module_id) if module_id in self.policies else len(self.replay_buffers)
            seed = None if self.config.seed is None else int(self.config.seed) * 1000 + 17 + index
            self.replay_buffers[module_id] = make_replay_buffer(self.config.replay_buffer_config, seed)
        return self.replay_buffers[module_id]

    def _store(self, samples: Dict[str, Dict[str, Any]]) -> None:
        from learners.transitions import ranged_segment_transitions, segment_sequences

        for module_id, batch in samples.items():
            if not len(batch.get("seq_lens", [])):
                continue
            if module_id in self._seq_lens:
                rows = segment_sequences(batch, self._seq_lens[module_id])
                # A sequence no longer than the burn-in has no step to train on: its TD error
                # would be 0 and, as a priority, would shrink every other row's weight.
                trainable = np.flatnonzero(rows[Columns.LOSS_MASK].sum(axis=1) > self.config.burn_in_len)
                rows = {k: take_rows(v, trainable) for k, v in rows.items()}
            else:
                joined, ready = self._carry_for(module_id).join(batch)
                rows = ranged_segment_transitions(joined, self.config.n_step, self.config.gamma)
                if not ready.all():
                    rows = {k: take_rows(v, np.flatnonzero(ready)) for k, v in rows.items()}
            self._buffer_for(module_id).add(rows)

    def _carry_for(self, module_id: str):
        from learners.nstep_carry import NStepCarry, carry_horizon

        if module_id not in self.nstep_carries:
            self.nstep_carries[module_id] = NStepCarry(carry_horizon(self.config.n_step))
        return self.nstep_carries[module_id]

    def _iteration_done(self, start: float, sampled: int, trained_before: int) -> bool:
        """RLlib's rule: every given bound (env steps sampled, rows trained, seconds) is met."""
        cfg = self.config
        trained = self._counters["num_env_steps_trained_lifetime"] - trained_before
        return (sampled >= cfg.min_sample_timesteps_per_iteration
                and trained >= cfg.min_train_timesteps_per_iteration
                and (not cfg.min_time_s_per_iteration or time.perf_counter() - start >= cfg.min_time_s_per_iteration))

    def _update_timestep(self, timestep: Optional[int]) -> int:
        return self._counters["num_env_steps_sampled_lifetime"] if timestep is None else int(timestep)

    def _rows_per_step(self, module_id: str) -> int:
        return self._seq_lens.get(module_id, 1)

    def _batch_rows(self, module_id: str) -> int:
        """Replayed rows per update: transitions, or ``train_batch_size / max_seq_len`` sequences."""
        return max(1, self.config.train_batch_size_per_learner // self._rows_per_step(module_id))

    def _replay(self, module_id: str, buffer: Any) -> Dict[str, Any]:
        """One update's replayed rows: sequences, or transitions with their n (see
        ``shorten_n_step_at_episode_end`` for windows at an episode's end)."""
        from learners.transitions import choose_n_step, n_step_range, replay_whole_windows

        rows = self._batch_rows(module_id)
        if module_id in self._seq_lens:
            return buffer.sample(rows)
        if not self.config.shorten_n_step_at_episode_end:
            return replay_whole_windows(buffer, rows, self.config.n_step)
        batch = buffer.sample(rows)
        return choose_n_step(batch, buffer.rng) if n_step_range(self.config.n_step) is not None else batch

    def _update_once(self, timestep: Optional[int] = None) -> Dict[str, Any]:
        """One replayed update per module; ``timestep``: the sampled env steps it counts as (target syncs)."""
        from learners.replay_buffer import INDICES

        learner = self.learner
        trained = set(learner.module_ids_to_train)
        batch = {mid: self._replay(mid, buf) for mid, buf in self.replay_buffers.items()
                 if mid in trained and len(buf)}
        if not batch:
            return {}
        indices = {mid: b.pop(INDICES) for mid, b in batch.items()}
        learner.build()
        learner.check_module_apis()
        # Recurrent modules' rows are sequences: the minibatch size counts their time steps.
        results = learner.update(batch, minibatch_size=max(self._rows_per_step(mid) * len(b[Columns.ACTIONS])
                                                           for mid, b in batch.items()), num_epochs=1)
        for mid, idx in indices.items():
            errors = learner.last_td_errors.get(mid)
            if errors is not None:
                self.replay_buffers[mid].update_priorities(idx, errors.cpu().numpy())
        synced = learner.update_target_networks(self._update_timestep(timestep))
        for mid, stats in results.items():
            if mid in learner.num_target_updates and isinstance(stats, dict):
                stats["num_target_updates"] = learner.num_target_updates[mid]
                stats["target_synced_this_update"] = bool(synced.get(mid, False))
        self._counters["num_env_steps_trained_lifetime"] += sum(len(b["actions"]) for b in batch.values())
        return results

    def train(self) -> Dict[str, Any]:
        """One iteration: sampling rounds and replayed updates (see the module docstring)."""
        from envs.sampling.episode_metrics import merge_metrics

        start = time.perf_counter()
        self.iteration += 1
        cfg = self.config
        rounds = self._sampling_rounds()
        per_round = rounds.steps_per_env * cfg.num_envs_per_env_runner * max(1, cfg.num_env_runners)
        sampled, sample_time, learn_time = 0, 0.0, 0.0
        trained_before = self._counters["num_env_steps_trained_lifetime"]
        totals: Dict[str, Any] = {"num_env_steps_sampled": 0, "num_agent_steps_sampled": 0, "num_episodes": 0,
                                  "num_module_steps_sampled": {}}
        entries: List[Dict[str, Any]] = []
        learner_results: Dict[str, Any] = {}
        last_metrics: Dict[str, Any] = {}
        while True:
            self._set_epsilon()
            self.env_runner_group.sync_weights(self.learner_group.get_weights())
            t0 = time.perf_counter()
            samples, metrics = self.env_runner_group.sample(per_round)
            sample_time += time.perf_counter() - t0
            self._store(samples)
            sampled += self._count_sampled(metrics)
            _accumulate(totals, metrics)
            entry = self._record_episodes(metrics)
            if entry is not None:
                entries.append(entry)
            last_metrics = metrics
            t0 = time.perf_counter()
            round_end = self._counters["num_env_steps_sampled_lifetime"]
            round_steps = int(metrics.get("num_env_steps_sampled", per_round))
            for step in range(rounds.training_steps):
                # The env-step count RLlib's training step ``step`` of this round would see.
                timestep = round_end - round_steps + round_steps * (step + 1) // rounds.training_steps
                if timestep >= cfg.num_steps_sampled_before_learning_starts:
                    for _ in range(rounds.updates_per_step):
                        learner_results = self._update_once(timestep) or learner_results
            learn_time += time.perf_counter() - t0
            if self._iteration_done(start, sampled, trained_before):
                break
        self.env_runner_group.sync_weights(self.learner_group.get_weights())
        runner_metrics = {**{k: v for k, v in last_metrics.items() if not k.startswith("episode_")
                             and k not in totals}, **totals}
        episodes = merge_metrics(entries) if entries else None
        result = self._iteration_result(start, runner_metrics, episodes, learner_results, sampled,
                                        sample_time, learn_time)
        # RLlib's key: replayed rows trained on, over the run (train_batch_size_per_learner per update).
        result["learners"].setdefault("__all_modules__", {})["num_env_steps_trained_lifetime"] = \
            self._counters["num_env_steps_trained_lifetime"]
        result["replay_buffers"] = {mid: {"size": len(buf), "num_added": buf.num_added}
                                    for mid, buf in self.replay_buffers.items()}
        result["epsilon"] = piecewise_linear(cfg.epsilon, self._counters["num_env_steps_sampled_lifetime"])
        return result


def _accumulate(totals: Dict[str, Any], metrics: Dict[str, Any]) -> None:
    for key in ("num_env_steps_sampled", "num_agent_steps_sampled", "num_episodes"):
        totals[key] += int(metrics.get(key, 0))
    for mid, n in metrics.get("num_module_steps_sampled", {}).items():
        totals["num_module_steps_sampled"][mid] = totals["num_module_steps_sampled"].get(mid, 0) + int(n)
