"""The joint-replay part of DQN's loop that VDN/QMIX and MASAC share.

These algorithms learn from rows holding every agent of one env step (joint
transitions, or joint sequences for recurrent agents), the global state
before and after, and the rewards; one replay buffer (``JOINT``) holds them
and the learner trains on one joint batch per update. Mixed in before
``DQN`` (or ``SAC``): it replaces per-module storage and updates.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from marl.algorithms.algorithm_config import ConfigError
from marl.core.columns import Columns
from marl.core.nested import take_rows


class JointReplayMixin:
    """Global inputs recorded by the runners, joint rows in one buffer, joint updates."""

    #: The config key naming the global input (``"auto"``, ``"state"``, ``"joint_obs"``).
    global_input_key = "state_input"
    #: Joint rows are built per sampling call, so RLlib's training steps are grouped into longer calls.
    _rows_span_calls = False

    def _inspect_env(self, env: Any) -> None:
        from envs.sampling.episode import EpisodeHandle
        from envs.sampling.global_inputs import GlobalInput

        try:
            self._global = GlobalInput(getattr(self.config, self.global_input_key), env)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        agents = list(env.possible_agents)
        episode = EpisodeHandle(id_=-1, env_index=0, agent_ids=list(agents))
        self._agents = agents
        self._agent_modules = {str(a): self.policy_mapping_fn(a, episode) for a in agents}
        self._num_dropped_steps = 0

    def _extra_runner_kwargs(self) -> Dict[str, Any]:
        return {"global_input": self._global.kind}

    def _store(self, samples: Dict[str, Dict[str, Any]]) -> None:
        from learners.joint_transitions import JOINT, joint_sequences, joint_transitions

        samples = {mid: b for mid, b in samples.items() if len(b.get("seq_lens", []))}
        if not samples:
            return
        if self._seq_lens:
            rows, dropped = joint_sequences(samples, self._agents, min(self._seq_lens.values()))
            if rows:  # chunks no longer than the burn-in train nothing (see DQN._store)
                keep = np.flatnonzero(rows[Columns.LOSS_MASK].sum(axis=1) > self.config.burn_in_len)
                rows = {k: take_rows(v, keep) for k, v in rows.items()}
        else:
            rows, dropped = joint_transitions(samples, self._agents, self.config.n_step, self.config.gamma)
        self._num_dropped_steps += dropped
        if rows:
            self._buffer_for(JOINT).add(rows)

    def _update_once(self, timestep: Optional[int] = None) -> Dict[str, Any]:
        from learners.joint_transitions import JOINT
        from learners.replay_buffer import INDICES

        buffer = self.replay_buffers.get(JOINT)
        if buffer is None or not len(buffer):
            return {}
        length = min(self._seq_lens.values()) if self._seq_lens else 1
        batch = buffer.sample(max(1, self.config.train_batch_size_per_learner // length))
        indices = batch.pop(INDICES)
        learner = self.learner
        learner.check_module_apis()
        results = learner.update({JOINT: batch}, minibatch_size=length * len(indices), num_epochs=1)
        buffer.update_priorities(indices, learner.last_td_errors[JOINT].cpu().numpy())
        learner.update_target_networks(self._update_timestep(timestep))
        self._counters["num_env_steps_trained_lifetime"] += len(indices)
        return results

    def train(self) -> Dict[str, Any]:
        result = super().train()
        for stats in result.get("replay_buffers", {}).values():
            stats["num_dropped_steps"] = self._num_dropped_steps
        return result
