"""`to_parallel_env`: bring any supported env object into the common interface.

The env runner consumes one interface only, PettingZoo's `ParallelEnv`. This is the
one place that decides how each kind of env object gets there, so the registry,
presets and user code all agree.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
from pettingzoo import AECEnv, ParallelEnv

from envs.gym_adapter import SingleAgentParallelEnv
from envs.turn_based import TurnBasedParallelEnv

#: What `to_parallel_env` accepts, for error messages.
ACCEPTED_ENV_OBJECTS = (
    "a pettingzoo.ParallelEnv (used as is), a pettingzoo.AECEnv (wrapped in "
    "TurnBasedParallelEnv, one agent acts per step) or a gymnasium.Env (wrapped in "
    "SingleAgentParallelEnv, one agent DEFAULT_AGENT_ID)"
)


def to_parallel_env(env: Any, source: str | None = None) -> ParallelEnv:
    """Return ``env`` as a ParallelEnv: as is, or wrapped by its kind.

    Args:
        env: the env object a creator returned.
        source: what produced it (for the error message), e.g. ``"make_env('x')"``.

    Raises:
        TypeError: for anything else, naming the type received and what is accepted.
    """
    if isinstance(env, ParallelEnv):
        return env
    if isinstance(env, AECEnv):
        return TurnBasedParallelEnv(env)
    if isinstance(env, gym.Env):
        return SingleAgentParallelEnv(env)
    origin = f"{source} returned" if source else "Got"
    hint = ""
    if isinstance(env, gym.vector.VectorEnv):
        hint = " Vector envs are not accepted: pass the single env; the env runner vectorizes."
    elif isinstance(env, type):
        hint = " That is a class, not an env instance."
    raise TypeError(
        f"{origin} an object of type {type(env).__module__}.{type(env).__qualname__}; "
        f"expected {ACCEPTED_ENV_OBJECTS}.{hint}"
    )
