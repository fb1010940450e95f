"""SuperSuit presets: the preprocessing pipelines our default models expect.

This is the only module of ours that imports SuperSuit. PettingZoo plans to absorb
SuperSuit's wrappers; when that happens only this file changes.

Checked against supersuit 3.11 on pettingzoo 1.27 (parallel envs):

- ``frame_stack_v1`` wraps ParallelEnvs directly and works there. On the AEC side
  it is wrong for simultaneous-move envs: an agent's stack is updated when the
  agent is selected, before the cycle's update, so all agents but the first get a
  stale newest frame (checked with a 3-agent counter env). We stack on the
  parallel side only.
- ``color_reduction_v0``, ``resize_v1``, ``dtype_v0``, ``normalize_obs_v0`` and
  ``pad_observations_v0`` / ``pad_action_space_v0`` only have AEC implementations:
  on a ParallelEnv each converts to AEC and back (``parallel_to_aec`` /
  ``aec_to_parallel``), and each such round trip computes every observation twice
  per step. We apply the stateless ones together inside one conversion, pad only
  the spaces that actually differ, and silence PettingZoo's "no render_mode"
  warning that the conversions raise for envs without one. Rewards from these
  wrapped envs come back as a ``defaultdict``.
- ``pad_observations_v0`` is broken for ``Discrete`` observation spaces: it returns
  the space object instead of the observation. We pad Discrete observations
  ourselves (values unchanged, space ``Discrete(max n)``).
- SuperSuit reports unsupported spaces with bare ``assert``s; we check first and
  raise ``ValueError`` naming the agents and spaces.
"""
from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pettingzoo
import supersuit as ss
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import aec_to_parallel, parallel_to_aec

#: Side lengths the default CNN has filters for (others need ``conv_filters``).
DEFAULT_CNN_IMAGE_SIZES = (84, 64, 42)

#: `pistonball_preset` config keys and their defaults.
PISTONBALL_DEFAULTS: dict[str, Any] = {
    "n_pistons": 20,
    "max_cycles": 125,
    "continuous": True,
    "size": 84,
    "frame_stack": 4,
}

PettingZooEnv = ParallelEnv | AECEnv

#: PettingZoo's AEC<->parallel conversions warn like this when an env lacks render_mode.
_NO_RENDER_MODE_WARNING = ".*does not have a `render_mode` defined"


def image_preset(
    env: ParallelEnv,
    size: int = 84,
    frame_stack: int = 4,
    grayscale: bool = True,
    scale_to_unit: bool = True,
) -> ParallelEnv:
    """Standard image preprocessing for image-observation parallel envs (e.g. pistonball).

    Pipeline: grayscale (``color_reduction_v0`` "full") -> ``resize_v1`` to
    ``size x size`` -> float32 in [0, 1] -> ``frame_stack_v1`` over the last axis.

    Observations come out as ``(size, size, frame_stack)`` (grayscale) or
    ``(size, size, 3 * frame_stack)`` (RGB), channels last, the layout the default
    CNN takes; it has filters for sizes 84, 64 and 42 (`DEFAULT_CNN_IMAGE_SIZES`).
    Pixels are float32 in [0, 1] (``observation_space`` is ``Box(0, 1, float32)``)
    so models need no knowledge of the pixel range; pass ``scale_to_unit=False`` to
    keep uint8 [0, 255] (4x smaller rollouts, but then the model must scale). The
    newest frame is the last channel (group); a frame stack of 1 still adds the
    channel axis, so observations are always 3-D; right after reset the older frames
    are zeros. Rewards, terminations and agents
    are those of ``env``.

    Args:
        env: a ParallelEnv whose observations are ``(H, W, 3)`` RGB images
            (``(H, W)`` / ``(H, W, C)`` also accepted when ``grayscale=False``).
    """
    if not isinstance(env, ParallelEnv):
        raise TypeError(
            f"image_preset expects a PettingZoo ParallelEnv, got "
            f"{type(env).__module__}.{type(env).__qualname__}; convert AEC envs with "
            "pettingzoo.utils.conversions.aec_to_parallel first."
        )
    _check_positive_int(size, "size", "image_preset")
    _check_positive_int(frame_stack, "frame_stack", "image_preset")
    size, frame_stack = int(size), int(frame_stack)  # SuperSuit asserts on numpy ints
    for agent in env.possible_agents:
        space = env.observation_space(agent)
        if not isinstance(space, gym.spaces.Box) or len(space.shape) not in (2, 3):
            raise ValueError(
                f"image_preset: agent {agent!r} has observation space {space}; expected an "
                "image Box of shape (H, W, C) or (H, W)."
            )
        if grayscale and (len(space.shape) != 3 or space.shape[-1] != 3):
            raise ValueError(
                f"image_preset(grayscale=True): agent {agent!r} has observation shape "
                f"{space.shape}; grayscale conversion expects RGB (H, W, 3). Pass "
                "grayscale=False for images that are not RGB."
            )
    # SuperSuit's stateless observation wrappers exist only for AEC envs; on a
    # ParallelEnv each would convert to AEC and back. Apply them all inside ONE
    # conversion (free for envs like pistonball that are AEC envs underneath).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_RENDER_MODE_WARNING)
        aec = parallel_to_aec(env)
        if grayscale:
            aec = ss.color_reduction_v0(aec, "full")
        aec = ss.resize_v1(aec, size, size)
        if scale_to_unit:
            aec = ss.dtype_v0(aec, np.float32)
            aec = ss.normalize_obs_v0(aec, env_min=0.0, env_max=1.0)
        env = aec_to_parallel(aec)
    # Frame stacking must run on the parallel side: on the AEC side SuperSuit pushes an
    # agent's frame when that agent is selected, which for simultaneous-move envs is
    # before the cycle's update, so every agent but the first gets a stale frame.
    return ss.frame_stack_v1(env, frame_stack)


def pad_heterogeneous(env: PettingZooEnv) -> PettingZooEnv:
    """Pad every agent's spaces to a common one so agents can share one module.

    Observations: Box spaces are zero-padded to the elementwise largest shape
    (same rank and dtype required); Discrete spaces become ``Discrete(max n)``.
    Actions: Box actions are padded and sliced back to each agent's own shape before
    the env sees them; Discrete actions become ``Discrete(max n)`` and an action
    beyond an agent's own ``n`` is replaced by action 0 (SuperSuit's rule), so
    training on such envs should expect those actions to act as 0.
    Spaces that are already identical are left unwrapped.
    """
    _check_pettingzoo_env(env, "pad_heterogeneous")
    agents = list(env.possible_agents)
    obs_spaces = {a: env.observation_space(a) for a in agents}
    act_spaces = {a: env.action_space(a) for a in agents}
    pad_obs = _needs_padding(obs_spaces, "observation")
    pad_act = _needs_padding(act_spaces, "action")
    if not (pad_obs or pad_act):
        return env
    # SuperSuit pads on the AEC side; convert once for both paddings.
    is_parallel = isinstance(env, ParallelEnv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_RENDER_MODE_WARNING)
        aec = parallel_to_aec(env) if is_parallel else env
        if pad_obs:
            if isinstance(next(iter(obs_spaces.values())), gym.spaces.Discrete):
                # ss.pad_observations_v0 returns the space instead of the obs for Discrete.
                padded = gym.spaces.Discrete(max(int(s.n) for s in obs_spaces.values()))
                aec = ss.observation_lambda_v0(aec, lambda obs, space: obs, lambda space: padded)
            else:
                aec = ss.pad_observations_v0(aec)
        if pad_act:
            aec = ss.pad_action_space_v0(aec)
        return aec_to_parallel(aec) if is_parallel else aec


def pistonball_preset(env_config: dict[str, Any] | None = None) -> ParallelEnv:
    """Pistonball (PettingZoo butterfly) with `image_preset` applied, as a ParallelEnv.

    Usable as ``.environment(pistonball_preset, env_config={...})``. Config keys
    (defaults in `PISTONBALL_DEFAULTS`): ``n_pistons``, ``max_cycles``,
    ``continuous`` (Box(-1, 1, (1,)) actions, else Discrete(3)), ``size`` and
    ``frame_stack``. Observations: float32 in [0, 1] of shape
    ``(size, size, frame_stack)``, one per piston (``"piston_0"``, ...).
    """
    config = dict(env_config or {})
    unknown = sorted(set(config) - set(PISTONBALL_DEFAULTS))
    if unknown:
        raise ValueError(
            f"pistonball_preset got unknown config key(s) {unknown}; expected keys from "
            f"{PISTONBALL_DEFAULTS} (shown with their defaults)."
        )
    config = {**PISTONBALL_DEFAULTS, **config}
    env = pettingzoo.make(
        "parallel",
        "butterfly/pistonball-v6",
        n_pistons=config["n_pistons"],
        max_cycles=config["max_cycles"],
        continuous=config["continuous"],
    )
    return image_preset(env, size=config["size"], frame_stack=config["frame_stack"])


# ---------------------------------------------------------------- checks
def _check_pettingzoo_env(env: Any, caller: str) -> None:
    if not isinstance(env, (ParallelEnv, AECEnv)):
        raise TypeError(
            f"{caller} expects a PettingZoo ParallelEnv or AECEnv, got "
            f"{type(env).__module__}.{type(env).__qualname__}."
        )


def _check_positive_int(value: Any, name: str, caller: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{caller}: {name} must be an int >= 1, got {value!r}.")


def _needs_padding(spaces: dict[Any, gym.spaces.Space], what: str) -> bool:
    """Whether the agents' spaces differ; raise ValueError if they cannot be padded."""
    first_agent, first = next(iter(spaces.items()))
    if all(space == first for space in spaces.values()):
        return False
    for agent, space in spaces.items():
        if isinstance(first, gym.spaces.Box) and isinstance(space, gym.spaces.Box):
            if len(space.shape) != len(first.shape) or space.dtype != first.dtype:
                raise ValueError(
                    f"pad_heterogeneous: {what} spaces of agents {first_agent!r} ({first}) and "
                    f"{agent!r} ({space}) differ in rank or dtype; padding needs Box spaces of "
                    "the same rank and dtype."
                )
        elif isinstance(first, gym.spaces.Discrete) and isinstance(space, gym.spaces.Discrete):
            if int(space.start) != 0:
                raise ValueError(
                    f"pad_heterogeneous: agent {agent!r} has {what} space {space} with start "
                    f"{int(space.start)}; padding needs Discrete spaces starting at 0."
                )
        else:
            raise ValueError(
                f"pad_heterogeneous: {what} spaces of agents {first_agent!r} ({first}) and "
                f"{agent!r} ({space}) cannot be padded to one space; expected all Box "
                "(same rank and dtype) or all Discrete."
            )
    return True
