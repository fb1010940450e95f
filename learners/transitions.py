"""From sampled agent-trajectory segments to (n-step) transitions for replay.

Env runners hand over segments (contiguous steps of one agent in one
episode, ``SEQ_LENS``) with the observation after each segment
(``BOOTSTRAP_OBS``). A transition at step ``t`` of a segment ending at ``e``
looks ``k = min(n_step, e - t)`` steps ahead:

- ``rewards``: ``sum_{j<k} gamma^j r_{t+j}``;
- ``new_obs``: the observation ``k`` steps later: ``obs[t+k]`` inside the
  segment, else the segment's bootstrap observation (the next observation
  when the sample call cut the segment, the final one on truncation);
- ``terminateds``: True only when the window reaches the segment's end and
  that end is a termination, so truncation and call boundaries bootstrap;
- ``n_step``: ``k``, so the target discounts the bootstrap by ``gamma^k``
  (RLlib's ``batch["n_step"]``).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from marl.core.columns import BOOTSTRAP_OBS, Columns
from marl.core.nested import take_rows, tree_map2

N_STEP = "n_step"


def segment_transitions(batch: Dict[str, Any], n_step: int, gamma: float) -> Dict[str, Any]:
    """``{obs, actions, rewards, new_obs, terminateds, n_step}`` per sampled step."""
    if n_step < 1:
        raise ValueError(f"n_step={n_step!r}: expected an int >= 1")
    seq_lens = np.asarray(batch[Columns.SEQ_LENS], np.int64)
    rewards = np.asarray(batch[Columns.REWARDS], np.float64)
    terminateds = np.asarray(batch[Columns.TERMINATEDS], bool)
    n = len(rewards)
    ends = np.repeat(np.cumsum(seq_lens), seq_lens)          # exclusive end of each row's segment
    segment = np.repeat(np.arange(len(seq_lens)), seq_lens)  # segment index of each row
    t = np.arange(n)
    k = np.minimum(n_step, ends - t)
    returns = np.zeros(n)
    for j in range(n_step):
        inside = j < k
        returns[inside] += gamma ** j * rewards[(t + j)[inside]]
    reaches_end = t + k == ends
    next_rows = np.minimum(t + k, max(n - 1, 0))
    boot = take_rows(batch[BOOTSTRAP_OBS], segment)
    inner = take_rows(batch[Columns.OBS], next_rows)
    new_obs = tree_map2(lambda a, b: np.where(_expand(reaches_end, a), b, a), inner, boot)
    return {
        Columns.OBS: batch[Columns.OBS],
        Columns.ACTIONS: np.asarray(batch[Columns.ACTIONS]),
        Columns.REWARDS: returns.astype(np.float32),
        Columns.NEXT_OBS: new_obs,
        Columns.TERMINATEDS: reaches_end & terminateds[np.maximum(ends - 1, 0)],
        N_STEP: k.astype(np.int64),
    }


def _expand(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (np.ndim(like) - 1))
