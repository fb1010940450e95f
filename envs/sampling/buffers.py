"""Preallocated, growable per-module step storage for the env runner.

Why this exists: the env runner writes one BLOCK of rows per module per
lockstep step (all agents of that module that acted, across all envs) instead
of appending per-agent Python objects. Rows are in time order; the runner
re-orders them into agent-trajectory segments once per ``sample()`` call with
a single stable argsort over the episode-id column.

Columns may be nested (dict / tuple of arrays), as observations with action
masks (``{"observation", "action_mask"}``), Dict actions and recurrent states
are. Nested columns are allocated lazily from the first block written to them,
so the buffer needs no space objects. Columns keep the dtype of the blocks:
uint8 image observations stay uint8 (4x smaller than float32; raw pistonball
frames are 164 kB each), and the model casts them when it reads them.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

import numpy as np

from marl.core.nested import Nested, flatten_nested, set_rows, take_rows, tree_map

# --------------------------------------------------------------------------
# Module step buffer.
# --------------------------------------------------------------------------


def _alloc_like(block: Nested, capacity: int) -> Nested:
    return tree_map(lambda a: np.empty((capacity,) + a.shape[1:], dtype=a.dtype), block)


def _grow(col: Nested, n: int, capacity: int) -> Nested:
    def grow_leaf(a: np.ndarray) -> np.ndarray:
        new = np.empty((capacity,) + a.shape[1:], dtype=a.dtype)
        new[:n] = a[:n]
        return new

    return tree_map(grow_leaf, col)


class ModuleStepBuffer:
    """Time-ordered rows of one module: one row per agent action.

    ``rewards``, ``terminateds``, ``truncateds`` and ``eps_id`` are plain
    arrays that the runner updates in place by row index (rewards arrive after
    the action, possibly several steps later for turn-based envs); every other
    column is written in whole blocks through :meth:`append`.
    """

    FIXED = ("rewards", "terminateds", "truncateds", "eps_id")

    def __init__(self, capacity: int = 256) -> None:
        self.n = 0
        self.capacity = max(int(capacity), 1)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminateds = np.zeros(self.capacity, bool)
        self.truncateds = np.zeros(self.capacity, bool)
        self.eps_id = np.zeros(self.capacity, np.int64)
        self.columns: Dict[str, Nested] = {}

    def _ensure(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_cap = max(needed, 2 * self.capacity)
        n = self.n
        for name in self.FIXED:
            old = getattr(self, name)
            new = np.zeros(new_cap, old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
        for name, col in self.columns.items():
            self.columns[name] = _grow(col, n, new_cap)
        self.capacity = new_cap

    def append(self, size: int, eps_id: np.ndarray, blocks: Mapping[str, Nested]) -> int:
        """Write ``size`` new rows; returns the index of the first one.

        ``blocks`` maps column names to structures of ``[size, ...]`` arrays
        (or None to skip a column for this block). New rows start with reward
        0 and both done flags False.
        """
        r0 = self.n
        r1 = r0 + size
        self._ensure(r1)
        # rewards / done flags of unused rows are kept at 0 (see keep_rows), so
        # new rows need no per-step reset.
        self.eps_id[r0:r1] = eps_id
        columns = self.columns
        for name, block in blocks.items():
            if block is None:
                continue
            col = columns.get(name)
            if col is None:
                col = columns[name] = _alloc_like(block, self.capacity)
            if isinstance(col, np.ndarray):
                col[r0:r1] = block
            else:
                set_rows(col, slice(r0, r1), block)
        self.n = r1
        return r0

    @property
    def nbytes(self) -> int:
        """Bytes allocated for every column (all ``capacity`` rows), for memory accounting."""
        arrays: Dict[str, np.ndarray] = {name: getattr(self, name) for name in self.FIXED}
        for name, col in self.columns.items():
            flatten_nested(name, col, arrays)
        return sum(a.nbytes for a in arrays.values())

    def clear(self) -> None:
        """Drop every row."""
        self.keep_rows(())

    def column(self, name: str) -> Optional[Nested]:
        """The first ``n`` rows of a column (views), or None if never written."""
        if name in self.FIXED:
            return getattr(self, name)[: self.n]
        col = self.columns.get(name)
        if col is None:
            return None
        return take_rows(col, slice(0, self.n))

    def gather(self, name: str, idx: np.ndarray) -> Optional[Nested]:
        """Copies of rows ``idx`` of a column (None if the column was never written)."""
        if name in self.FIXED:
            return getattr(self, name)[idx]
        col = self.columns.get(name)
        if col is None:
            return None
        return take_rows(col, idx)

    def keep_rows(self, rows: Iterable[int]) -> np.ndarray:
        """Move ``rows`` (in the given order) to the front and drop all others.

        Returns the new index of each kept row (``0..len(rows)-1``). Used for
        actions still waiting for their next observation at the end of a
        ``sample()`` call: they belong to the next call.
        """
        rows = np.asarray(list(rows), dtype=np.int64)
        p = len(rows)
        if p:
            for name in self.FIXED:
                arr = getattr(self, name)
                arr[:p] = arr[rows]
            for name, col in self.columns.items():
                def move(a: np.ndarray) -> None:
                    a[:p] = a[rows]

                tree_map(move, col)
        self.rewards[p:] = 0.0
        self.terminateds[p:] = False
        self.truncateds[p:] = False
        self.n = p
        return np.arange(p, dtype=np.int64)
