"""From time-ordered step rows to per-module batches of contiguous agent segments.

Rows are written in time order during a ``sample()`` call; here one stable
argsort over the episode-id column makes each agent's segment contiguous,
and each segment gets its bootstrap observation (next observation, final
observation on truncation, zeros on termination). Actions still waiting for
their next observation (turn-based envs) stay in the buffer for the next call.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

from marl.core.columns import BOOTSTRAP_GLOBAL_OBS, BOOTSTRAP_OBS, BOOTSTRAP_STATE_IN, GLOBAL_OBS, Columns
from marl.core.nested import set_rows, take_rows, zeros_like_rows

from envs.sampling.episode_metrics import episode_metrics
from envs.sampling.global_table import share_global_inputs
from envs.sampling.slots import EnvState, ModuleInfo


class BatchBuilder:
    """Runner mix-in: turns the step buffers into the batches ``sample()`` returns."""

    def _build_batches(self, explore: bool, discard: set) -> Dict[str, Dict[str, Any]]:
        # Where each live agent-episode's next observation is: queued to act
        # (complete last step) or its own held-back action (pending).
        queued: Dict[int, Tuple[str, int]] = {}
        for module_id, g in self._groups.items():
            for pos, eps in enumerate(g.eps.tolist()):
                queued[eps] = (module_id, pos)
        held_back: Dict[str, List[Tuple[EnvState, int]]] = {}
        held_row: Dict[int, int] = {}
        excluded = set(self._dropped_eps) | discard
        for st in self._envs:
            for s, module_id in enumerate(st.mod):
                if module_id is not None and st.pending[s] and st.eps[s] not in excluded:
                    held_back.setdefault(module_id, []).append((st, s))
                    held_row[st.eps[s]] = st.row[s]

        batches: Dict[str, Dict[str, Any]] = {}
        for module_id, info in self._modules.items():
            buf = info.buffer
            n = buf.n
            if n == 0:
                continue
            keep = np.ones(n, bool)
            carry = [st.row[s] for st, s in held_back.get(module_id, [])]
            if carry:
                keep[np.asarray(carry, dtype=np.int64)] = False
            if excluded:
                keep &= ~np.isin(buf.eps_id[:n], np.fromiter(excluded, np.int64, len(excluded)))
            idx = np.flatnonzero(keep)
            if len(idx):
                order = idx[np.argsort(buf.eps_id[idx], kind="stable")]
                batches[module_id] = self._module_batch(
                    module_id, info, order, explore, queued, held_row)
            # Held-back actions move to the front of the buffer for the next call.
            new_rows = buf.keep_rows(carry)
            for (st, s), r in zip(held_back.get(module_id, []), new_rows.tolist()):
                st.row[s] = r
        self._dropped_eps.clear()
        self._trunc_boot.clear()
        if self._global_input is not None:
            share_global_inputs(batches)
        return batches

    def _module_batch(self, module_id: str, info: ModuleInfo, order: np.ndarray, explore: bool,
                      queued: Dict[int, Tuple[str, int]], held_row: Dict[int, int]) -> Dict[str, Any]:
        buf = info.buffer
        batch: Dict[str, Any] = {}
        for name in buf.columns:
            if name == Columns.ACTION_LOGP and not explore:
                continue
            batch[name] = buf.gather(name, order)
        batch[Columns.REWARDS] = buf.rewards[order]
        batch[Columns.TERMINATEDS] = buf.terminateds[order]
        batch[Columns.TRUNCATEDS] = buf.truncateds[order]
        eps_sorted = buf.eps_id[order]
        batch[Columns.EPS_ID] = eps_sorted
        starts = np.flatnonzero(np.r_[True, eps_sorted[1:] != eps_sorted[:-1]])
        seq_lens = np.diff(np.r_[starts, len(order)]).astype(np.int64)
        batch[Columns.SEQ_LENS] = seq_lens
        last = starts + seq_lens - 1

        obs_all = batch[Columns.OBS]
        num_segments = len(starts)
        boot_obs = zeros_like_rows(obs_all, num_segments)
        state_col = batch.get(Columns.STATE_IN)
        boot_state = zeros_like_rows(state_col, num_segments) if state_col is not None else None
        global_col = batch.get(GLOBAL_OBS)
        boot_global = zeros_like_rows(global_col, num_segments) if global_col is not None else None
        terminateds = batch[Columns.TERMINATEDS]
        truncateds = batch[Columns.TRUNCATEDS]
        group = self._groups.get(module_id)
        for i, (eps, r) in enumerate(zip(eps_sorted[starts].tolist(), last.tolist())):
            if terminateds[r]:
                continue  # bootstrap value is 0: zeros are fine
            src_obs = src_state = src_global = None
            if truncateds[r]:
                src_obs, src_state, src_global = self._trunc_boot.get(eps, (None, None, None))
            elif eps in held_row:  # next obs = the obs of the held-back action
                row = held_row[eps]
                src_obs = take_rows(buf.columns[Columns.OBS], slice(row, row + 1))
                if state_col is not None:
                    src_state = take_rows(buf.columns[Columns.STATE_IN], slice(row, row + 1))
                if global_col is not None:
                    src_global = buf.columns[GLOBAL_OBS][row:row + 1]
            elif eps in queued and group is not None and queued[eps][0] == module_id:
                pos = queued[eps][1]
                src_obs = take_rows(group.obs, slice(pos, pos + 1))
                if state_col is not None:
                    e, s = group.envs[pos], group.slots[pos]
                    src_state = {k: v[e, s][None] for k, v in info.state_store.items()}
                if global_col is not None and group.global_obs is not None:
                    src_global = group.global_obs[pos:pos + 1]
            if src_obs is None:  # no later observation known: repeat the last one
                src_obs = take_rows(obs_all, slice(r, r + 1))
            set_rows(boot_obs, i, take_rows(src_obs, 0))
            if boot_state is not None and src_state is not None:
                set_rows(boot_state, i, take_rows(src_state, 0))
            if boot_global is not None:
                boot_global[i] = (src_global if src_global is not None else global_col[r:r + 1])[0]
        batch[BOOTSTRAP_OBS] = boot_obs
        if boot_state is not None:
            batch[BOOTSTRAP_STATE_IN] = boot_state
        if boot_global is not None:
            batch[BOOTSTRAP_GLOBAL_OBS] = boot_global
        return batch

    def _metrics(self, batches: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        module_steps = {mid: int(len(b[Columns.EPS_ID])) for mid, b in batches.items()}
        agent_steps = sum(module_steps.values())
        self._num_env_steps_lifetime += self._num_env_steps_call
        self._num_agent_steps_lifetime += agent_steps
        metrics: Dict[str, Any] = {
            "num_episodes": len(self._completed),
            "num_env_steps_sampled": self._num_env_steps_call,
            "num_agent_steps_sampled": agent_steps,
            "num_module_steps_sampled": module_steps,
            "num_env_steps_sampled_lifetime": self._num_env_steps_lifetime,
            "num_agent_steps_sampled_lifetime": self._num_agent_steps_lifetime,
            "num_env_errors": self._num_env_errors,
            "num_episodes_dropped": self._num_episodes_dropped_call,
            "num_env_hangs": self._num_env_hangs,
        }
        counted = self._completed
        if self.metrics_num_episodes is not None:
            counted = counted[-self.metrics_num_episodes:]
        if counted:
            metrics["num_episodes_for_metrics"] = len(counted)
        metrics.update(episode_metrics(counted))
        return metrics
