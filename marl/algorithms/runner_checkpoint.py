"""The ``env_runner/`` part of an algorithm checkpoint, without pickle.

``state.json`` holds counters, connector statistics and the JSON half of each
runner's sampling state; ``sampling.safetensors`` holds its arrays (in-flight
observations, recurrent states, held-back rows). Reading and applying are
separate steps so that a restore can read and check every file of a
checkpoint before it changes anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

import numpy as np

from marl.core import checkpoint_io as io

STATE_FILE = "state.json"
ARRAYS_FILE = "sampling.safetensors"


@dataclass
class EnvRunnerCheckpoint:
    """What ``env_runner/`` holds, read and parsed but not applied yet."""

    state: Dict[str, Any]
    sampling: Dict[str, Any] | None = None
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    exact_resume: bool = False
    reason: str | None = None


def save_env_runners(group: Any, directory: Path) -> None:
    """Write the runners' counters, connector states and (if they have one) sampling state."""
    state = dict(group.get_state())
    state.pop("rl_module", None)  # the learner's checkpoint holds the weights
    sampling, arrays, reason = None, {}, "the env runners keep no sampling state"
    get_sampling = getattr(group, "get_sampling_state", None)
    if get_sampling is not None:
        sampling, arrays, reason = get_sampling()
    data = {
        "state": _jsonable(state),
        "exact_resume": sampling is not None,
        "reason": reason if sampling is None else None,
        "sampling": sampling,
    }
    io.write_json(directory / STATE_FILE, data)
    if arrays:
        import torch

        io.save_tensors(directory / ARRAYS_FILE, {k: torch.from_numpy(np.ascontiguousarray(v))
                                                  for k, v in arrays.items()})


def read_env_runners(directory: Path) -> EnvRunnerCheckpoint:
    """Read and parse ``env_runner/``; raises ``CheckpointError`` naming a bad file."""
    path = directory / STATE_FILE
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("state"), dict):
        raise io.CheckpointError(f"checkpoint file {str(path)!r} has no 'state' object")
    arrays: Dict[str, np.ndarray] = {}
    if data.get("sampling") is not None and (directory / ARRAYS_FILE).exists():
        arrays = {k: v.numpy() for k, v in io.load_tensors(directory / ARRAYS_FILE).items()}
    return EnvRunnerCheckpoint(state=data["state"], sampling=data.get("sampling"), arrays=arrays,
                               exact_resume=bool(data.get("exact_resume")), reason=data.get("reason"))


def apply_env_runners(group: Any, payload: EnvRunnerCheckpoint) -> None:
    """Load what :func:`read_env_runners` returned into the runners."""
    group.set_state(payload.state)
    set_sampling = getattr(group, "set_sampling_state", None)
    if payload.sampling is not None and set_sampling is not None:
        set_sampling(payload.sampling, payload.arrays)


def _jsonable(value: Any) -> Any:
    """Runner state as plain JSON (numpy values become lists and numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"env runner state value {value!r} ({type(value).__name__}) cannot be stored as JSON")
