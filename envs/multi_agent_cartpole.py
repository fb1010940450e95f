"""`MultiAgentCartPole`: N independent CartPole-v1 copies as one PettingZoo ParallelEnv.

The multi-agent "hello world" of RLlib's guide (`ray.rllib.examples.envs.classes.
multi_agent.MultiAgentCartPole`), rebuilt on PettingZoo's `ParallelEnv` so it runs
through exactly the same code path as every other multi-agent env of the library.
Users import it as ``from envs import MultiAgentCartPole``.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

#: The keys `MultiAgentCartPole`'s config understands; anything else is a typo.
_CONFIG_KEYS = ("num_agents", "render_mode")


class MultiAgentCartPole(ParallelEnv):
    """N independent CartPole-v1 copies, agent ids the ints ``0 .. N-1``.

    Each agent balances its own pole: the copies never interact, so this env tests
    the multi-agent plumbing (per-agent policies, agents leaving mid-episode)
    rather than cooperation.

    Behaviour the caller can rely on:

    - An agent whose pole falls is terminated: its final observation is returned
      with ``terminations[agent] = True`` and it leaves ``agents``; the others go
      on. The episode is over when ``agents`` is empty.
    - Each copy keeps CartPole-v1's own 500-step truncation.
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

    metadata: dict[str, Any] = {
        "name": "multi_agent_cartpole",
        "render_modes": ["rgb_array"],
        "is_parallelizable": True,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(_CONFIG_KEYS), key=str)
        if unknown:
            raise ValueError(
                f"MultiAgentCartPole got unknown config key(s) {unknown}; "
                f"expected only {list(_CONFIG_KEYS)}, e.g. {{'num_agents': 2}}."
            )
        num_agents = config.get("num_agents", 2)
        if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)) or num_agents < 1:
            raise ValueError(
                f"MultiAgentCartPole config 'num_agents' must be an int >= 1, got {num_agents!r}."
            )
        self.render_mode: str | None = config.get("render_mode")
        self.possible_agents: list[int] = list(range(int(num_agents)))
        self.agents: list[int] = []
        self._envs: dict[int, gym.Env] = {
            agent: gym.make("CartPole-v1", render_mode=self.render_mode)
            for agent in self.possible_agents
        }
        # All copies share one pair of spaces; keep the dicts PettingZoo code may read.
        first = self._envs[0]
        self.observation_spaces = {a: first.observation_space for a in self.possible_agents}
        self.action_spaces = {a: first.action_space for a in self.possible_agents}

    def observation_space(self, agent: int) -> gym.spaces.Space:
        """CartPole's 4-float Box for every agent."""
        return self.observation_spaces[self._check_agent(agent)]

    def action_space(self, agent: int) -> gym.spaces.Space:
        """CartPole's ``Discrete(2)`` for every agent."""
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
        if not self.agents:
            raise RuntimeError(
                "MultiAgentCartPole.step() called with no live agents: the episode is "
                "over (or reset() was never called); call reset() first."
            )
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise ValueError(
                f"MultiAgentCartPole.step() is missing actions for live agent(s) {missing}; "
                f"expected one action per agent in {self.agents}, got keys {list(actions)}."
            )
        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            action = actions[agent]
            if not self.action_spaces[agent].contains(action):
                raise ValueError(
                    f"MultiAgentCartPole: action {action!r} for agent {agent} is not in "
                    f"its action space {self.action_spaces[agent]} (expected 0 or 1)."
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
            raise KeyError(
                f"MultiAgentCartPole has no agent {agent!r}; its agent ids are "
                f"{self.possible_agents}."
            )
        return agent
