"""Agent groups that share a module: padded observations, masked actions, agent ids.

Why: a module has one observation and one action space, but the agents a
researcher wants to share it may differ (mpe2's speaker and listener), and
identical agents sharing one network cannot act differently unless they
know who they are. ``AgentSpacesEnv`` wraps a ParallelEnv:

- ``pad_agent_spaces``: within each group of agents that map to the same
  module, 1-D Box observations are zero-padded at the end to the group's
  widest, and Discrete actions become ``Discrete(max n)`` with an action
  mask (``{"observation", "action_mask"}``, which the default modules
  honour: a masked action is never sampled, nor chosen greedily). An agent's
  own actions pass through unchanged; an action outside its own space
  (only possible with a module that ignores the mask) is an error naming
  the agent, never silently replaced (SuperSuit's ``pad_action_space``
  replaces it with 0).
- ``add_agent_id``: a one-hot of the agent's index in ``possible_agents``
  appended to its observation (EPyMARL's ``obs_agent_id``), after padding.

Observations that already carry an action mask keep it (padded with 0s).
Global state (``state()``, ``state_space``) passes through unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import gymnasium as gym
import numpy as np

from marl.models.action_masking import ACTION_MASK_KEY, OBSERVATION_KEY


def _split(space: gym.Space) -> Tuple[gym.Space, Optional[gym.Space]]:
    if isinstance(space, gym.spaces.Dict) and set(space.spaces) == {OBSERVATION_KEY, ACTION_MASK_KEY}:
        return space[OBSERVATION_KEY], space[ACTION_MASK_KEY]
    return space, None


class _AgentLayout:
    """How one agent's observation and action map to its group's shared spaces."""

    def __init__(self, obs_space: gym.Space, act_space: gym.Space, width: int, num_actions: Optional[int],
                 mask: bool, agent_id: Optional[np.ndarray]) -> None:
        self.inner, self.inner_mask = _split(obs_space)
        self.own_width = int(self.inner.shape[0])
        self.width = width
        self.act_space = act_space
        self.num_actions = num_actions
        self.mask = mask
        self.agent_id = agent_id
        self.own_mask = None
        if mask:
            self.own_mask = np.zeros(num_actions, np.int8)
            self.own_mask[: int(act_space.n)] = 1

    def observation(self, obs: Any) -> Any:
        inner = obs[OBSERVATION_KEY] if self.inner_mask is not None else obs
        x = np.asarray(inner, dtype=self.inner.dtype).reshape(-1)
        if self.width > self.own_width:
            x = np.concatenate([x, np.zeros(self.width - self.own_width, x.dtype)])
        if self.agent_id is not None:
            x = np.concatenate([x, self.agent_id.astype(x.dtype)])
        if not self.mask:
            return x
        mask = self.own_mask.copy()
        if self.inner_mask is not None:
            given = np.asarray(obs[ACTION_MASK_KEY], np.int8)
            mask[: len(given)] = given
        return {OBSERVATION_KEY: x, ACTION_MASK_KEY: mask}


class AgentSpacesEnv:
    """A ParallelEnv whose agents of one group share observation and action spaces."""

    def __init__(self, env: Any, groups: Mapping[Any, Any], *, pad: bool, add_agent_id: bool) -> None:
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.metadata = getattr(env, "metadata", {})
        index = {a: i for i, a in enumerate(self.possible_agents)}
        members: Dict[Any, List[Any]] = {}
        for agent in self.possible_agents:
            members.setdefault(groups.get(agent, agent) if pad else agent, []).append(agent)
        self._layouts: Dict[Any, _AgentLayout] = {}
        self._obs_spaces: Dict[Any, gym.Space] = {}
        self._act_spaces: Dict[Any, gym.Space] = {}
        for group, agents in members.items():
            obs_spaces = {a: env.observation_space(a) for a in agents}
            act_spaces = {a: env.action_space(a) for a in agents}
            width, num_actions, mask = self._group_shape(group, obs_spaces, act_spaces)
            id_width = len(self.possible_agents) if add_agent_id else 0
            for a in agents:
                agent_id = np.eye(len(self.possible_agents), dtype=np.float32)[index[a]] if add_agent_id else None
                self._layouts[a] = _AgentLayout(obs_spaces[a], act_spaces[a], width, num_actions, mask, agent_id)
            # One space per group: the elementwise widest bounds of its agents.
            bounds = [self._bounds(self._layouts[a], id_width) for a in agents]
            low = np.min([b[0] for b in bounds], axis=0)
            high = np.max([b[1] for b in bounds], axis=0)
            layout = self._layouts[agents[0]]
            box = gym.spaces.Box(low.astype(layout.inner.dtype), high.astype(layout.inner.dtype),
                                 dtype=layout.inner.dtype)
            space = box if not mask else gym.spaces.Dict(
                {OBSERVATION_KEY: box, ACTION_MASK_KEY: gym.spaces.Box(0, 1, (num_actions,), np.int8)})
            for a in agents:
                self._obs_spaces[a] = space
                self._act_spaces[a] = gym.spaces.Discrete(num_actions) if mask else act_spaces[a]

    @staticmethod
    def _group_shape(group: Any, obs_spaces: Dict[Any, gym.Space], act_spaces: Dict[Any, gym.Space]):
        widths = {}
        for a, space in obs_spaces.items():
            inner, _ = _split(space)
            if not (isinstance(inner, gym.spaces.Box) and len(inner.shape) == 1):
                raise ValueError(
                    f"agent {a!r} (module {group!r}) observes {space}: padding and agent ids need 1-D Box "
                    "observations (optionally with an action mask); flatten or preprocess them first")
            widths[a] = int(inner.shape[0])
        acts = list(act_spaces.values())
        same_actions = all(s == acts[0] for s in acts)
        num_actions, mask = None, False
        if not same_actions:
            if not all(isinstance(s, gym.spaces.Discrete) and int(s.start) == 0 for s in acts):
                raise ValueError(
                    f"agents of module {group!r} have different action spaces "
                    f"{ {a: str(s) for a, s in act_spaces.items()} }: only Discrete actions can be padded "
                    "(with a mask); map these agents to different modules")
            num_actions, mask = max(int(s.n) for s in acts), True
        elif any(_split(s)[1] is not None for s in obs_spaces.values()):
            num_actions, mask = int(acts[0].n), True  # keep the env's own masks
        return max(widths.values()), num_actions, mask

    @staticmethod
    def _bounds(layout: _AgentLayout, id_width: int) -> Tuple[np.ndarray, np.ndarray]:
        inner = layout.inner
        pad = np.zeros(layout.width - layout.own_width)
        low = np.concatenate([inner.low.reshape(-1), pad, np.zeros(id_width)])
        high = np.concatenate([inner.high.reshape(-1), pad, np.ones(id_width)])
        return low, high

    # ------------------------------------------------------------ ParallelEnv
    @property
    def agents(self) -> List[Any]:
        return self.env.agents

    def observation_space(self, agent: Any) -> gym.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: Any) -> gym.Space:
        return self._act_spaces[agent]

    def _observations(self, obs: Mapping[Any, Any]) -> Dict[Any, Any]:
        return {a: self._layouts[a].observation(o) for a, o in obs.items()}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._observations(obs), infos

    def step(self, actions: Mapping[Any, Any]):
        for agent, action in actions.items():
            layout = self._layouts[agent]
            if layout.mask and not layout.act_space.contains(np.int64(action)):
                raise ValueError(
                    f"agent {agent!r} got action {action!r}, outside its own space {layout.act_space}: "
                    "its module ignored the action mask of the padded action space")
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        return self._observations(obs), rewards, terms, truncs, infos

    def __getattr__(self, name: str) -> Any:  # state(), state_space, render(), close(), unwrapped, ...
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


def wrap_env_creator(creator: Any, env_config: Optional[dict], policy_mapping_fn: Any, *,
                     pad: bool, add_agent_id: bool) -> Any:
    """``creator`` wrapped in ``AgentSpacesCreator`` (or itself when neither option is on).

    The groups are the modules the agents map to, asked once per agent of
    ``possible_agents`` with a stand-in episode (as module spaces are).
    """
    if not (pad or add_agent_id):
        return creator
    from envs.sampling.episode import EpisodeHandle

    probe = creator(dict(env_config or {}))
    try:
        agents = list(probe.possible_agents)
    finally:
        probe.close()
    episode = EpisodeHandle(id_=-1, env_index=0, agent_ids=list(agents))
    groups = {agent: policy_mapping_fn(agent, episode) for agent in agents}
    return AgentSpacesCreator(creator, groups, pad=pad, add_agent_id=add_agent_id)


class AgentSpacesCreator:
    """A picklable ``env_config -> AgentSpacesEnv`` around another env creator."""

    def __init__(self, creator: Any, groups: Mapping[Any, Any], *, pad: bool, add_agent_id: bool) -> None:
        self.creator = creator
        self.groups = dict(groups)
        self.pad = bool(pad)
        self.add_agent_id = bool(add_agent_id)

    def __call__(self, env_config: Optional[dict] = None) -> AgentSpacesEnv:
        return AgentSpacesEnv(self.creator(env_config), self.groups, pad=self.pad, add_agent_id=self.add_agent_id)

    def __getattr__(self, name: str) -> Any:  # e.g. the registry creator's description
        if name == "creator":
            raise AttributeError(name)
        return getattr(self.creator, name)
