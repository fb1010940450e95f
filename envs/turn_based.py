"""`TurnBasedParallelEnv`: a PettingZoo AECEnv (turn-based game) as a ParallelEnv.

The env runner steps every env through PettingZoo's parallel interface. A turn-based
game fits that interface when each "parallel" step carries exactly one action, the
one of the agent whose turn it is; this adapter does that translation and hides the
AEC bookkeeping the runner should not have to know (stepping finished agents with
``None``, rewards that arrive for agents while they wait for their turn).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import AECEnv, ParallelEnv

#: The key under which PettingZoo classic envs put legal-move masks.
ACTION_MASK_KEY = "action_mask"
#: The key of the raw observation in a masked (PettingZoo classic) observation dict.
OBSERVATION_KEY = "observation"


class TurnBasedParallelEnv(ParallelEnv):
    """Present an AECEnv as a ParallelEnv that asks one agent at a time for an action.

    What each call returns:

    - ``reset()``: the observation (and info) of the agent whose turn it is
      (``agent_selection``) only.
    - ``step({agent: action})``: takes the acting agent's action (the only agent in
      the last obs dict that is not finished), steps the AEC env, then steps the
      finished agents with ``None`` (AEC requires it) until a live agent's turn.

      * obs: the next acting agent, plus the final observation of every agent that
        finished on this step (those have ``terminations`` or ``truncations`` True,
        exactly as PettingZoo parallel envs return final observations). So: an agent
        must act next iff it is in obs and is not finished.
      * rewards: the per-step AEC ``rewards`` of this step for the agent that just
        acted (always present, possibly 0.0), every agent that just finished, and
        every other agent that received a non-zero reward while waiting. Rewards are
        read once per step from the AEC ``rewards`` dict (the rewards of the last
        step), never from ``_cumulative_rewards``, so nothing is counted twice;
        summed over an episode they equal the AEC env's cumulative rewards.
      * terminations / truncations: every agent that was live at the start of the
        step; True for the ones that finished on it.

    Action masks: if ``observation_space(agent)`` is already a Dict with an
    ``"action_mask"`` key (PettingZoo classic), observations pass through unchanged.
    If the env instead puts the mask in ``infos[agent]["action_mask"]``, the
    observation becomes the classic ``{"observation": obs, "action_mask": mask}``
    dict (mask int8) and ``observation_space(agent)`` says so; an agent's final
    observation without a mask in its info gets an all-zero mask (it has no legal
    move left).

    Args:
        aec_env: the AECEnv to wrap (e.g. ``connect_four_v3.env()``).
        mask_from_info: whether masks come from infos. ``None`` (default) detects
            it: if no observation space already carries a mask, the env is reset once
            here and the first agent's info is inspected (``reset(seed=...)`` later
            re-seeds as usual).
    """

    def __init__(self, aec_env: AECEnv, mask_from_info: bool | None = None) -> None:
        if not isinstance(aec_env, AECEnv):
            raise TypeError(
                f"TurnBasedParallelEnv expects a PettingZoo AECEnv instance (e.g. "
                f"pettingzoo.classic.connect_four_v3.env()), got {type(aec_env).__name__}."
            )
        self.aec_env = aec_env
        self.possible_agents: list[Any] = list(aec_env.possible_agents)
        self.metadata: dict[str, Any] = dict(getattr(aec_env, "metadata", {}) or {})
        # Agents that finished (reported once) but may still sit in aec_env.agents
        # until their ``None`` step.
        self._finished: set[Any] = set()
        self._episode_started = False
        if mask_from_info is None:
            mask_from_info = self._detect_mask_in_info()
        self.mask_from_info = bool(mask_from_info)
        self._observation_spaces: dict[Any, gym.spaces.Space] = {}

    # ----------------------------------------------------------------- spaces
    @property
    def agents(self) -> list[Any]:
        """Live agents (not finished), in the AEC env's order."""
        if not self._episode_started:
            return []
        return [a for a in self.aec_env.agents if a not in self._finished]

    @property
    def render_mode(self) -> str | None:
        """The wrapped env's render mode."""
        return getattr(self.aec_env, "render_mode", None)

    def observation_space(self, agent: Any) -> gym.spaces.Space:
        """The AEC observation space, or the classic masked Dict when masks come from infos."""
        if agent not in self._observation_spaces:
            base = self.aec_env.observation_space(agent)
            if self.mask_from_info:
                action_space = self.aec_env.action_space(agent)
                if not isinstance(action_space, gym.spaces.Discrete):
                    raise ValueError(
                        f"TurnBasedParallelEnv: agent {agent!r} gets action masks from its "
                        f"info, which needs a Discrete action space; got {action_space}."
                    )
                mask_space = gym.spaces.Box(0, 1, (int(action_space.n),), dtype=np.int8)
                base = gym.spaces.Dict({OBSERVATION_KEY: base, ACTION_MASK_KEY: mask_space})
            self._observation_spaces[agent] = base
        return self._observation_spaces[agent]

    def action_space(self, agent: Any) -> gym.spaces.Space:
        """The AEC action space."""
        return self.aec_env.action_space(agent)

    # ------------------------------------------------------------------- API
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict[str, Any]]]:
        """Reset the AEC env; return obs and info of the agent whose turn it is."""
        self.aec_env.reset(seed=seed, options=options)
        self._episode_started = True
        self._finished = set()
        # Agents finished from the very start never act; they are skipped unreported.
        self._finished.update(self._newly_finished())
        self._step_finished_agents()
        observations: dict[Any, Any] = {}
        infos: dict[Any, dict[str, Any]] = {}
        if self.aec_env.agents:
            agent = self.aec_env.agent_selection
            observations[agent] = self._observe(agent, final=False)
            infos[agent] = self.aec_env.infos[agent]
        return observations, infos

    def step(self, actions: dict[Any, Any]) -> tuple[
        dict[Any, Any],
        dict[Any, float],
        dict[Any, bool],
        dict[Any, bool],
        dict[Any, dict[str, Any]],
    ]:
        """Apply the acting agent's action; see the class docstring for what comes back."""
        live_before = self.agents
        if not live_before:
            raise RuntimeError(
                f"TurnBasedParallelEnv({self.aec_env}).step() called with no live agents: "
                "the episode is over (or reset() was never called); call reset() first."
            )
        acting = self.aec_env.agent_selection
        if acting not in actions:
            raise ValueError(
                f"TurnBasedParallelEnv({self.aec_env}): it is the turn of agent {acting!r}, but "
                f"step() got actions for {list(actions)}; expected {{{acting!r}: action}}."
            )
        out_of_turn = [a for a in actions if a != acting and a in live_before]
        if out_of_turn:
            raise ValueError(
                f"TurnBasedParallelEnv({self.aec_env}): got actions for agent(s) {out_of_turn} "
                f"whose turn it is not; only agent {acting!r} acts now."
            )
        # Actions for agents that already finished are ignored, as in PettingZoo's
        # parallel envs (the runner may still hold one from the final observation).

        self.aec_env.step(actions[acting])

        # Per-step rewards of this one live step: the AEC ``rewards`` dict holds the
        # rewards of the last step only, so reading it once per step never double counts.
        rewards: dict[Any, float] = {acting: 0.0}
        for agent, reward in self.aec_env.rewards.items():
            if agent in live_before and (reward != 0 or agent == acting):
                rewards[agent] = float(reward)

        observations: dict[Any, Any] = {}
        infos: dict[Any, dict[str, Any]] = {}
        terminations = {a: False for a in live_before}
        truncations = {a: False for a in live_before}
        for agent in self._newly_finished():
            terminations[agent] = bool(self.aec_env.terminations[agent])
            truncations[agent] = bool(self.aec_env.truncations[agent])
            observations[agent] = self._observe(agent, final=True)
            infos[agent] = self.aec_env.infos[agent]
            rewards.setdefault(agent, 0.0)
            self._finished.add(agent)

        self._step_finished_agents()
        if self.aec_env.agents:
            agent = self.aec_env.agent_selection
            observations[agent] = self._observe(agent, final=False)
            infos[agent] = self.aec_env.infos[agent]
        return observations, rewards, terminations, truncations, infos

    def render(self) -> Any:
        """The wrapped env's ``render()``."""
        return self.aec_env.render()

    def close(self) -> None:
        """Close the wrapped env."""
        self.aec_env.close()

    def state(self) -> np.ndarray:
        """The wrapped env's global ``state()`` (where it has one)."""
        return self.aec_env.state()

    # -------------------------------------------------------------- helpers
    def _newly_finished(self) -> list[Any]:
        """Agents whose termination/truncation is set and that were not reported yet."""
        env = self.aec_env
        return [
            a
            for a in env.agents
            if a not in self._finished and (env.terminations[a] or env.truncations[a])
        ]

    def _step_finished_agents(self) -> None:
        """Step finished agents with ``None`` until a live agent's turn (or none is left)."""
        env = self.aec_env
        while env.agents and (
            env.terminations[env.agent_selection] or env.truncations[env.agent_selection]
        ):
            num_agents = len(env.agents)
            env.step(None)
            if len(env.agents) >= num_agents:
                raise RuntimeError(
                    f"TurnBasedParallelEnv: stepping finished agent with None did not remove "
                    f"it from {env}.agents ({env.agents}); the AEC env must call "
                    "_was_dead_step() for finished agents."
                )

    def _observe(self, agent: Any, final: bool) -> Any:
        obs = self.aec_env.observe(agent)
        if not self.mask_from_info:
            return obs
        mask = self.aec_env.infos.get(agent, {}).get(ACTION_MASK_KEY)
        if mask is None:
            if not final:
                raise ValueError(
                    f"TurnBasedParallelEnv({self.aec_env}): agent {agent!r} must act but its "
                    f"info has no {ACTION_MASK_KEY!r} (keys: {list(self.aec_env.infos.get(agent, {}))}); "
                    "pass mask_from_info=False if this env has no action masks."
                )
            mask = np.zeros(self.observation_space(agent)[ACTION_MASK_KEY].shape, np.int8)
        return {OBSERVATION_KEY: obs, ACTION_MASK_KEY: np.asarray(mask, dtype=np.int8)}

    def _detect_mask_in_info(self) -> bool:
        """True when the env delivers action masks in infos rather than observations."""
        for agent in self.possible_agents:
            space = self.aec_env.observation_space(agent)
            if isinstance(space, gym.spaces.Dict) and ACTION_MASK_KEY in space.spaces:
                return False
        self.aec_env.reset()
        infos = self.aec_env.infos
        return any(ACTION_MASK_KEY in (infos.get(a) or {}) for a in self.aec_env.agents)
