"""N independent copies of a gymnasium env as one PettingZoo ParallelEnv.

RLlib's ``make_multi_agent(env_id)`` builds the multi-agent "hello world"
envs of its examples and tuned configs (``MultiAgentCartPole``,
``MultiAgentPendulum``): every agent runs its own copy, the copies never
interact. ``IndependentCopiesEnv`` rebuilds that on PettingZoo's
``ParallelEnv``, so these envs run through exactly the same code path as
every other multi-agent env of the library; a subclass names the copied
env (``ENV_ID``). Users import them as ``from envs import MultiAgentCartPole,
MultiAgentPendulum``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

#: The keys the config understands; anything else is a typo.
_CONFIG_KEYS = ("num_agents", "render_mode")


class IndependentCopiesEnv(ParallelEnv):
    """N independent copies of ``ENV_ID``, agent ids the ints ``0 .. N-1``.

    Behaviour the caller can rely on:

    - An agent whose copy terminates or truncates returns its final observation
      with that flag and leaves ``agents``; the others go on. The episode is
      over when ``agents`` is empty. Each copy keeps its env's own time limit.
    - ``reset(seed=s)`` seeds copy ``i`` with ``s + i``, so the same seed gives the
      same observations while the copies still start from different states.
      ``reset()`` without a seed continues each copy's random stream.
    - Actions for agents that are no longer in ``agents`` are ignored, the same
      as PettingZoo's own parallel envs do for agents that have finished.

    Args:
        config: ``{"num_agents": N}`` (default 2); optionally ``"render_mode"``
            (passed to every copy, ``"rgb_array"`` renders the copies side by side).
            Taking one ``config`` dict is what lets
            ``.environment(MultiAgentCartPole, env_config={...})`` build it.
    """

    #: The gymnasium id every agent gets a copy of.
    ENV_ID: ClassVar[str] = ""
    metadata: dict[str, Any] = {"name": "independent_copies", "render_modes": ["rgb_array"],
                                "is_parallelizable": True}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        name = type(self).__name__
        config = dict(config or {})
        unknown = sorted(set(config) - set(_CONFIG_KEYS), key=str)
        if unknown:
            raise ValueError(
                f"{name} got unknown config key(s) {unknown}; "
                f"expected only {list(_CONFIG_KEYS)}, e.g. {{'num_agents': 2}}."
            )
        num_agents = config.get("num_agents", 2)
        if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)) or num_agents < 1:
            raise ValueError(f"{name} config 'num_agents' must be an int >= 1, got {num_agents!r}.")
        self.render_mode: str | None = config.get("render_mode")
        self.possible_agents: list[int] = list(range(int(num_agents)))
        self.agents: list[int] = []
        self._envs: dict[int, gym.Env] = {
            agent: gym.make(self.ENV_ID, render_mode=self.render_mode) for agent in self.possible_agents
        }
        # All copies share one pair of spaces; keep the dicts PettingZoo code may read.
        first = self._envs[0]
        self.observation_spaces = {a: first.observation_space for a in self.possible_agents}
        self.action_spaces = {a: first.action_space for a in self.possible_agents}

    def observation_space(self, agent: int) -> gym.spaces.Space:
        """The copied env's observation space, for every agent."""
        return self.observation_spaces[self._check_agent(agent)]

    def action_space(self, agent: int) -> gym.spaces.Space:
        """The copied env's action space, for every agent."""
        return self.action_spaces[self._check_agent(agent)]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[int, np.ndarray], dict[int, dict[str, Any]]]:
        """Reset every copy; copy ``i`` is seeded with ``seed + i`` when a seed is given."""
        self.agents = list(self.possible_agents)
        observations: dict[int, np.ndarray] = {}
        infos: dict[int, dict[str, Any]] = {}
        for agent, env in self._envs.items():
            agent_seed = None if seed is None else int(seed) + agent
            observations[agent], infos[agent] = env.reset(seed=agent_seed, options=options)
        return observations, infos

    def step(self, actions: dict[int, Any]) -> tuple[
        dict[int, np.ndarray],
        dict[int, float],
        dict[int, bool],
        dict[int, bool],
        dict[int, dict[str, Any]],
    ]:
        """Step every live agent's copy with its action; finished agents leave ``agents``."""
        name = type(self).__name__
        if not self.agents:
            raise RuntimeError(
                f"{name}.step() called with no live agents: the episode is "
                "over (or reset() was never called); call reset() first."
            )
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise ValueError(
                f"{name}.step() is missing actions for live agent(s) {missing}; "
                f"expected one action per agent in {self.agents}, got keys {list(actions)}."
            )
        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            action = actions[agent]
            space = self.action_spaces[agent]
            # Box actions: the shape must fit; values out of bounds are the copied env's to clip
            # (Pendulum clips its torque), as they would be for a single-agent run.
            valid = (np.shape(action) == space.shape if isinstance(space, gym.spaces.Box)
                     else space.contains(action))
            if not valid:
                raise ValueError(
                    f"{name}: action {action!r} for agent {agent} is not in its action space {space}."
                )
            obs, reward, terminated, truncated, info = self._envs[agent].step(action)
            observations[agent] = obs
            rewards[agent] = float(reward)
            terminations[agent] = bool(terminated)
            truncations[agent] = bool(truncated)
            infos[agent] = info
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def render(self) -> np.ndarray | None:
        """All copies side by side (``render_mode="rgb_array"``); None without a render mode."""
        if self.render_mode is None:
            return None
        frames = [env.render() for env in self._envs.values()]
        return np.concatenate(frames, axis=1)

    def close(self) -> None:
        """Close every copy."""
        for env in self._envs.values():
            env.close()

    def _check_agent(self, agent: Any) -> int:
        if agent not in self.observation_spaces:
            raise KeyError(f"{type(self).__name__} has no agent {agent!r}; its agent ids are {self.possible_agents}.")
        return agent


class MultiAgentCartPole(IndependentCopiesEnv):
    """N independent CartPole-v1 copies (RLlib's ``MultiAgentCartPole``): a pole that falls
    terminates its agent; the copies test per-agent policies and agents leaving mid-episode."""

    ENV_ID = "CartPole-v1"
    metadata: dict[str, Any] = {"name": "multi_agent_cartpole", "render_modes": ["rgb_array"],
                                "is_parallelizable": True}


class MultiAgentPendulum(IndependentCopiesEnv):
    """N independent Pendulum-v1 copies (RLlib's ``MultiAgentPendulum``): continuous actions,
    every agent truncated at Pendulum's 200 steps; RLlib's tuned multi-agent SAC runs on it."""

    ENV_ID = "Pendulum-v1"
    metadata: dict[str, Any] = {"name": "multi_agent_pendulum", "render_modes": ["rgb_array"],
                                "is_parallelizable": True}
