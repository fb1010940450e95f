"""One global input per env step in the batches the env runners return.

Inside a runner every agent row carries its step's global input (a block
write per step, like every other column). A batch then stores it once per
env step: ``GLOBAL_OBS`` becomes a table shared by every module's batch of
the call (the same array object, so it is also pickled once on the way from
a worker process), and rows and segments point into it with
``GLOBAL_INDEX`` / ``BOOTSTRAP_GLOBAL_INDEX``. Rows are matched on the env
episode and step they belong to (``ENV_EPISODE_ID``, ``ENV_T``); a
segment's bootstrap input belongs to the step after its last one. Segments
that terminated have no next step: they point at a row of zeros (their
bootstrap value is multiplied by 0 anyway), so they can never shadow a real
state of that step.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from marl.core.columns import (
    BOOTSTRAP_GLOBAL_INDEX, BOOTSTRAP_GLOBAL_OBS, ENV_EPISODE_ID, ENV_T, GLOBAL_INDEX, GLOBAL_OBS, Columns,
    env_step_keys,
)

def share_global_inputs(batches: Dict[str, Dict[str, Any]]) -> None:
    """Replace per-row ``GLOBAL_OBS`` (and ``BOOTSTRAP_GLOBAL_OBS``) by one shared table, in place."""
    order = [mid for mid, b in batches.items() if GLOBAL_OBS in b]
    if not order:
        return
    keys: List[np.ndarray] = []
    values: List[np.ndarray] = []
    for mid in order:  # every real step row first: on equal keys np.unique keeps the first
        b = batches[mid]
        keys.append(env_step_keys(b[ENV_EPISODE_ID], b[ENV_T]))
        values.append(np.asarray(b[GLOBAL_OBS]))
    boot_live: Dict[str, np.ndarray] = {}
    for mid in order:
        b = batches[mid]
        seq_lens = np.asarray(b[Columns.SEQ_LENS], np.int64)
        last = np.cumsum(seq_lens) - 1
        live = ~np.asarray(b[Columns.TERMINATEDS], bool)[last]
        boot_live[mid] = live
        keys.append(env_step_keys(b[ENV_EPISODE_ID][last][live], b[ENV_T][last][live] + 1))
        values.append(np.asarray(b[BOOTSTRAP_GLOBAL_OBS])[live])
    all_keys, all_values = np.concatenate(keys), np.concatenate(values)
    _, first, inverse = np.unique(all_keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    width = all_values.shape[1:]
    table = np.concatenate([all_values[first], np.zeros((1,) + width, all_values.dtype)])
    zero_row = len(table) - 1
    pos = 0
    for mid in order:  # step rows, in the order they were appended
        b = batches[mid]
        n = len(b[ENV_T])
        b[GLOBAL_INDEX] = inverse[pos:pos + n].astype(np.int64)
        pos += n
    for mid in order:
        b = batches[mid]
        live = boot_live[mid]
        index = np.full(len(live), zero_row, np.int64)
        index[live] = inverse[pos:pos + int(live.sum())]
        pos += int(live.sum())
        b[BOOTSTRAP_GLOBAL_INDEX] = index
        b[GLOBAL_OBS] = table
        b.pop(BOOTSTRAP_GLOBAL_OBS, None)


def merge_global_tables(parts: Sequence[Mapping[str, Mapping[str, Any]]],
                        merged: Dict[str, Dict[str, Any]]) -> None:
    """After ``merge_batches`` concatenated several runners' batches column by column:
    one table for all of them, every index moved by its runner's offset."""
    tables, offsets, total = [], [], 0
    for part in parts:
        table = next((b[GLOBAL_OBS] for b in part.values() if GLOBAL_OBS in b), None)
        offsets.append(total)
        if table is not None:
            tables.append(table)
            total += len(table)
    if not tables:
        return
    table = np.concatenate(tables)
    for mid, b in merged.items():
        if GLOBAL_OBS not in b:
            continue
        for column in (GLOBAL_INDEX, BOOTSTRAP_GLOBAL_INDEX):
            pieces = [np.asarray(part[mid][column]) + offset
                      for part, offset in zip(parts, offsets) if mid in part]
            b[column] = np.concatenate(pieces)
        b[GLOBAL_OBS] = table
