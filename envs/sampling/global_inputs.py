"""What a centralised critic sees: the env's global state, or every agent's observation.

Why a separate piece: the env runner records one such vector per env step
(``GLOBAL_OBS``, with the acting agent's index in ``AGENT_INDEX``) only when
an algorithm asks for it (MAPPO), and both kinds must have a fixed size for
every step of every episode, so the critic's input space is known before
the first sample.

- ``"state"``: ``env.state()`` (PettingZoo's global state), flattened to float32.
- ``"joint_obs"``: every agent of ``possible_agents``, in that fixed order,
  its observation flattened (``gymnasium.spaces.flatten``), zeros where the
  agent has no observation at this step (dead, finished or not yet
  acting), followed by a 0/1 presence mask, one entry per agent.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

import gymnasium as gym
import numpy as np

GLOBAL_INPUT_KINDS = ("state", "joint_obs")


def env_has_state(env: Any) -> bool:
    """Whether ``env.state()`` gives a global state (PettingZoo's optional API)."""
    if not callable(getattr(env, "state", None)):
        return False
    try:
        env.state()
    except (NotImplementedError, AttributeError):
        return False
    except Exception:  # noqa: BLE001 - e.g. state() before reset(): it exists
        return True
    return True


def resolve_global_input(kind: str, env: Any) -> str:
    """``"auto"`` becomes ``"state"`` where the env has one, else ``"joint_obs"``.

    Raises ValueError naming the env when ``"state"`` is asked of an env
    without ``state()``.
    """
    if kind == "auto":
        return "state" if env_has_state(env) else "joint_obs"
    if kind not in GLOBAL_INPUT_KINDS:
        raise ValueError(f"global input {kind!r}: expected 'auto', 'state' or 'joint_obs'")
    if kind == "state" and not env_has_state(env):
        raise ValueError(
            f"critic_input='state', but the env {type(env).__name__} has no state() (PettingZoo's "
            "global state API); use critic_input='joint_obs' (every agent's observation) or 'auto'")
    return kind


class GlobalInput:
    """Computes the critic's input of one env step; ``dim`` is its fixed length."""

    def __init__(self, kind: str, env: Any) -> None:
        self.kind = resolve_global_input(kind, env)
        self.agents: List[Any] = list(getattr(env, "possible_agents", None) or getattr(env, "agents", []))
        if not self.agents:
            raise ValueError(f"a centralised critic needs the env's possible_agents; {type(env).__name__} has none")
        self.num_agents = len(self.agents)
        if self.kind == "state":
            space = getattr(env, "state_space", None)
            self._state_dim = (int(gym.spaces.flatdim(space)) if space is not None
                               else int(np.asarray(self._probe_state(env)).size))
            self.dim = self._state_dim
        else:
            self._spaces = [env.observation_space(a) for a in self.agents]
            self._sizes = [int(gym.spaces.flatdim(s)) for s in self._spaces]
            self._offsets = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
            self.dim = int(self._offsets[-1]) + self.num_agents

    @staticmethod
    def _probe_state(env: Any) -> Any:
        try:
            return env.state()
        except Exception:  # noqa: BLE001 - some envs need a reset first
            env.reset(seed=0)
            return env.state()

    def space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-np.inf, np.inf, (self.dim,), np.float32)

    def __call__(self, env: Any, obs: Mapping[Any, Any]) -> np.ndarray:
        """The input for the step whose observations are ``obs``."""
        if self.kind == "state":
            state = np.asarray(env.state(), dtype=np.float32).reshape(-1)
            if state.size != self._state_dim:
                raise ValueError(f"env.state() has {state.size} values; its state_space says {self._state_dim}")
            return state
        out = np.zeros(self.dim, np.float32)
        mask_start = int(self._offsets[-1])
        for i, agent in enumerate(self.agents):
            o: Optional[Any] = obs.get(agent)
            if o is None:
                continue
            out[self._offsets[i]:self._offsets[i + 1]] = gym.spaces.flatten(self._spaces[i], o)
            out[mask_start + i] = 1.0
        return out
