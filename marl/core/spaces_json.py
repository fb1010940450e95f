"""Gymnasium spaces to and from JSON, so checkpoints need no pickle."""
from __future__ import annotations

from typing import Any, Dict

import gymnasium as gym
import numpy as np


def space_to_json(space: gym.Space | None) -> Any:
    """Describe ``space`` as JSON-compatible data (``None`` stays ``None``)."""
    if space is None:
        return None
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {
            "type": "Dict",
            "spaces": [[key, space_to_json(sub)] for key, sub in space.spaces.items()],
        }
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(sub) for sub in space.spaces]}
    raise TypeError(
        f"cannot store observation/action space {space!r} in a checkpoint: supported "
        "are Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple"
    )


def space_from_json(data: Any) -> gym.Space | None:
    """Rebuild a space written by :func:`space_to_json`."""
    if data is None:
        return None
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"not a serialised gymnasium space: {data!r}")
    kind = data["type"]
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.array(data["low"], dtype=dtype)
        high = np.array(data["high"], dtype=dtype)
        return gym.spaces.Box(low=low, high=high, shape=tuple(data["shape"]), dtype=dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(data["nvec"], dtype=np.dtype(data["dtype"]))
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    if kind == "Dict":
        spaces: Dict[str, gym.Space] = {k: space_from_json(v) for k, v in data["spaces"]}
        return gym.spaces.Dict(spaces)
    if kind == "Tuple":
        return gym.spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise ValueError(f"unknown space type {kind!r} in checkpoint metadata")
