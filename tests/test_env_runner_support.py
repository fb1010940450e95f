"""Test envs, tiny modules and batch checks shared by the env runner tests (no tests here).

The envs are module-level classes so that worker processes can unpickle them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import gymnasium as gym
import numpy as np
import torch
from pettingzoo import ParallelEnv
from torch import nn

from envs.env_runner import BOOTSTRAP_OBS, MultiAgentEnvRunner
from marl.core import Columns, MultiRLModuleSpec, RLModuleSpec, TorchRLModule
from marl.distributions import get_default_dist_cls

# --------------------------------------------------------------------------
# A scripted env: agents die at different times, one joins late, one is truncated.
# --------------------------------------------------------------------------

AGENT_INDEX = {"a": 0, "b": 1, "c": 2, "late": 3}
# agent -> (first env time at which it observes, number of actions, how it ends)
SCRIPT = {
    "a": (0, 3, "terminated"),
    "b": (0, 5, "terminated"),
    "c": (0, 7, "truncated"),
    "late": (2, 3, "terminated"),
}
EPISODE_LEN = 7


def scripted_reward(agent: str, t: int) -> float:
    """The reward for ``agent``'s action at env time ``t`` (unique per step, so alignment shows)."""
    return 10.0 * AGENT_INDEX[agent] + t


def scripted_return(agent: str) -> float:
    first, n, _ = SCRIPT[agent]
    return sum(scripted_reward(agent, t) for t in range(first, first + n))


SCRIPTED_EPISODE_RETURN = sum(scripted_return(a) for a in SCRIPT)


class ScriptedEnv(ParallelEnv):
    """Observation of agent i at env time t is ``[i, t]``; see SCRIPT for who lives when.

    ``late`` is in ``possible_agents`` but first observes at t=2 (it joins
    after the episode started); ``c`` is truncated at the episode's last step
    (its final observation ``[2, 7]`` comes back with the truncation).
    """

    metadata = {"name": "scripted_v0"}

    def __init__(self, config: Optional[dict] = None) -> None:
        self.possible_agents = list(SCRIPT)
        self.agents: List[str] = []
        self._obs_space = gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)
        self._act_space = gym.spaces.Discrete(2)
        self.t = 0
        self.seen_actions: List[Dict[str, Any]] = []

    def observation_space(self, agent: str) -> gym.Space:
        return self._obs_space

    def action_space(self, agent: str) -> gym.Space:
        return self._act_space

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([AGENT_INDEX[agent], self.t], np.float32)

    def _alive(self, agent: str, t: int) -> bool:
        first, n, _ = SCRIPT[agent]
        return first <= t < first + n

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        self.t = 0
        self.agents = [a for a in self.possible_agents if self._alive(a, 0)]
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: Dict[str, Any]):
        self.seen_actions.append(dict(actions))
        missing = [a for a in self.agents if a not in actions]
        assert not missing, f"no action for live agents {missing} at t={self.t}"
        t = self.t
        rewards = {a: scripted_reward(a, t) for a in self.agents}
        self.t += 1
        obs, terms, truncs = {}, {}, {}
        for a in self.agents:
            first, n, how = SCRIPT[a]
            last = t == first + n - 1
            terms[a] = last and how == "terminated"
            truncs[a] = last and how == "truncated"
            obs[a] = self._obs(a)
        survivors = [a for a in self.agents if not (terms[a] or truncs[a])]
        joiners = [a for a in self.possible_agents
                   if a not in self.agents and self._alive(a, self.t) and SCRIPT[a][0] == self.t]
        for a in joiners:
            obs[a] = self._obs(a)
        self.agents = survivors + joiners
        return obs, rewards, terms, truncs, {a: {} for a in obs}


class CrashingEnv(ScriptedEnv):
    """ScriptedEnv whose ``step`` raises on the ``crash_at``-th step of the first instance."""

    instances = 0

    def __init__(self, config: Optional[dict] = None) -> None:
        super().__init__(config)
        CrashingEnv.instances += 1
        self.crash_at = (config or {}).get("crash_at", 5) if CrashingEnv.instances == 1 else None
        self.num_steps = 0

    def step(self, actions):
        self.num_steps += 1
        if self.crash_at is not None and self.num_steps == self.crash_at:
            raise RuntimeError("simulated env crash")
        return super().step(actions)


class HeterogeneousEnv(ScriptedEnv):
    """Like ScriptedEnv, but agent ``b`` observes 3 numbers instead of 2."""

    def observation_space(self, agent: str) -> gym.Space:
        if agent == "b":
            return gym.spaces.Box(-1000.0, 1000.0, (3,), np.float32)
        return self._obs_space


# --------------------------------------------------------------------------
# Tiny modules.
# --------------------------------------------------------------------------


class TinyPolicy(TorchRLModule):
    """Linear logits and value on the flattened observation; honours action masks."""

    def setup(self) -> None:
        space = self.observation_space
        self.masked = isinstance(space, gym.spaces.Dict)
        inner = space["observation"] if self.masked else space
        in_dim = int(np.prod(inner.shape))
        out_dim = get_default_dist_cls(self.action_space).required_input_dim(self.action_space)
        self.pi = nn.Linear(in_dim, out_dim)
        self.vf = nn.Linear(in_dim, 1)
        log_std = self.model_config.get("init_log_std")
        if log_std is not None:  # Box actions: wide Gaussians, so that clipping happens
            with torch.no_grad():
                half = out_dim // 2
                self.pi.weight[half:] = 0.0
                self.pi.bias[half:] = float(log_std)

    def _encode(self, batch: Dict[str, Any]):
        obs = batch[Columns.OBS]
        mask = None
        if self.masked:
            obs, mask = obs["observation"], obs["action_mask"]
        x = torch.as_tensor(obs).float()
        return x.reshape(x.shape[0], -1), mask

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        x, mask = self._encode(batch)
        logits = self.pi(x)
        if mask is not None:
            logits = logits.masked_fill(torch.as_tensor(mask) == 0, torch.finfo(logits.dtype).min)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.VF_PREDS: self.vf(x).squeeze(-1)}


class CounterRecurrent(TinyPolicy):
    """A 'recurrent' module whose state counts its steps: ``h_out = h_in + 1``."""

    def get_initial_state(self) -> Dict[str, torch.Tensor]:
        return {"h": torch.zeros(1)}

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        out = super()._forward(batch)
        out[Columns.STATE_OUT] = {"h": torch.as_tensor(batch[Columns.STATE_IN]["h"]) + 1.0}
        return out


def tiny_spec(module_class: type = TinyPolicy, model_config: Optional[dict] = None) -> MultiRLModuleSpec:
    return MultiRLModuleSpec(rl_module_specs=RLModuleSpec(module_class=module_class,
                                                          model_config=model_config or {}))


def make_runner(env_creator, *, module_class: type = TinyPolicy, model_config: Optional[dict] = None,
                module_ids: Optional[List[str]] = None, torch_seed: int = 0,
                **kwargs: Any) -> MultiAgentEnvRunner:
    """A runner with freshly initialised (seeded) tiny modules for ``module_ids``."""
    torch.manual_seed(torch_seed)
    spec = tiny_spec(module_class, model_config)
    if module_ids is not None:
        spec = MultiRLModuleSpec(rl_module_specs={
            mid: RLModuleSpec(module_class=module_class, model_config=model_config or {})
            for mid in module_ids})
    return MultiAgentEnvRunner(env_creator=env_creator, module_spec=spec, **kwargs)


# --------------------------------------------------------------------------
# Batch checks.
# --------------------------------------------------------------------------


def num_rows(batch: Dict[str, Any]) -> int:
    return len(batch[Columns.EPS_ID])


def segments(batch: Dict[str, Any]):
    """Yield ``(start, end)`` row ranges of the batch's segments, checking the layout."""
    seq_lens = batch[Columns.SEQ_LENS]
    assert seq_lens.dtype == np.int64
    assert int(seq_lens.sum()) == num_rows(batch), "SEQ_LENS must sum to N"
    start = 0
    for length in seq_lens.tolist():
        assert length > 0
        yield start, start + length
        start += length


def check_batch_layout(batch: Dict[str, Any]) -> None:
    """Shapes, dtypes and the per-segment invariants every batch must satisfy."""
    n = num_rows(batch)
    assert batch[Columns.REWARDS].dtype == np.float32 and batch[Columns.REWARDS].shape == (n,)
    assert batch[Columns.TERMINATEDS].dtype == bool and batch[Columns.TRUNCATEDS].dtype == bool
    assert batch[Columns.EPS_ID].dtype == np.int64
    obs = batch[Columns.OBS]
    first_obs_leaf = obs if isinstance(obs, np.ndarray) else next(iter(obs.values()))
    assert len(first_obs_leaf) == n
    num_segments = len(batch[Columns.SEQ_LENS])
    boot = batch[BOOTSTRAP_OBS]
    boot_leaf = boot if isinstance(boot, np.ndarray) else next(iter(boot.values()))
    assert len(boot_leaf) == num_segments
    seen_eps = set()
    for start, end in segments(batch):
        eps = batch[Columns.EPS_ID][start:end]
        assert (eps == eps[0]).all(), "EPS_ID must be constant within a segment"
        assert eps[0] not in seen_eps, "one segment per agent-episode per call"
        seen_eps.add(int(eps[0]))
        done = batch[Columns.TERMINATEDS][start:end] | batch[Columns.TRUNCATEDS][start:end]
        assert not done[:-1].any(), "done flags only on a segment's last step"
        assert not (batch[Columns.TERMINATEDS][start:end] & batch[Columns.TRUNCATEDS][start:end]).any()
