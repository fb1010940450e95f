"""`SingleAgentParallelEnv`: a gymnasium env presented as a one-agent PettingZoo ParallelEnv.

The env runner speaks only PettingZoo's parallel interface; wrapping gymnasium
envs here means single-agent training is just multi-agent training with one agent
(`DEFAULT_AGENT_ID`, mapped to `DEFAULT_MODULE_ID`), and needs no second code path.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
from pettingzoo import ParallelEnv

from marl.core.constants import DEFAULT_AGENT_ID


class SingleAgentParallelEnv(ParallelEnv):
    """One gymnasium env as a ParallelEnv whose only agent is `DEFAULT_AGENT_ID`.

    Dicts in and out are keyed by `DEFAULT_AGENT_ID`. As in PettingZoo's parallel
    envs, the step on which the episode ends still returns the final observation
    (with ``terminations``/``truncations`` True) and then ``agents`` becomes empty.
    The wrapped env stays reachable as ``.gym_env``.
    """

    def __init__(self, gym_env: gym.Env) -> None:
        if not isinstance(gym_env, gym.Env):
            raise TypeError(
                f"SingleAgentParallelEnv expects a gymnasium.Env instance, got "
                f"{type(gym_env).__name__}: {gym_env!r}."
            )
        self.gym_env = gym_env
        self.possible_agents: list[Any] = [DEFAULT_AGENT_ID]
        self.agents: list[Any] = []
        self.observation_spaces = {DEFAULT_AGENT_ID: gym_env.observation_space}
        self.action_spaces = {DEFAULT_AGENT_ID: gym_env.action_space}
        spec_id = gym_env.spec.id if gym_env.spec is not None else type(gym_env).__name__
        self.metadata: dict[str, Any] = {
            **dict(getattr(gym_env, "metadata", {}) or {}),
            "name": spec_id,
            "is_parallelizable": True,
        }

    @property
    def render_mode(self) -> str | None:
        """The wrapped env's render mode."""
        return self.gym_env.render_mode

    def observation_space(self, agent: Any) -> gym.spaces.Space:
        """The gymnasium env's observation space (for `DEFAULT_AGENT_ID` only)."""
        return self.observation_spaces[self._check_agent(agent)]

    def action_space(self, agent: Any) -> gym.spaces.Space:
        """The gymnasium env's action space (for `DEFAULT_AGENT_ID` only)."""
        return self.action_spaces[self._check_agent(agent)]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict[str, Any]]]:
        """Reset the gymnasium env; the one agent becomes live."""
        obs, info = self.gym_env.reset(seed=seed, options=options)
        self.agents = [DEFAULT_AGENT_ID]
        return {DEFAULT_AGENT_ID: obs}, {DEFAULT_AGENT_ID: info}

    def step(self, actions: dict[Any, Any]) -> tuple[
        dict[Any, Any],
        dict[Any, float],
        dict[Any, bool],
        dict[Any, bool],
        dict[Any, dict[str, Any]],
    ]:
        """Step with ``actions[DEFAULT_AGENT_ID]``."""
        if not self.agents:
            raise RuntimeError(
                f"SingleAgentParallelEnv({self.metadata['name']}).step() called with no "
                "live agent: the episode is over (or reset() was never called); call reset() first."
            )
        if DEFAULT_AGENT_ID not in actions:
            raise ValueError(
                f"SingleAgentParallelEnv({self.metadata['name']}).step() expects an action "
                f"for agent {DEFAULT_AGENT_ID!r}, got keys {list(actions)}."
            )
        obs, reward, terminated, truncated, info = self.gym_env.step(actions[DEFAULT_AGENT_ID])
        if terminated or truncated:
            self.agents = []
        a = DEFAULT_AGENT_ID
        return {a: obs}, {a: float(reward)}, {a: bool(terminated)}, {a: bool(truncated)}, {a: info}

    def render(self) -> Any:
        """The wrapped env's ``render()``."""
        return self.gym_env.render()

    def close(self) -> None:
        """Close the wrapped env."""
        self.gym_env.close()

    def _check_agent(self, agent: Any) -> Any:
        if agent != DEFAULT_AGENT_ID:
            raise KeyError(
                f"SingleAgentParallelEnv has one agent, {DEFAULT_AGENT_ID!r}; got agent {agent!r}."
            )
        return agent
