"""Value predictions for whole sample batches, before the update epochs.

Values are computed learner-side (as RLlib's GAE connector does) with one
no-grad ``forward_train`` on the container, so modules behind a shared
encoder get them through the container's own routing.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
import torch

from marl.core.apis import ValueFunctionAPI
from marl.core.columns import BOOTSTRAP_OBS, BOOTSTRAP_STATE_IN, Columns
from marl.core.constants import ModuleID
from marl.core.multi_rl_module import MultiRLModule

from learners.batching import leading_dim, map_structure, module_device, take, to_device, to_tensor

CHUNK = 2048


def _values_from_output(module: MultiRLModule, mid: ModuleID, batch: Dict[str, Any], out: Dict[str, Any]) -> torch.Tensor:
    if Columns.VF_PREDS in out:
        return out[Columns.VF_PREDS]
    sub = module[mid]
    if isinstance(sub, ValueFunctionAPI):
        return sub.compute_values(batch, out.get(Columns.EMBEDDINGS))
    raise TypeError(
        f"module {mid!r} ({type(sub).__name__}) produced no {Columns.VF_PREDS!r} and does not "
        "implement ValueFunctionAPI.compute_values(); PPO needs state values"
    )


@torch.no_grad()
def predict_values(
    module: MultiRLModule, inputs: Dict[ModuleID, Dict[str, Any]]
) -> Dict[ModuleID, np.ndarray]:
    """Values for ``{module_id: {OBS: [N, ...] (+ STATE_IN / sequences)}}``.

    Runs the container in chunks of rows so image batches stay within memory.
    """
    device = module_device(module)
    inputs = {mid: to_device(to_tensor(b), device) for mid, b in inputs.items()}
    sizes = {mid: leading_dim(b[Columns.OBS]) for mid, b in inputs.items()}
    results: Dict[ModuleID, list] = {mid: [] for mid in inputs}
    longest = max(sizes.values(), default=0)
    for start in range(0, longest, CHUNK):
        chunk = {
            mid: take(b, slice(start, start + CHUNK))
            for mid, b in inputs.items()
            if start < sizes[mid]
        }
        out = module.forward_train(chunk)
        for mid, b in chunk.items():
            results[mid].append(_values_from_output(module, mid, b, out[mid]).float().cpu())
    return {mid: torch.cat(v).numpy() if v else np.zeros(0, np.float32) for mid, v in results.items()}


def flat_and_bootstrap_values(
    module: MultiRLModule, samples: Dict[ModuleID, Dict[str, Any]], max_seq_len: int
) -> Dict[ModuleID, Tuple[np.ndarray, np.ndarray]]:
    """``{module_id: (values [N], bootstrap_values [S])}`` for sampled segments.

    Stateless modules: one pass over the step observations and one over the
    bootstrap observations. Recurrent modules: the steps are run as
    sequences from their recorded states, the bootstrap observations as
    length-1 sequences from the state after each segment.
    """
    from learners.batching import chunk_into_sequences

    flat_inputs, boot_inputs, seq_info = {}, {}, {}
    for mid, b in samples.items():
        if Columns.STATE_IN in b:
            seq = chunk_into_sequences(
                {Columns.OBS: b[Columns.OBS], Columns.STATE_IN: b[Columns.STATE_IN],
                 Columns.SEQ_LENS: b[Columns.SEQ_LENS]},
                max_seq_len,
            )
            flat_inputs[mid] = {Columns.OBS: seq[Columns.OBS], Columns.STATE_IN: seq[Columns.STATE_IN]}
            seq_info[mid] = seq[Columns.LOSS_MASK]
            boot_inputs[mid] = {
                Columns.OBS: map_structure(lambda x: np.asarray(x)[:, None], b[BOOTSTRAP_OBS]),
                Columns.STATE_IN: b[BOOTSTRAP_STATE_IN],
            }
        else:
            flat_inputs[mid] = {Columns.OBS: b[Columns.OBS]}
            boot_inputs[mid] = {Columns.OBS: b[BOOTSTRAP_OBS]}
    flat = predict_values(module, flat_inputs)
    boot = predict_values(module, boot_inputs)
    result = {}
    for mid in samples:
        values = flat[mid]
        if mid in seq_info:
            values = values.reshape(seq_info[mid].shape)[seq_info[mid]]
        result[mid] = (values.reshape(-1), boot[mid].reshape(-1))
    return result
