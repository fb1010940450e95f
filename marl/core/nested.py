"""Nested structures of arrays: the one set of helpers envs and learners share.

Observations with action masks (``{"observation", "action_mask"}``), Dict or
Tuple actions and recurrent states are dicts/tuples of arrays; these helpers
treat such a structure like one array (map over leaves, stack, take rows,
concatenate) so the sampler and the learner need no per-space code.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping

import numpy as np
import torch

Nested = Any  # np.ndarray | dict[str, Nested] | tuple[Nested, ...]


def tree_map(fn: Callable[[Any], Any], x: Nested) -> Nested:
    """Apply ``fn`` to every leaf of a dict/tuple/list structure."""
    if isinstance(x, Mapping):
        return {k: tree_map(fn, v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(tree_map(fn, v) for v in x)
    return fn(x)


def tree_map2(fn: Callable[[Any, Any], Any], x: Nested, y: Nested) -> Nested:
    """``fn`` applied leaf-wise to two structures of the same layout."""
    if isinstance(x, Mapping):
        return {k: tree_map2(fn, v, y[k]) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(tree_map2(fn, v, y[i]) for i, v in enumerate(x))
    return fn(x, y)


def stack_observations(observations: List[Any]) -> Nested:
    """Stack per-agent raw observations into a batch of the same structure.

    Arrays become ``[B, *shape]`` arrays keeping their dtype; dicts (e.g.
    PettingZoo's ``{"observation", "action_mask"}``) and tuples become dicts
    / tuples of stacked arrays; Python/numpy scalars (Discrete observations)
    become a ``[B]`` array.
    """
    first = observations[0]
    if isinstance(first, Mapping):
        return {k: stack_observations([o[k] for o in observations]) for k in first}
    if isinstance(first, tuple):
        return tuple(stack_observations([o[i] for o in observations]) for i in range(len(first)))
    if isinstance(first, np.ndarray):
        # np.array is ~3x faster than np.stack on lists of small arrays; it
        # only differs for ragged inputs, where np.stack gives the clear error.
        try:
            out = np.array(observations)
        except ValueError:
            out = None
        if out is None or out.dtype == object or out.shape[1:] != first.shape:
            return np.stack(observations)
        return out
    return np.asarray(observations)


def take_rows(x: Nested, idx: Any) -> Nested:
    """Rows ``idx`` (int, slice or index array) of every leaf."""
    if isinstance(x, np.ndarray):
        return x[idx]
    return tree_map(lambda a: a[idx], x)


def set_rows(dst: Nested, idx: Any, src: Nested) -> None:
    """``dst[idx] = src`` for every leaf (``idx``: int, slice or index array)."""
    if isinstance(dst, np.ndarray):
        dst[idx] = src
    elif isinstance(dst, Mapping):
        for k, sub in dst.items():
            set_rows(sub, idx, src[k])
    else:
        for i, sub in enumerate(dst):
            set_rows(sub, idx, src[i])


def flatten_nested(prefix: str, x: Nested, arrays: Dict[str, np.ndarray]) -> Any:
    """Store the leaves of a structure in ``arrays`` under ``prefix/...`` (for a
    safetensors file); return its JSON layout for ``unflatten_nested``."""
    if isinstance(x, dict):
        return {"dict": [[k, flatten_nested(f"{prefix}/{k}", v, arrays)] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"tuple": [flatten_nested(f"{prefix}/{i}", v, arrays) for i, v in enumerate(x)]}
    arrays[prefix] = np.ascontiguousarray(np.asarray(x))
    return {"array": prefix}


def unflatten_nested(layout: Any, arrays: Dict[str, np.ndarray]) -> Nested:
    """The structure ``flatten_nested`` described by ``layout`` (copies of the arrays)."""
    if "dict" in layout:
        return {k: unflatten_nested(v, arrays) for k, v in layout["dict"]}
    if "tuple" in layout:
        return tuple(unflatten_nested(v, arrays) for v in layout["tuple"])
    return np.array(arrays[layout["array"]])


def zeros_like_rows(x: Nested, n: int) -> Nested:
    """A zero structure with ``n`` rows and the per-row shapes/dtypes of ``x``."""
    return tree_map(lambda a: np.zeros((n,) + a.shape[1:], dtype=a.dtype), x)


def concat_nested(parts: List[Nested]) -> Nested:
    """Concatenate structures of arrays along the first axis."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: concat_nested([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(concat_nested([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts, axis=0)


def num_rows(x: Nested) -> int:
    """The batch size (leading dimension) of a structure of arrays or tensors."""
    while isinstance(x, (Mapping, tuple)):
        x = next(iter(x.values())) if isinstance(x, Mapping) else x[0]
    return len(x)


def to_numpy(x: Any) -> Any:
    """Tensors (nested) to numpy; numpy arrays pass through without a copy."""
    if type(x) is np.ndarray:
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(to_numpy(v) for v in x)
    return np.asarray(x)


def state_to_torch(weights: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, torch.Tensor]]:
    """``{module_id: {name: tensor}}`` from tensors or numpy arrays (as sent to workers)."""
    return {mid: {k: torch.as_tensor(v) for k, v in state.items()} for mid, state in weights.items()}


def to_tensor(x: Any) -> Any:
    """numpy (nested) to torch, sharing memory where numpy allows it (read-only arrays are copied)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x) if x.flags.writeable else torch.as_tensor(np.array(x))
    if isinstance(x, Mapping):
        return {k: to_tensor(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(to_tensor(v) for v in x)
    return torch.as_tensor(x)
