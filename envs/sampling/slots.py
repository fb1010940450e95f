"""Per-module and per-env bookkeeping of the lockstep loop.

Agents get fixed slots per env (``possible_agents``, then late joiners), so
per-agent data (recurrent states, previous actions) lives in arrays indexed
``[env_index, slot]`` and one step touches them with vectorised reads/writes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import gymnasium as gym
import numpy as np

from marl.core.nested import to_numpy, to_tensor
from marl.core.rl_module import RLModule
from marl.distributions import TorchCategorical

from envs.sampling.actions import ActionAdapter
from envs.sampling.buffers import ModuleStepBuffer
from envs.sampling.episode import EpisodeHandle
from envs.sampling.pipelines import Pipeline

class ModuleInfo:
    """What the runner keeps per module id: pipeline, buffer, recurrent state store."""

    __slots__ = ("module_id", "module", "pipeline", "buffer", "adapter", "fast_explore", "fast_greedy",
                 "step_rows", "step_rewards", "stateful",
                 "initial_state", "state_store", "needs_prev_action", "needs_prev_reward",
                 "prev_action_store", "prev_reward_store")

    def __init__(self, module_id: str, module: RLModule, pipeline: Pipeline, num_envs: int,
                 num_slots: int, capacity: int, adapter: ActionAdapter) -> None:
        self.module_id = module_id
        self.module = module
        self.pipeline = pipeline
        self.buffer = ModuleStepBuffer(capacity)
        self.adapter = adapter
        # Rewards of the current step, added to the buffer in one vectorised op.
        self.step_rows: List[int] = []
        self.step_rewards: List[float] = []
        # Exactly TorchCategorical (not a subclass that may change sampling):
        # the runner's fast sampler gives the same distribution.
        try:
            self.fast_explore = module.get_exploration_action_dist_cls() is TorchCategorical
            self.fast_greedy = module.get_inference_action_dist_cls() is TorchCategorical
        except Exception:  # noqa: BLE001 - no default distribution: the generic path decides
            self.fast_explore = self.fast_greedy = False
        init = module.get_initial_state() or {}
        self.stateful = bool(init)
        self.initial_state = {k: to_numpy(v) for k, v in init.items()}
        self.state_store: Dict[str, np.ndarray] = {
            k: np.zeros((num_envs, num_slots) + v.shape, v.dtype) for k, v in self.initial_state.items()
        }
        self.needs_prev_action = module.needs_prev_actions()
        self.needs_prev_reward = module.needs_prev_rewards()
        self.prev_action_store: Optional[np.ndarray] = None
        self.prev_reward_store = np.zeros((num_envs, num_slots), np.float32)
        if self.needs_prev_action:
            space = module.action_space
            if isinstance(space, gym.spaces.Discrete):
                shape, dtype = (), np.int64
            elif isinstance(space, gym.spaces.MultiDiscrete):
                shape, dtype = tuple(space.shape), np.int64
            else:
                shape, dtype = tuple(space.shape), np.float32
            self.prev_action_store = np.zeros((num_envs, num_slots) + shape, dtype)

    def ensure_slots(self, num_slots: int) -> None:
        """Grow the per-(env, slot) stores when late-joining agents add slots."""
        def grow(a: np.ndarray) -> np.ndarray:
            if a.shape[1] >= num_slots:
                return a
            new = np.zeros((a.shape[0], max(num_slots, 2 * a.shape[1])) + a.shape[2:], a.dtype)
            new[:, : a.shape[1]] = a
            return new

        self.state_store = {k: grow(v) for k, v in self.state_store.items()}
        self.prev_reward_store = grow(self.prev_reward_store)
        if self.prev_action_store is not None:
            self.prev_action_store = grow(self.prev_action_store)


class EnvState:
    """One env and its current episode, with per-agent-slot bookkeeping in lists.

    Slots: a fixed agent order per env (``possible_agents``, then late joiners
    appended), so per-agent data lives at ``[env_index, slot]`` in arrays.
    """

    __slots__ = ("index", "env", "episode", "slot_of", "agents", "mod", "eps", "row", "pending",
                 "done", "ret", "sink", "live", "ep_len", "episodes_started", "num_recreations",
                 "consecutive_crashes", "reset_seed", "action_log", "last_obs")

    def __init__(self, index: int, env: Any) -> None:
        self.index = index
        self.env = env
        self.episode: Optional[EpisodeHandle] = None
        self.slot_of: Dict[Any, int] = {}
        self.agents: List[Any] = []
        self.mod: List[Optional[str]] = []
        self.eps: List[int] = []
        self.row: List[int] = []
        self.pending: List[bool] = []
        self.done: List[bool] = []
        self.ret: List[float] = []
        self.sink: List[Optional[ModuleInfo]] = []  # the module info of the slot's module
        self.live = 0
        self.ep_len = 0
        self.num_recreations = 0
        self.consecutive_crashes = 0
        # Exact resume: an episode is its reset seed plus the env actions since.
        self.episodes_started = 0
        self.reset_seed: Optional[int] = None
        self.action_log: List[Dict[Any, Any]] = []
        self.last_obs: Any = None
        for agent in getattr(env, "possible_agents", []) or []:
            self.add_slot(agent)

    def add_slot(self, agent: Any) -> int:
        s = len(self.agents)
        self.slot_of[agent] = s
        self.agents.append(agent)
        self.mod.append(None)
        self.eps.append(-1)
        self.row.append(-1)
        self.pending.append(False)
        self.done.append(False)
        self.ret.append(0.0)
        self.sink.append(None)
        return s

    def clear_episode(self, episode: EpisodeHandle) -> None:
        self.episode = episode
        n = len(self.agents)
        self.mod = [None] * n
        self.eps = [-1] * n
        self.row = [-1] * n
        self.pending = [False] * n
        self.done = [False] * n
        self.ret = [0.0] * n
        self.sink = [None] * n
        self.live = 0
        self.ep_len = 0

    def episode_eps_ids(self) -> List[int]:
        return [e for e, m in zip(self.eps, self.mod) if m is not None]


class Collect:
    """Raw observations of one module gathered during a step (Python lists, one entry per agent)."""

    __slots__ = ("raw", "envs", "slots", "agents", "eps", "runs", "last_env", "globals")

    def __init__(self) -> None:
        # One (env state, first position) per env: each env's agents are contiguous.
        self.runs: List[Tuple[Any, int]] = []
        self.last_env: Any = None
        self.raw: List[Any] = []
        self.envs: List[int] = []
        self.slots: List[int] = []
        self.agents: List[Any] = []
        self.eps: List[int] = []
        #: Per entry, the env's global input at this step (only for a centralised critic).
        self.globals: List[np.ndarray] = []


class Group:
    """The agents of one module that act at the next step, with post-connector observations."""

    __slots__ = ("obs", "obs_t", "envs", "slots", "agents", "eps", "runs", "_env_idx", "_slot_idx",
                 "global_obs")

    def __init__(self, obs: Any, c: Collect, global_obs: Optional[np.ndarray] = None) -> None:
        self.obs = obs
        if global_obs is None and c.globals:
            global_obs = np.stack(c.globals)
        self.global_obs = global_obs
        self.obs_t = to_tensor(obs)
        self.envs = c.envs
        self.slots = c.slots
        self.agents = c.agents
        self.runs = c.runs
        self.eps = np.asarray(c.eps, dtype=np.int64)
        self._env_idx: Optional[np.ndarray] = None
        self._slot_idx: Optional[np.ndarray] = None

    @property
    def env_idx(self) -> np.ndarray:
        """Env index per row (built on demand: only per-agent stores need it)."""
        if self._env_idx is None:
            self._env_idx = np.asarray(self.envs, dtype=np.intp)
        return self._env_idx

    @property
    def slot_idx(self) -> np.ndarray:
        """Agent slot per row (built on demand)."""
        if self._slot_idx is None:
            self._slot_idx = np.asarray(self.slots, dtype=np.intp)
        return self._slot_idx
