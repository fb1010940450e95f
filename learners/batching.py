"""Shaping sampled data for the learner: tensors, sequences, minibatches."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from marl.core.columns import SEGMENT_COLUMNS, Columns
from marl.core.constants import ModuleID
from marl.core.nested import num_rows as leading_dim
from marl.core.nested import take_rows as take
from marl.core.nested import tree_map as map_structure


def to_tensor(value: Any) -> Any:
    """numpy (nested) -> torch, keeping integer actions integral."""

    def convert(x):
        if isinstance(x, torch.Tensor):
            return x
        arr = np.asarray(x)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr))

    return map_structure(convert, value)


def to_device(value: Any, device: torch.device) -> Any:
    """Move a (nested) batch of tensors to the learner's device; a no-op on CPU."""
    if device.type == "cpu":
        return value
    return map_structure(lambda x: x.to(device, non_blocking=True), value)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's parameters (CPU for a module without any)."""
    param = next(iter(module.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def step_columns(batch: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in SEGMENT_COLUMNS}


def chunk_into_sequences(
    batch: Dict[str, Any], max_seq_len: int
) -> Dict[str, Any]:
    """Cut segments into zero-padded ``[C, max_seq_len, ...]`` sequences.

    Recurrent modules train on sequences that start from the recorded state
    (``STATE_IN`` of the chunk's first step); ``LOSS_MASK`` marks real steps.
    """
    seq_lens = np.asarray(batch[Columns.SEQ_LENS])
    starts, lengths = [], []
    offset = 0
    for seg_len in seq_lens:
        for s in range(0, int(seg_len), max_seq_len):
            starts.append(offset + s)
            lengths.append(min(max_seq_len, int(seg_len) - s))
        offset += int(seg_len)
    starts_arr = np.asarray(starts, dtype=np.int64)
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    # Gather index [C, L]; padding positions point at the chunk start and are masked.
    steps = np.arange(max_seq_len)[None, :]
    mask = steps < lengths_arr[:, None]
    index = np.where(mask, starts_arr[:, None] + steps, starts_arr[:, None])

    out: Dict[str, Any] = {}
    for key, value in step_columns(batch).items():
        if key == Columns.STATE_IN:
            out[key] = take(value, starts_arr)
        else:
            out[key] = map_structure(lambda x: np.asarray(x)[index], value)
    out[Columns.LOSS_MASK] = mask
    out[Columns.SEQ_LENS] = lengths_arr
    return out


#: A per-row bool column of PPO train batches: True on the last step of each
#: segment, where RLlib's train batch holds the artificial (masked) bootstrap
#: step it appends to every episode chunk. ``iter_minibatches`` counts one
#: empty slot there, so ``minibatch_size`` and ``num_epochs`` take RLlib's
#: number of gradient steps (see ``minibatches_include_bootstrap_steps``).
BOOTSTRAP_SLOT_AFTER = "bootstrap_slot_after"


def epoch_slots(num_rows: int, slot_after: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One epoch's slots in sampled order: row indices, with ``-1`` for an empty
    slot after every row flagged in ``slot_after``."""
    rows = torch.arange(num_rows)
    if slot_after is None:
        return rows
    flags = torch.as_tensor(slot_after, dtype=torch.bool).reshape(-1)
    if flags.numel() != num_rows:
        raise ValueError(f"{BOOTSTRAP_SLOT_AFTER} has {flags.numel()} entries for a batch of {num_rows} rows")
    empties_before = torch.cumsum(flags.long(), 0) - flags.long()
    slots = torch.full((num_rows + int(flags.sum()),), -1, dtype=torch.long)
    slots[rows + empties_before] = rows
    return slots


def iter_minibatches(
    batches: Dict[ModuleID, Dict[str, torch.Tensor]],
    minibatch_sizes: Dict[ModuleID, int],
    num_epochs: int,
    generator: torch.Generator,
    shuffle: bool = True,
    shuffle_first_epoch: bool = False,
    slots_after: Optional[Dict[ModuleID, torch.Tensor]] = None,
) -> Iterator[Dict[ModuleID, Dict[str, torch.Tensor]]]:
    """RLlib's cyclic minibatches: every step holds ``minibatch_size`` slots of every module.

    Each module walks through its own slots in ``minibatch_sizes[mid]``
    slices, wrapping into a new pass whenever it reaches the end; steps go
    on until every module has completed ``num_epochs`` passes. So a summed
    multi-module loss, and a shared encoder's single optimizer step, always
    sees all modules, and a module with fewer rows (an agent whose episodes
    end sooner) is cycled through more passes instead of getting smaller
    minibatches, as RLlib's ``MiniBatchCyclicIterator`` does. (A module with
    fewer rows than its minibatch size contributes all its rows once per
    step, where RLlib would repeat rows within the step.)

    As in RLlib, the first pass runs in sampled order and ``shuffle``
    reshuffles from the second (``shuffle_first_epoch`` shuffles the first
    too, as CleanRL does). A slot is a row, or, after each row flagged in
    ``slots_after[mid]``, an empty slot standing for RLlib's masked bootstrap
    step: it takes a place in its minibatch and trains nothing, so the
    number of gradient steps and the real rows of each step are RLlib's.
    A step whose slots are all empty for a module leaves that module out.
    """
    sizes = {mid: leading_dim(step_columns(b)) for mid, b in batches.items()}
    sizes = {mid: n for mid, n in sizes.items() if n > 0}
    if not sizes:
        return
    slots = {mid: epoch_slots(n, (slots_after or {}).get(mid)) for mid, n in sizes.items()}

    def reorder(order: torch.Tensor) -> torch.Tensor:
        return order[torch.randperm(len(order), generator=generator)] if shuffle else order

    perms = {mid: reorder(order) if shuffle_first_epoch else order for mid, order in slots.items()}
    starts = {mid: 0 for mid in sizes}
    passes = {mid: 0 for mid in sizes}
    while min(passes.values()) < num_epochs:
        mb = {}
        for mid in sizes:
            n = len(perms[mid])
            need, start, parts = min(max(1, minibatch_sizes[mid]), n), starts[mid], []
            while start + need >= n:
                parts.append(perms[mid][start:])
                need -= n - start
                start = 0
                passes[mid] += 1
                perms[mid] = reorder(perms[mid])
            if need > 0:
                parts.append(perms[mid][start:start + need])
                start += need
            starts[mid] = start
            index = torch.cat(parts) if len(parts) > 1 else parts[0]
            if slots_after:
                index = index[index >= 0]
            if len(index):
                mb[mid] = take(step_columns(batches[mid]), index)
        if mb:
            yield mb
