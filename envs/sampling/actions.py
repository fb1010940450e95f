"""Module actions to env actions, and the fast categorical sampler."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import gymnasium as gym
import numpy as np
import torch

from marl.core.columns import Columns

class ActionAdapter:
    """Turns a batch of module actions into one env action per row.

    Discrete / MultiDiscrete: the space's ``start`` is added (distributions
    produce 0-based indices). Box, as RLlib's ``normalize_actions`` /
    ``clip_actions`` say: with ``normalize_actions`` a bounded float Box reads
    module actions as living in [-1, 1] and maps them linearly onto
    [low, high] (then clips), so a unit-variance Gaussian explores the whole
    range whatever the env's scale; otherwise ``clip_actions`` clips to the
    bounds and without either the raw action goes to the env. The batch always
    records the module's own action, so ``ACTION_LOGP`` matches it.
    Dict / Tuple: per component.
    """

    def __init__(self, space: Optional[gym.Space], normalize_actions: bool = True,
                 clip_actions: bool = False) -> None:
        self.space = space
        self.kind = "raw"
        self.scale: Optional[np.ndarray] = None
        if isinstance(space, gym.spaces.Discrete):
            self.kind = "discrete"
            self.start = int(space.start)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            self.kind = "multidiscrete"
            self.start = np.asarray(space.start)
            self.has_start = bool(np.any(self.start != 0))
        elif isinstance(space, gym.spaces.Box):
            self.kind = "box"
            self.low = space.low
            self.high = space.high
            self.dtype = space.dtype
            bounded = bool(np.all(space.bounded_below) and np.all(space.bounded_above))
            if normalize_actions and bounded and np.issubdtype(space.dtype, np.floating):
                self.scale = ((space.high - space.low) / 2.0).astype(np.float64)
            self.clip = self.scale is not None or bool(clip_actions)
        elif isinstance(space, gym.spaces.Dict):
            self.kind = "dict"
            self.children = {k: ActionAdapter(s, normalize_actions, clip_actions)
                             for k, s in space.spaces.items()}
        elif isinstance(space, gym.spaces.Tuple):
            self.kind = "tuple"
            self.children = tuple(ActionAdapter(s, normalize_actions, clip_actions) for s in space.spaces)

    def env_format_array(self, actions: Any) -> Any:
        """Batched env-format actions (start added); Box NOT clipped (for PREV_ACTIONS)."""
        if self.kind == "discrete":
            return actions + self.start if self.start else actions
        if self.kind == "multidiscrete":
            return actions + self.start if self.has_start else actions
        if self.kind == "dict":
            return {k: c.env_format_array(actions[k]) for k, c in self.children.items()}
        if self.kind == "tuple":
            return tuple(c.env_format_array(actions[i]) for i, c in enumerate(self.children))
        return actions

    def to_env(self, actions: Any) -> List[Any]:
        """One env action per batch row."""
        kind = self.kind
        if kind == "discrete":
            if self.start:
                actions = actions + self.start
            # numpy scalars, not Python ints: gymnasium's Discrete.contains (which
            # many envs call on every action) is ~2x slower on Python ints.
            return list(actions)
        if kind == "box":
            if self.scale is not None:  # [-1, 1] -> [low, high]
                actions = self.low + (np.asarray(actions, np.float64) + 1.0) * self.scale
            if self.clip:
                actions = np.clip(actions, self.low, self.high)
            return list(actions.astype(self.dtype, copy=False))
        if kind == "multidiscrete":
            if self.has_start:
                actions = actions + self.start
            return list(actions)
        if kind == "dict":
            cols = {k: c.to_env(actions[k]) for k, c in self.children.items()}
            n = len(next(iter(cols.values()))) if cols else 0
            return [{k: v[i] for k, v in cols.items()} for i in range(n)]
        if kind == "tuple":
            cols = [c.to_env(actions[i]) for i, c in enumerate(self.children)]
            n = len(cols[0]) if cols else 0
            return [tuple(v[i] for v in cols) for i in range(n)]
        if isinstance(actions, np.ndarray):
            return list(actions)
        return list(actions)


_ROWS = np.arange(4096)
_TINY = {np.dtype(np.float32): np.finfo(np.float32).tiny, np.dtype(np.float64): np.finfo(np.float64).tiny}


def sample_categorical(outputs: Dict[str, Any], explore: bool,
                        rng: np.random.Generator) -> Optional[Dict[str, Any]]:
    """``actions_from_outputs`` for a ``TorchCategorical`` module, without building distributions.

    Exploring: Gumbel-max sampling, ``argmax(log_softmax(logits) - log(-log(u)))``
    with ``u ~ U[0, 1)``, which draws exactly from the categorical distribution of
    the logits (masked logits at ``finfo.min`` keep probability 0, and so does any
    action whose ``u`` is 0); ``ACTION_LOGP`` is the log-softmax at the sampled
    index, as ``TorchCategorical.logp`` computes it. Greedy: the argmax of the
    logits (``to_deterministic()``). ACTIONS / ACTION_LOGP come back as numpy
    arrays (the runner converts everything to numpy anyway); numpy does the small
    elementwise work because its per-call overhead is a third of torch's.
    Returns None (use the generic path) when the outputs do not fit that shape.
    """
    if Columns.ACTIONS in outputs:
        return None
    logits = outputs.get(Columns.ACTION_DIST_INPUTS)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_cpu:
        return None
    if logits.requires_grad:
        logits = logits.detach()
    out = dict(outputs)
    if not explore:
        out[Columns.ACTIONS] = logits.argmax(-1).numpy()
        return out
    logp_all = torch.log_softmax(logits, -1).numpy()
    dtype = logp_all.dtype if logp_all.dtype in _TINY else np.dtype(np.float64)
    u = rng.random(logp_all.shape, dtype=dtype)
    np.maximum(u, _TINY[dtype], out=u)  # u == 0 would make log(-log(u)) a warning
    actions = (logp_all - np.log(-np.log(u))).argmax(-1)
    out[Columns.ACTIONS] = actions
    if Columns.ACTION_LOGP not in out:
        rows = _ROWS[: len(actions)] if len(actions) <= len(_ROWS) else np.arange(len(actions))
        out[Columns.ACTION_LOGP] = logp_all[rows, actions]
    return out

