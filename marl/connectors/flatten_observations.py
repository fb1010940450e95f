"""``FlattenObservations``: the env-to-module piece that makes any observation a flat vector.

Default models take one float vector per agent. Envs hand out Discrete
indices, MultiDiscrete/MultiBinary arrays, images, and nested Dict/Tuple
structures. This piece maps a batch of such observations to float32
``[B, flat_dim]`` arrays and reports the matching ``Box`` space, which is the
``observation_space`` the module must be built with.

Flattening rules (per leaf, concatenated in gymnasium's order: a Dict's
``spaces`` order, which gymnasium sorts by key; a Tuple's position order):

- ``Discrete(n, start=s)``: one-hot of ``obs - s``, width ``n``.
- ``MultiDiscrete(nvec, start=s)``: one one-hot per component, concatenated,
  width ``sum(nvec)``.
- ``MultiBinary(shape)``: the bits as floats, width ``prod(shape)``.
- ``Box(shape)``: cast to float32 and flattened, width ``prod(shape)``.

Special case: a Dict observation space whose keys are exactly
``{"observation", "action_mask"}`` (the PettingZoo classic convention) keeps
that Dict structure: ``observation`` is flattened as above and
``action_mask`` passes through unchanged except for a cast to float32, so
default modules can still find the mask and apply it to their logits.

The piece holds no state (no running statistics), so it pickles trivially
and its checkpoint state is ``{}``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import gymnasium as gym
import numpy as np

__all__ = ["FlattenObservations"]

_MASK_KEYS = frozenset({"observation", "action_mask"})
_SUPPORTED = "Box, Discrete, MultiDiscrete, MultiBinary, and Dict/Tuple (nested allowed) of those"

# A batch of observations: a batched array or dict/tuple of batched arrays, or
# a list with one raw observation per env.
ObservationBatch = Union[np.ndarray, Mapping[Any, Any], tuple, list]


def _unsupported(space: Any, where: str) -> TypeError:
    return TypeError(
        f"FlattenObservations: cannot flatten observation space {space!r} "
        f"(type {type(space).__name__}){where}; supported spaces are {_SUPPORTED}."
    )


def _is_mask_dict(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Dict) and set(space.spaces) == _MASK_KEYS


def _flat_bounds(space: gym.Space, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of ``space``'s flattened float32 form."""
    if isinstance(space, gym.spaces.Box):
        return (np.asarray(space.low, np.float32).reshape(-1), np.asarray(space.high, np.float32).reshape(-1))
    if isinstance(space, gym.spaces.Discrete):
        n = int(space.n)
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    if isinstance(space, gym.spaces.MultiDiscrete):
        n = int(np.sum(space.nvec))
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    if isinstance(space, gym.spaces.MultiBinary):
        n = int(np.prod(space.shape))
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        items = space.spaces.items() if isinstance(space, gym.spaces.Dict) else enumerate(space.spaces)
        parts = [_flat_bounds(sub, f"{path}[{key!r}]") for key, sub in items]
        if not parts:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    raise _unsupported(space, f" at {path}" if path else "")


def _flat_box(space: gym.Space, path: str = "") -> gym.spaces.Box:
    low, high = _flat_bounds(space, path)
    return gym.spaces.Box(low=low, high=high, shape=low.shape, dtype=np.float32)


def _mask_box(space: gym.Space) -> gym.spaces.Box:
    """The float32 Box an ``action_mask`` subspace passes through as."""
    if isinstance(space, gym.spaces.MultiBinary):
        shape = tuple(space.shape)
        return gym.spaces.Box(0.0, 1.0, shape, np.float32)
    if isinstance(space, gym.spaces.Box):
        return gym.spaces.Box(
            np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), space.shape, np.float32
        )
    raise TypeError(
        f"FlattenObservations: action_mask space {space!r} (type {type(space).__name__}) "
        "is not supported; expected a Box or MultiBinary."
    )


def _stack_list(space: gym.Space, observations: Sequence[Any], path: str) -> Any:
    """Turn a list of per-env raw observations into the batched structure of ``space``."""
    if isinstance(space, gym.spaces.Dict):
        out = {}
        for key, sub in space.spaces.items():
            try:
                values = [obs[key] for obs in observations]
            except (KeyError, TypeError, IndexError):
                raise KeyError(
                    f"FlattenObservations: an observation in the list has no key {key!r} at "
                    f"{path or 'top level'}; expected keys {list(space.spaces)}."
                ) from None
            out[key] = _stack_list(sub, values, f"{path}[{key!r}]")
        return out
    if isinstance(space, gym.spaces.Tuple):
        return tuple(
            _stack_list(sub, [obs[i] for obs in observations], f"{path}[{i}]")
            for i, sub in enumerate(space.spaces)
        )
    return np.asarray(observations)


def _leaf_array(space: gym.Space, batch: Any, path: str, event_shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(batch)
    if arr.ndim == 0 or tuple(arr.shape[1:]) != event_shape:
        raise ValueError(
            f"FlattenObservations: observations at {path or 'top level'} have shape {arr.shape}; "
            f"expected a batch [B, *{event_shape}] for {space!r}."
        )
    return arr


def _check_range(idx: np.ndarray, n: np.ndarray, space: gym.Space, path: str) -> None:
    # Without this a -1 would silently one-hot the last slot (numpy negative indexing).
    bad = (idx < 0) | (idx >= n)
    if np.any(bad):
        raise ValueError(
            f"FlattenObservations: observation values {np.unique(idx[bad]).tolist()} "
            f"(after subtracting start) at {path or 'top level'} are outside {space!r}."
        )


def _flatten_batch(space: gym.Space, batch: Any, path: str = "") -> np.ndarray:
    """Vectorised flattening of one batched structure into float32 ``[B, flat_dim]``."""
    if isinstance(space, gym.spaces.Box):
        arr = _leaf_array(space, batch, path, tuple(space.shape))
        return arr.reshape(arr.shape[0], -1).astype(np.float32, copy=False)
    if isinstance(space, gym.spaces.Discrete):
        arr = _leaf_array(space, batch, path, ())
        idx = arr.astype(np.int64) - int(space.start)
        n = int(space.n)
        _check_range(idx, np.int64(n), space, path)
        out = np.zeros((arr.shape[0], n), np.float32)
        out[np.arange(arr.shape[0]), idx] = 1.0
        return out
    if isinstance(space, gym.spaces.MultiDiscrete):
        arr = _leaf_array(space, batch, path, tuple(space.shape))
        b = arr.shape[0]
        nvec = np.asarray(space.nvec, np.int64).reshape(-1)
        idx = arr.reshape(b, -1).astype(np.int64) - np.asarray(space.start, np.int64).reshape(-1)
        _check_range(idx, nvec[None, :], space, path)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        out = np.zeros((b, int(nvec.sum())), np.float32)
        out[np.arange(b)[:, None], idx + offsets[None, :]] = 1.0
        return out
    if isinstance(space, gym.spaces.MultiBinary):
        arr = _leaf_array(space, batch, path, tuple(space.shape))
        return arr.reshape(arr.shape[0], -1).astype(np.float32)
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"FlattenObservations: observations at {path or 'top level'} are a "
                f"{type(batch).__name__}; expected a dict with keys {list(space.spaces)} "
                "(or a list of per-env dicts)."
            )
        missing = [k for k in space.spaces if k not in batch]
        if missing:
            raise KeyError(
                f"FlattenObservations: observations at {path or 'top level'} lack keys {missing}; "
                f"expected keys {list(space.spaces)}."
            )
        parts = [_flatten_batch(sub, batch[k], f"{path}[{k!r}]") for k, sub in space.spaces.items()]
        return _concat(parts, space, path)
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(batch, (tuple, list)) or len(batch) != len(space.spaces):
            raise TypeError(
                f"FlattenObservations: observations at {path or 'top level'} are a "
                f"{type(batch).__name__}; expected a tuple of {len(space.spaces)} batched arrays "
                "(or a list of per-env tuples)."
            )
        parts = [_flatten_batch(sub, batch[i], f"{path}[{i}]") for i, sub in enumerate(space.spaces)]
        return _concat(parts, space, path)
    raise _unsupported(space, f" at {path}" if path else "")


def _concat(parts: list, space: gym.Space, path: str) -> np.ndarray:
    sizes = {p.shape[0] for p in parts}
    if len(sizes) > 1:
        raise ValueError(
            f"FlattenObservations: components of {space!r} at {path or 'top level'} have "
            f"different batch sizes {sorted(sizes)}."
        )
    if not parts:
        raise ValueError(f"FlattenObservations: cannot infer a batch size for empty space {space!r}.")
    return np.concatenate(parts, axis=1)


class FlattenObservations:
    """Env-to-module connector piece: Discrete to one-hot, structures to one flat float32 vector.

    Usage (the guide): ``.env_runners(env_to_module_connector=lambda env:
    FlattenObservations())``. The env runner then calls
    ``recompute_output_observation_space(env_obs_space)`` once to learn the
    module's observation space, and ``piece(observations)`` on every batch.
    For several agents with different spaces one instance serves them all:
    pass ``input_observation_space=`` per call (that does not change the
    stored spaces).

    Args:
        keys_to_exclude: top-level keys of a Dict observation space to drop
            before flattening (the same idea as RLlib's ``keys_to_remove``).
            Dropping ``"action_mask"`` from a PettingZoo classic Dict turns
            off the mask-preserving special case.
        input_observation_space: optional; if given, the output space is
            computed right away.
    """

    def __init__(
        self,
        keys_to_exclude: Optional[Iterable[Any]] = None,
        *,
        input_observation_space: Optional[gym.Space] = None,
    ) -> None:
        self.keys_to_exclude: tuple = tuple(keys_to_exclude or ())
        self.input_observation_space: Optional[gym.Space] = None
        self.observation_space: Optional[gym.Space] = None
        if input_observation_space is not None:
            self.recompute_output_observation_space(input_observation_space)

    def __repr__(self) -> str:
        return f"FlattenObservations(keys_to_exclude={list(self.keys_to_exclude)})"

    # -- spaces ------------------------------------------------------------

    def _effective_space(self, space: gym.Space) -> gym.Space:
        """``space`` with ``keys_to_exclude`` removed (validated)."""
        if not self.keys_to_exclude:
            return space
        if not isinstance(space, gym.spaces.Dict):
            raise TypeError(
                f"FlattenObservations: keys_to_exclude {list(self.keys_to_exclude)} needs a Dict "
                f"observation space, got {space!r} (type {type(space).__name__})."
            )
        unknown = [k for k in self.keys_to_exclude if k not in space.spaces]
        if unknown:
            raise KeyError(
                f"FlattenObservations: keys_to_exclude {unknown} are not in the observation "
                f"space; its keys are {list(space.spaces)}."
            )
        kept = {k: s for k, s in space.spaces.items() if k not in self.keys_to_exclude}
        if not kept:
            raise ValueError(
                f"FlattenObservations: keys_to_exclude {list(self.keys_to_exclude)} removes every "
                f"key of {space!r}; nothing would be left to observe."
            )
        return gym.spaces.Dict(kept)

    def transform_space(self, space: gym.Space) -> gym.Space:
        """The output space for ``space``, without storing anything (a pure function)."""
        space = self._effective_space(space)
        if _is_mask_dict(space):
            return gym.spaces.Dict(
                {
                    k: (_flat_box(sub, "['observation']") if k == "observation" else _mask_box(sub))
                    for k, sub in space.spaces.items()
                }
            )
        return _flat_box(space)

    def recompute_output_observation_space(self, input_observation_space: gym.Space) -> gym.Space:
        """Store ``input_observation_space`` and return (and store) the flattened space.

        The returned space is what the RLModule must be built with. Raises
        ``TypeError`` naming the space for Text, Graph, Sequence, OneOf and
        other spaces without a fixed-size float encoding.
        """
        output = self.transform_space(input_observation_space)
        self.input_observation_space = input_observation_space
        self.observation_space = output
        return output

    # -- data --------------------------------------------------------------

    def __call__(
        self,
        observations: ObservationBatch,
        input_observation_space: Optional[gym.Space] = None,
    ) -> Union[np.ndarray, dict]:
        """Flatten a batch of observations to float32 ``[B, flat_dim]``.

        ``observations`` is either batched (an array with a leading batch dim
        for Box/Discrete/MultiDiscrete/MultiBinary, or a dict/tuple of such
        arrays for Dict/Tuple spaces) or a ``list`` of per-env raw
        observations. For the PettingZoo mask Dict the result is
        ``{"observation": [B, flat_dim], "action_mask": [B, *mask_shape]}``.
        ``input_observation_space`` overrides the stored space for this call only.
        """
        space = input_observation_space
        if space is None:
            space = self.input_observation_space
        if space is None:
            raise ValueError(
                "FlattenObservations: no input observation space; call "
                "recompute_output_observation_space(space) first or pass input_observation_space=."
            )
        space = self._effective_space(space)
        if isinstance(observations, list):
            if not observations:
                raise ValueError("FlattenObservations: got an empty list of observations.")
            observations = _stack_list(space, observations, "")
        if _is_mask_dict(space):
            if not isinstance(observations, Mapping):
                raise TypeError(
                    f"FlattenObservations: observations are a {type(observations).__name__}; expected a "
                    "dict with keys ['action_mask', 'observation'] (or a list of per-env dicts)."
                )
            out = {}
            for key, sub in space.spaces.items():
                if key not in observations:
                    raise KeyError(
                        f"FlattenObservations: observations lack key {key!r}; "
                        f"expected {list(space.spaces)}."
                    )
                if key == "observation":
                    out[key] = _flatten_batch(sub, observations[key], "['observation']")
                else:
                    mask_box = _mask_box(sub)
                    mask = _leaf_array(sub, observations[key], "['action_mask']", tuple(mask_box.shape))
                    out[key] = mask.astype(np.float32)
            if out["observation"].shape[0] != out["action_mask"].shape[0]:
                raise ValueError(
                    "FlattenObservations: observation and action_mask batch sizes differ "
                    f"({out['observation'].shape[0]} vs {out['action_mask'].shape[0]})."
                )
            return out
        return _flatten_batch(space, observations)

    # -- checkpoint tree ---------------------------------------------------

    def get_state(self) -> dict:
        """``{}``: flattening is a fixed function of the space, so there is nothing to save."""
        return {}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """No-op by design: there is no state (see ``get_state``); accepts any mapping."""
        if not isinstance(state, Mapping):
            raise TypeError(f"FlattenObservations.set_state: expected a dict, got {type(state).__name__}.")
