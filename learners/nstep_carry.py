"""n-step windows that span sampling calls.

A sampling call returns each agent-episode's steps of that call as one
segment. A step near the end of a segment the call cut (the episode goes on)
has fewer than ``n`` steps after it *in this call*, so its n-step window
would end early and bootstrap from the call's last observation. RLlib's
episode replay buffers avoid that by concatenating an episode's chunks as
they arrive (``concat_episode``), so a window runs across calls.

``NStepCarry`` gives the same windows with marl's row buffers: it holds back
the last ``horizon`` steps (``n_max - 1``) of every cut segment, raw, and
prepends them to the same agent-episode's steps in the next call (matched by
``EPS_ID``, unique per agent-episode and stable across calls). Those steps
therefore enter the replay buffer one call later, with their full windows.
A held-back episode that does not appear in the next call (dropped after an
env error, or an episode a ``num_episodes`` call discarded) is released then
with the windows it has, bootstrapping from the observation after its last
step, as any cut segment does.

The held-back steps are part of an exact resume: ``get_state`` /
``set_state`` store them next to the replay buffer in checkpoints.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from marl.core.columns import BOOTSTRAP_OBS, Columns
from marl.core.nested import concat_nested, flatten_nested, take_rows, unflatten_nested

#: Per-step columns the n-step transitions are built from (``segment_transitions``).
STEP_COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.TERMINATEDS, Columns.TRUNCATEDS,
                Columns.EPS_ID)


class NStepCarry:
    """Joins each agent-episode's steps across sampling calls for windows of up to ``horizon + 1`` steps."""

    def __init__(self, horizon: int) -> None:
        if horizon < 0:
            raise ValueError(f"horizon={horizon!r}: expected an int >= 0 (n_max - 1)")
        self.horizon = int(horizon)
        #: The held-back steps: STEP_COLUMNS per step, SEQ_LENS / BOOTSTRAP_OBS per agent-episode.
        self.pending: Optional[Dict[str, Any]] = None

    def __len__(self) -> int:
        return 0 if self.pending is None else len(self.pending[Columns.EPS_ID])

    def join(self, batch: Dict[str, Any]) -> Tuple[Dict[str, Any], np.ndarray]:
        """``(joined, ready)``: the held-back steps joined to ``batch``, and which rows to store now.

        ``joined`` holds STEP_COLUMNS, SEQ_LENS and BOOTSTRAP_OBS, one segment
        per agent-episode, held-back steps first. ``ready`` is False on the
        rows held back for the next call: the last ``horizon`` steps of every
        segment of ``batch`` that neither terminated nor was truncated.
        """
        fresh = {k: batch[k] for k in STEP_COLUMNS}
        fresh_lens = np.asarray(batch[Columns.SEQ_LENS], np.int64)
        if self.horizon == 0:
            joined = {**fresh, Columns.SEQ_LENS: fresh_lens, BOOTSTRAP_OBS: batch[BOOTSTRAP_OBS]}
            return joined, np.ones(len(fresh[Columns.EPS_ID]), bool)
        fresh_eps = _segment_ids(fresh[Columns.EPS_ID], fresh_lens)
        parts, boots, boot_eps = [fresh], [batch[BOOTSTRAP_OBS]], [fresh_eps]
        if self.pending is not None:
            pending = self.pending
            parts.insert(0, {k: pending[k] for k in STEP_COLUMNS})
            boots.insert(0, pending[BOOTSTRAP_OBS])
            boot_eps.insert(0, _segment_ids(pending[Columns.EPS_ID], pending[Columns.SEQ_LENS]))
        rows = concat_nested(parts) if len(parts) > 1 else fresh
        # Stable: an episode's held-back steps (first in ``parts``) stay before its new ones.
        order = np.argsort(rows[Columns.EPS_ID], kind="stable")
        rows = {k: take_rows(v, order) for k, v in rows.items()}
        eps, seq_lens = np.unique(rows[Columns.EPS_ID], return_counts=True)
        # Each episode's bootstrap observation: this call's where it has steps here, else the held one's.
        all_boot_eps = np.concatenate(boot_eps)
        latest = {int(e): i for i, e in enumerate(all_boot_eps.tolist())}  # later (fresh) entries win
        boot = take_rows(concat_nested(boots) if len(boots) > 1 else boots[0],
                         np.asarray([latest[int(e)] for e in eps], np.int64))
        ends = np.cumsum(seq_lens)
        last = ends - 1
        continues = (~np.asarray(rows[Columns.TERMINATEDS], bool)[last]
                     & ~np.asarray(rows[Columns.TRUNCATEDS], bool)[last]
                     & np.isin(eps, fresh_eps))
        held_lens = np.where(continues, np.minimum(seq_lens, self.horizon), 0)
        position = np.arange(len(order)) - np.repeat(ends - seq_lens, seq_lens)
        ready = position < np.repeat(seq_lens - held_lens, seq_lens)
        keep = np.flatnonzero(~ready)
        if len(keep):
            segs = np.flatnonzero(held_lens)
            self.pending = {**{k: take_rows(v, keep) for k, v in rows.items()},
                            Columns.SEQ_LENS: held_lens[segs], BOOTSTRAP_OBS: take_rows(boot, segs)}
        else:
            self.pending = None
        joined = {**rows, Columns.SEQ_LENS: seq_lens.astype(np.int64), BOOTSTRAP_OBS: boot}
        return joined, ready

    # ------------------------------------------------------------------ state
    def get_state(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """``(json_state, arrays)`` of the held-back steps (for a safetensors file)."""
        arrays: Dict[str, np.ndarray] = {}
        layout = None
        if self.pending is not None:
            layout = {k: flatten_nested(f"pending/{k}", v, arrays) for k, v in self.pending.items()}
        return {"horizon": self.horizon, "pending": layout}, arrays

    def set_state(self, json_state: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        if int(json_state["horizon"]) != self.horizon:
            raise ValueError(f"the stored n-step carry holds windows of horizon {json_state['horizon']!r}; "
                             f"this config's is {self.horizon} (n_step changed)")
        layout = json_state["pending"]
        pending = None if layout is None else {k: unflatten_nested(v, arrays) for k, v in layout.items()}
        if pending is not None:
            missing = set(STEP_COLUMNS + (Columns.SEQ_LENS, BOOTSTRAP_OBS)) - set(pending)
            if missing:
                raise KeyError(f"held-back n-step steps lack columns {sorted(missing)}")
        self.pending = pending


def _segment_ids(eps_id: Any, seq_lens: Any) -> np.ndarray:
    """Each segment's ``EPS_ID`` (its first row's)."""
    lens = np.asarray(seq_lens, np.int64)
    starts = np.cumsum(lens) - lens
    return np.asarray(eps_id, np.int64)[starts]


def carry_horizon(n_step: Any) -> int:
    """``n_max - 1`` for an int ``n_step`` or RLlib's range ``(low, high)`` (n up to ``high - 1``)."""
    from learners.transitions import n_step_range

    bounds = n_step_range(n_step)
    return bounds[1] - 2 if bounds else int(n_step) - 1


__all__: List[str] = ["NStepCarry", "carry_horizon", "STEP_COLUMNS"]
