"""The lockstep loop: one batched module forward per step, then every env steps once.

Each step groups the acting agents' observations by module, runs each
module's connector pipeline on the stacked batch, makes ONE forward call on
the whole ``MultiRLModule``, samples actions, writes each module's rows as
one block, steps every env and credits rewards to the row of each agent's
last action (turn-based agents may wait several steps for theirs).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping

import numpy as np
import torch

from marl.core.action_sampling import actions_from_outputs
from marl.core.columns import AGENT_INDEX, ENV_EPISODE_ID, ENV_T, GLOBAL_OBS, Columns
from marl.core.constants import SHARED_ENCODER_ID
from marl.core.nested import take_rows, to_numpy

from envs.sampling.actions import ActionAdapter, sample_categorical
from envs.sampling.episode import ID_SHIFT
from envs.sampling.pipelines import Pipeline, set_pipeline_state
from envs.sampling.recovery import all_finite, nonfinite_observation
from envs.sampling.slots import Collect, EnvState, Group, ModuleInfo


class LockstepLoop:
    """Runner mix-in: the per-step work of ``MultiAgentEnvRunner.sample()``."""

    def _module_info(self, module_id: str, agent: Any, st: EnvState) -> ModuleInfo:
        info = self._modules.get(module_id)
        if info is None:
            pipeline = Pipeline(self.env_to_module_connector, st.env,
                                 st.env.observation_space(agent))
            info = ModuleInfo(
                module_id, self.module[module_id], pipeline, self.num_envs,
                max(len(st.agents), 1),
                capacity=self.rollout_fragment_length * self.num_envs,
                adapter=ActionAdapter(self.module[module_id].action_space,
                                       self.normalize_actions, self.clip_actions))
            self._modules[module_id] = info
            self._module_origin[module_id] = (st.index, agent)
            if module_id in self._pending_connector_states:
                set_pipeline_state(pipeline, self._pending_connector_states.pop(module_id))
        return info

    def _first_appearance(self, st: EnvState, agent: Any, s: int) -> str:
        episode = st.episode
        module_id = self.policy_mapping_fn(agent, episode)
        valid = self.module.policy_module_ids
        if module_id not in valid:
            hint = ""
            if module_id == SHARED_ENCODER_ID or module_id in self.module:
                hint = f" ({module_id!r} is a non-policy module, e.g. a shared encoder)"
            raise ValueError(
                f"policy_mapping_fn mapped agent {agent!r} to module id {module_id!r}, which is "
                f"not a policy module of the MultiRLModule{hint}; valid module ids: {sorted(valid)}")
        st.mod[s] = module_id
        self._agent_eps_counter += 1
        st.eps[s] = (self.worker_index << ID_SHIFT) | self._agent_eps_counter
        episode.agent_ids.append(agent)
        st.live += 1
        info = self._module_info(module_id, agent, st)
        st.sink[s] = info
        if info.stateful or info.needs_prev_action or info.needs_prev_reward:
            info.ensure_slots(len(st.agents))
            e = st.index
            for k, v in info.initial_state.items():
                info.state_store[k][e, s] = v
            info.prev_reward_store[e, s] = 0.0
            if info.prev_action_store is not None:
                info.prev_action_store[e, s] = 0
        return module_id

    def _queue_observations(self, st: EnvState, obs: Mapping[Any, Any],
                            collect: Dict[str, Collect]) -> None:
        """Queue the observations of the agents that act next (skips finished agents)."""
        e = st.index
        slot_of = st.slot_of
        # Local bindings: these lists are only replaced at episode start, never here.
        done, mod, pending, eps = st.done, st.mod, st.pending, st.eps
        global_input = self._global_input
        g = global_input(st.env, obs) if global_input is not None else None
        for agent, o in obs.items():
            s = slot_of.get(agent)
            if s is None:
                s = st.add_slot(agent)
            if done[s]:
                continue
            module_id = mod[s]
            if module_id is None:
                module_id = self._first_appearance(st, agent, s)
            pending[s] = False
            c = collect.get(module_id)
            if c is None:
                c = collect[module_id] = Collect()
            if c.last_env is not st:
                c.last_env = st
                c.runs.append((st, len(c.raw)))
            c.raw.append(o)
            c.envs.append(e)
            c.slots.append(s)
            c.agents.append(agent)
            c.eps.append(eps[s])
            if g is not None:
                if s >= global_input.num_agents:
                    raise ValueError(
                        f"agent {agent!r} is not in the env's possible_agents {global_input.agents}: "
                        "a centralised critic needs a fixed agent set")
                c.globals.append(g)

    def _make_groups(self, collect: Dict[str, Collect]) -> Dict[str, Group]:
        """Stack each module's queued observations, check them, run its connectors."""
        stacked = {}
        for module_id, c in collect.items():
            if c.raw:
                batch = self._modules[module_id].pipeline.stack(c.raw)
                if not all_finite(batch):
                    return self._make_groups(self._on_nonfinite_observations(collect))
                stacked[module_id] = batch
        return {module_id: Group(self._modules[module_id].pipeline.transform(batch), collect[module_id])
                for module_id, batch in stacked.items()}

    def _on_nonfinite_observations(self, collect: Dict[str, Collect]) -> Dict[str, Collect]:
        """Name the env and agent (mode "raise"), or drop their episodes and return
        the queue without them plus the fresh episodes' first observations."""
        bad: Dict[int, Any] = {}
        for c in collect.values():
            for raw, e, agent in zip(c.raw, c.envs, c.agents):
                if e not in bad and nonfinite_observation({agent: raw}) is not None:
                    bad[e] = agent
        first_env, first_agent = next(iter(bad.items()))
        if self.nonfinite_env_values == "raise":
            self._nonfinite(self._envs[first_env], "observation", first_agent, "step()")
        kept = without_envs(collect, set(bad))
        for e, agent in bad.items():
            self._drop_episode(self._envs[e], f"returned a non-finite observation for agent {agent!r}",
                               kept, recreate=False)
        self._deadline.disarm()  # the resets re-armed it
        return kept

    def _on_nonfinite_reward(self, st: EnvState, rewards: Mapping[Any, Any],
                             collect: Dict[str, Collect]) -> None:
        agent = next(a for a, r in rewards.items() if not math.isfinite(r))
        if self.nonfinite_env_values == "raise":
            self._nonfinite(st, "reward", agent, "step()")
        self._drop_episode(st, f"returned a non-finite reward for agent {agent!r}", collect, recreate=False)

    def _step(self, explore: bool) -> None:
        """One lockstep step: one module forward pass, then every env steps once."""
        groups = self._groups
        envs = self._envs
        env_actions: List[Dict[Any, Any]] = [{} for _ in envs]
        if groups:
            self._act(groups, explore, env_actions)

        collect: Dict[str, Collect] = {}
        modules = self._modules
        num_stepped = 0
        deadline = self._deadline
        deadline.arm()
        try:
            for e, st in enumerate(envs):
                actions = env_actions[e]
                deadline.in_env_call = True  # (an attribute, not a method: this runs per env step)
                try:
                    obs, rewards, terms, truncs, _infos = st.env.step(actions)
                except Exception as exc:  # noqa: BLE001 - recovered: drop the episode, recreate the env
                    deadline.in_env_call = False
                    self._on_env_crash(st, exc, collect)
                    deadline.arm()
                    continue
                deadline.in_env_call = False
                st.action_log.append(actions)
                st.last_obs = obs
                st.ep_len += 1
                num_stepped += 1
                slot_of = st.slot_of
                ret = st.ret
                row_of = st.row
                sink = st.sink
                # Rewards: credited to the agent's last action (possibly an earlier step's).
                for agent, r in rewards.items():
                    s = slot_of.get(agent)
                    if s is None:
                        s = st.add_slot(agent)
                    ret[s] += r
                    row = row_of[s]
                    if row >= 0:
                        info = sink[s]
                        info.step_rows.append(row)
                        info.step_rewards.append(r)
                        if info.needs_prev_reward:
                            info.prev_reward_store[e, s] += r
                if rewards and not math.isfinite(sum(rewards.values())):
                    self._on_nonfinite_reward(st, rewards, collect)
                    continue
                if any(terms.values()) or any(truncs.values()):
                    self._on_dones(st, obs, terms, truncs)
                if not st.env.agents:
                    self._end_episode(st, obs)
                    self._reset_env(st, collect)
                    continue
                self._queue_observations(st, obs, collect)
                if st.live == 0:
                    self._end_episode(st, obs)
                    self._reset_env(st, collect)
        finally:
            deadline.disarm()
        self._num_env_steps_call += num_stepped
        for info in modules.values():
            if info.step_rows:
                # Each row appears once per step (one reward per agent per env step).
                info.buffer.rewards[info.step_rows] += info.step_rewards
                info.step_rows = []
                info.step_rewards = []
        self._groups = self._make_groups(collect)

    def _act(self, groups: Dict[str, Group], explore: bool,
             env_actions: List[Dict[Any, Any]]) -> None:
        """One forward call for all modules; record rows; fill the env action dicts."""
        modules = self._modules
        fwd: Dict[str, Dict[str, Any]] = {}
        extras: Dict[str, Dict[str, Any]] = {}
        for module_id, g in groups.items():
            info = modules[module_id]
            batch = {Columns.OBS: g.obs_t}
            extra: Dict[str, Any] = {}
            if info.stateful:
                state_in = {k: v[g.env_idx, g.slot_idx] for k, v in info.state_store.items()}
                extra[Columns.STATE_IN] = state_in
                batch[Columns.STATE_IN] = {k: torch.from_numpy(v) for k, v in state_in.items()}
            if info.needs_prev_action:
                prev_a = info.prev_action_store[g.env_idx, g.slot_idx]
                extra[Columns.PREV_ACTIONS] = prev_a
                batch[Columns.PREV_ACTIONS] = torch.from_numpy(prev_a)
            if info.needs_prev_reward:
                prev_r = info.prev_reward_store[g.env_idx, g.slot_idx]
                extra[Columns.PREV_REWARDS] = prev_r
                batch[Columns.PREV_REWARDS] = torch.from_numpy(prev_r)
            fwd[module_id] = batch
            extras[module_id] = extra

        module = self.module
        if explore:
            outputs = module.forward_exploration(fwd)
        else:
            outputs = module.forward_inference(fwd)
        results: Dict[str, Dict[str, Any]] = {}
        generic: List[str] = []
        for module_id in groups:
            info = modules[module_id]
            fast = None
            if self.fast_categorical_sampling and (
                    info.fast_explore if explore else info.fast_greedy):
                fast = sample_categorical(outputs[module_id], explore, self._np_rng)
            if fast is None:
                generic.append(module_id)
            else:
                results[module_id] = fast
        if generic:
            with self._sampling_context():
                for module_id in generic:
                    results[module_id] = actions_from_outputs(
                        module[module_id], outputs[module_id], explore)

        env_steps = None  # (episode id, step) per env, once per step, for global-input rows
        if self._global_input is not None:
            env_steps = (np.fromiter((st.episode.id_ if st.episode is not None else -1 for st in self._envs),
                                     np.int64, len(self._envs)),
                         np.fromiter((st.ep_len for st in self._envs), np.int64, len(self._envs)))
        for module_id, g in groups.items():
            info = modules[module_id]
            res = results[module_id]
            actions = to_numpy(res[Columns.ACTIONS])
            blocks: Dict[str, Any] = {Columns.OBS: g.obs, Columns.ACTIONS: actions}
            if explore and Columns.ACTION_LOGP in res:
                blocks[Columns.ACTION_LOGP] = to_numpy(res[Columns.ACTION_LOGP])
            if Columns.ACTION_DIST_INPUTS in res:
                blocks[Columns.ACTION_DIST_INPUTS] = to_numpy(res[Columns.ACTION_DIST_INPUTS])
            if Columns.VF_PREDS in res:
                blocks[Columns.VF_PREDS] = to_numpy(res[Columns.VF_PREDS])
            blocks.update(extras[module_id])
            if g.global_obs is not None:
                blocks[GLOBAL_OBS] = g.global_obs
                blocks[AGENT_INDEX] = g.slot_idx.astype(np.int64)
                blocks[ENV_EPISODE_ID] = env_steps[0][g.env_idx]
                blocks[ENV_T] = env_steps[1][g.env_idx]
            n = len(g.agents)
            r0 = info.buffer.append(n, g.eps, blocks)
            env_acts = info.adapter.to_env(actions)

            if info.stateful:
                state_out = res.get(Columns.STATE_OUT)
                if state_out is None:
                    raise KeyError(
                        f"module {module_id!r} is stateful (get_initial_state() is not empty) "
                        f"but its forward pass returned no {Columns.STATE_OUT!r}")
                for k, v in state_out.items():
                    info.state_store[k][g.env_idx, g.slot_idx] = to_numpy(v)
            if info.needs_prev_action:
                info.prev_action_store[g.env_idx, g.slot_idx] = info.adapter.env_format_array(actions)
            if info.needs_prev_reward:
                info.prev_reward_store[g.env_idx, g.slot_idx] = 0.0

            runs = g.runs
            for j, (st, a) in enumerate(runs):
                b = runs[j + 1][1] if j + 1 < len(runs) else n
                env_actions[st.index].update(zip(g.agents[a:b], env_acts[a:b]))
                row_of, pending = st.row, st.pending
                for s, row in zip(g.slots[a:b], range(r0 + a, r0 + b)):
                    row_of[s] = row
                    pending[s] = True

    def _on_dones(self, st: EnvState, obs: Mapping[Any, Any], terms: Mapping[Any, Any],
                  truncs: Mapping[Any, Any]) -> None:
        for agent in {**terms, **truncs}:
            terminated = bool(terms.get(agent, False))
            truncated = bool(truncs.get(agent, False))
            if not (terminated or truncated):
                continue
            s = st.slot_of.get(agent)
            if s is None or st.mod[s] is None or st.done[s]:
                continue
            st.done[s] = True
            st.live -= 1
            row = st.row[s]
            if row < 0:
                continue
            info = self._modules[st.mod[s]]
            st.pending[s] = False
            if terminated:
                info.buffer.terminateds[row] = True
            else:
                info.buffer.truncateds[row] = True
                self._store_trunc_bootstrap(info, st, s, row, obs.get(agent))

    def _store_trunc_bootstrap(self, info: ModuleInfo, st: EnvState, s: int, row: int,
                               raw_obs: Any) -> None:
        """Keep the (post-connector) final observation of a truncated agent for bootstrapping."""
        if raw_obs is not None:
            boot_obs = info.pipeline([raw_obs])
        else:  # the env did not return a final observation: fall back to the last one seen
            boot_obs = take_rows(info.buffer.columns[Columns.OBS], slice(row, row + 1))
        state = None
        if info.stateful:
            state = {k: v[st.index, s][None].copy() for k, v in info.state_store.items()}
        global_obs = None
        if self._global_input is not None:  # the env's state now, at the final observation
            global_obs = self._global_input(st.env, st.last_obs or {})[None]
        self._trunc_boot[st.eps[s]] = (boot_obs, state, global_obs)

    def _end_episode(self, st: EnvState, obs: Mapping[Any, Any]) -> None:
        # Agents the env dropped without a done flag count as truncated.
        for s, module_id in enumerate(st.mod):
            if module_id is None or st.done[s]:
                continue
            st.done[s] = True
            row = st.row[s]
            if row >= 0:
                info = self._modules[module_id]
                info.buffer.truncateds[row] = True
                st.pending[s] = False
                self._store_trunc_bootstrap(info, st, s, row, obs.get(st.agents[s]))
        st.live = 0
        agent_returns: Dict[Any, float] = {}
        module_returns: Dict[str, float] = {}
        for s, module_id in enumerate(st.mod):
            if module_id is None:
                continue
            agent_returns[st.agents[s]] = st.ret[s]
            module_returns[module_id] = module_returns.get(module_id, 0.0) + st.ret[s]
        self._completed.append((float(sum(st.ret)), st.ep_len, agent_returns, module_returns))
        st.consecutive_crashes = 0
        self._num_episodes_lifetime += 1



def without_envs(collect: Dict[str, Collect], envs: set) -> Dict[str, Collect]:
    """A copy of the step's observation queue without the entries of ``envs``."""
    out: Dict[str, Collect] = {}
    for module_id, c in collect.items():
        new = Collect()
        for (st, start), end in zip(c.runs, [r[1] for r in c.runs[1:]] + [len(c.raw)]):
            if st.index in envs:
                continue
            new.runs.append((st, len(new.raw)))
            new.last_env = st
            new.raw.extend(c.raw[start:end])
            new.envs.extend(c.envs[start:end])
            new.slots.extend(c.slots[start:end])
            new.agents.extend(c.agents[start:end])
            new.eps.extend(c.eps[start:end])
            new.globals.extend(c.globals[start:end])
        out[module_id] = new
    return out
