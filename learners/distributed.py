"""Data-parallel training over several learners with ``torch.distributed``.

Every learner holds the whole container and the whole train batch (the
advantages and their standardisation are therefore computed over the batch
all learners share, exactly as one learner would), trains on its own shard of
rows, and averages gradients with the others once per minibatch, as
``DistributedDataParallel`` does: one all-reduce of one flat buffer, then the
same clipping and the same optimizer step on every learner, so the weights
stay identical without any broadcast.

Why not the ``DistributedDataParallel`` wrapper itself: the learner calls
``forward_train`` (not ``forward``) and losses call module methods outside
it (a value head, MAPPO's critic), which DDP's reducer cannot track; and a
module with no loss in a minibatch would make DDP wait for gradients that
never come. Averaging the flat gradient vector has DDP's semantics (a
parameter shared by several modules appears once, so it is reduced once)
without those constraints.

Shards are equal in size (``floor(rows / world_size)`` rows of every module
per learner; the at most ``world_size - 1`` remaining rows of a module are not
trained on in that iteration), so every learner takes the same number of
minibatch steps (a learner with one step more would wait forever in the
all-reduce) and consumes its shuffling RNG identically: all learners keep the
same RNG state, and one saved generator resumes them all.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from marl.core.constants import ModuleID
from marl.core.nested import num_rows, take_rows

from learners.batching import step_columns

#: Metrics that add up over learners (the rest are averaged).
SUMMED_METRICS = ("num_module_steps_trained",)


@dataclass
class DistributedContext:
    """This learner's place in the process group."""

    rank: int
    world_size: int

    @classmethod
    def join(cls, *, rank: int, world_size: int, init_method: str, backend: str = "gloo",
             timeout_s: float = 600.0) -> "DistributedContext":
        """Join (or form) the process group; ``timeout_s`` bounds every collective, so a
        learner that died makes the others fail with an error instead of hanging."""
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, init_method=init_method, rank=rank,
                                    world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank=rank, world_size=world_size)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # ---------------------------------------------------------------- data
    def shard(self, batches: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, Dict[str, Any]]:
        """This learner's equal share of every module's rows (see the module docstring)."""
        out = {}
        for mid, batch in batches.items():
            rows = step_columns(batch)
            per_learner = num_rows(rows) // self.world_size
            start = self.rank * per_learner
            out[mid] = take_rows(rows, slice(start, start + per_learner))
        return out

    # ----------------------------------------------------------- gradients
    def average_gradients(self, params: Sequence[torch.nn.Parameter], loss_is_finite: bool) -> bool:
        """Replace every gradient by its mean over the learners; returns whether every
        learner's loss was finite (a learner with a NaN loss sends zeros and says so,
        so all of them stop at the same step instead of deadlocking).

        A parameter keeps ``grad=None`` when no learner produced a gradient for
        it, so an optimizer skips it exactly as it would with one learner.
        """
        if not params:
            flags = torch.tensor([0.0 if loss_is_finite else 1.0])
            dist.all_reduce(flags)
            return float(flags[0]) == 0.0
        ref = params[0]
        flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=ref.dtype, device=p.device)
                for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        bad_loss = torch.tensor([0.0 if loss_is_finite else 1.0], dtype=ref.dtype, device=ref.device)
        buffer = torch.cat(flat + [present, bad_loss])
        dist.all_reduce(buffer)
        buffer /= self.world_size
        offset = 0
        for p, has_grad in zip(params, buffer[-len(params) - 1:-1].tolist()):
            n = p.numel()
            if has_grad > 0:
                p.grad = buffer[offset:offset + n].view_as(p).clone()
            offset += n
        return float(buffer[-1]) == 0.0

    # ------------------------------------------------------------- metrics
    def average_metrics(self, results: Dict[ModuleID, Dict[str, float]]) -> Dict[ModuleID, Dict[str, float]]:
        """Means over learners (sums for counts), so every learner adapts learner state
        (PPO's KL coefficient) from the same numbers and reports the same result."""
        keys: List[Tuple[ModuleID, str]] = sorted(
            (mid, k) for mid, stats in results.items() for k, v in stats.items() if _is_number(v))
        gathered: List[Optional[List[Tuple[ModuleID, str]]]] = [None] * self.world_size
        dist.all_gather_object(gathered, keys)
        if any(g != keys for g in gathered):
            raise RuntimeError(
                f"learner {self.rank}: the learners report different metrics ({keys} here, "
                f"{[g for g in gathered if g != keys][0]} on another); their batches hold different modules")
        values = torch.tensor([float(results[mid][k]) for mid, k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        out = {mid: dict(stats) for mid, stats in results.items()}
        for (mid, k), total in zip(keys, values.tolist()):
            out[mid][k] = int(round(total)) if k in SUMMED_METRICS else total / self.world_size
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
