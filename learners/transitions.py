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

``n_step=(low, high)`` is RLlib's range: every time a transition is replayed
its ``n`` is drawn anew, uniformly from ``low .. high - 1`` (numpy's
``integers(low, high)``, as RLlib's episode buffers draw it). Rows are
therefore stored with one window per ``n`` (``ranged_segment_transitions``:
the n-dependent columns get an axis of ``high - low`` choices) and
``choose_n_step`` picks one per replayed row. Near a segment's end the
stored window is shortened (``k = min(n, e - t)``). RLlib instead throws such
a draw away and samples another transition (an episode's last ``n - 1``
steps start windows only with a smaller n); ``replay_whole_windows`` does
that, and DQN/SAC use it unless ``shorten_n_step_at_episode_end=True``.

DQN and SAC pass each call's segments through ``learners.nstep_carry.NStepCarry``
first, which joins an agent-episode's steps across sampling calls, so their
segments end only where episodes end (RLlib's episode buffers concatenate
chunks the same way). VDN/QMIX/MASAC's joint rows (``joint_transitions``)
still end a window with its sampling call.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np

from marl.core.columns import BOOTSTRAP_OBS, Columns
from marl.core.nested import concat_nested, take_rows, tree_map, tree_map2

N_STEP = "n_step"
#: The columns whose value depends on n: ranged rows hold one per choice of n.
N_DEPENDENT_COLUMNS = (Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS, N_STEP)

NStep = Union[int, Sequence[int]]


def n_step_range(n_step: NStep) -> Tuple[int, int] | None:
    """``(low, high)`` for RLlib's ranged ``n_step`` (a pair), None for a plain int."""
    if isinstance(n_step, (list, tuple)):
        low, high = (int(v) for v in n_step)
        return low, high
    return None


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


def ranged_segment_transitions(batch: Dict[str, Any], n_step: NStep, gamma: float) -> Dict[str, Any]:
    """``segment_transitions`` for an int ``n_step``; for a range, every n's window side by side.

    With ``n_step=(low, high)`` the n-dependent columns are ``[rows, high - low, ...]``:
    column ``j`` is the window of ``n = low + j``. ``choose_n_step`` turns a
    replayed batch of such rows back into plain transitions.
    """
    bounds = n_step_range(n_step)
    if bounds is None:
        return segment_transitions(batch, int(n_step), gamma)
    per_n = [segment_transitions(batch, n, gamma) for n in range(*bounds)]
    rows = dict(per_n[0])
    for key in N_DEPENDENT_COLUMNS:
        rows[key] = _stack_choices([t[key] for t in per_n])
    return rows


def choose_n_step(batch: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    """Draw one ``n`` per replayed ranged row, uniformly, and keep only that window (in place)."""
    num, choices = np.shape(batch[N_STEP])[:2]
    return _keep_window(batch, rng.integers(0, choices, num))


def _keep_window(batch: Dict[str, Any], pick: np.ndarray) -> Dict[str, Any]:
    """Keep window ``pick[i]`` (``n = low + pick[i]``) of every ranged row ``i``, in place."""
    rows = np.arange(len(pick))
    for key in N_DEPENDENT_COLUMNS:
        batch[key] = tree_map(lambda a: a[rows, pick], batch[key])
    return batch


def replay_whole_windows(buffer: Any, num: int, n_step: NStep, max_rounds: int = 1000) -> Dict[str, Any]:
    """``num`` replayed transitions with RLlib's rule for windows at an episode's end.

    Each draw gets its ``n`` (a range: drawn per row, as ``choose_n_step``).
    A draw whose window would run past the end of its stored episode (its
    stored window is shorter than ``n``) is thrown away and drawn again, as
    RLlib's episode buffers do (``episode_ts + n > len(episode)``), so an
    episode's last ``n - 1`` steps start a window only with a smaller ``n``.
    ``buffer.sample`` adds the importance weights and indices of the kept rows.
    """
    bounds = n_step_range(n_step)
    parts, need = [], int(num)
    for _ in range(max_rounds):
        batch = buffer.sample(need)
        if bounds is not None:
            pick = buffer.rng.integers(0, bounds[1] - bounds[0], need)
            _keep_window(batch, pick)
            wanted = bounds[0] + pick
        else:
            wanted = int(n_step)
        whole = np.flatnonzero(np.asarray(batch[N_STEP]) == wanted)
        parts.append(take_rows(batch, whole) if len(whole) < need else batch)
        need -= len(whole)
        if need == 0:
            return parts[0] if len(parts) == 1 else concat_nested(parts)
    raise ValueError(f"n_step={n_step!r}: after {max_rounds} draws, {need} of {num} replayed transitions still "
                     "had no whole window: the stored episodes are shorter than n. Use a smaller n_step.")


def _stack_choices(parts: Sequence[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: _stack_choices([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], tuple):
        return tuple(_stack_choices([p[i] for p in parts]) for i in range(len(parts[0])))
    return np.stack(parts, axis=1)


def _expand(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (np.ndim(like) - 1))


def segment_sequences(batch: Dict[str, Any], seq_len: int) -> Dict[str, Any]:
    """Fixed-length sequences for recurrent Q-learning, from the stored recurrent state.

    Each segment is cut into chunks of ``seq_len`` steps (the last one
    zero-padded, ``LOSS_MASK`` marking real steps). A chunk holds ``seq_len + 1``
    observations: its own and, after its last real step, the next observation
    (inside the segment, else the segment's bootstrap observation), so one
    unroll from the chunk's ``STATE_IN`` (the state the env runner recorded at
    its first step) gives both ``Q(s_t)`` and ``Q(s_{t+1})``. ``terminateds``
    is True only at a real last step that terminated: 1-step targets bootstrap
    everywhere else, truncation and sample boundaries included.
    """
    seq_lens = np.asarray(batch[Columns.SEQ_LENS], np.int64)
    obs, boot = batch[Columns.OBS], batch[BOOTSTRAP_OBS]
    starts, next_rows, lengths, boot_of, is_last = [], [], [], [], []
    offset = 0
    for seg, length in enumerate(seq_lens.tolist()):
        for t0 in range(offset, offset + length, seq_len):
            n = min(seq_len, offset + length - t0)
            starts.append(t0)
            lengths.append(n)
            ends_segment = t0 + n == offset + length
            is_last.append(ends_segment)
            next_rows.append(t0 + n if not ends_segment else -1)
            boot_of.append(seg)
        offset += length
    num = len(starts)
    steps = np.arange(seq_len)
    index = np.asarray(starts)[:, None] + steps[None, :]                 # [C, L]
    valid = steps[None, :] < np.asarray(lengths)[:, None]
    safe = np.where(valid, index, 0)
    rows_obs = take_rows(obs, safe.reshape(-1))
    next_obs = tree_map2(
        lambda o, b: np.where(_expand(np.asarray(next_rows) >= 0, o), o, b),
        take_rows(obs, np.maximum(np.asarray(next_rows), 0)), take_rows(boot, np.asarray(boot_of)))
    lengths_arr = np.asarray(lengths)

    def sequence_obs(flat: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        shaped = np.where(_expand(valid.reshape(-1), flat), flat, 0).reshape((num, seq_len) + flat.shape[1:])
        out = np.zeros((num, seq_len + 1) + flat.shape[1:], flat.dtype)
        out[:, :seq_len] = shaped
        out[np.arange(num), lengths_arr] = nxt
        return out

    terminateds = np.asarray(batch[Columns.TERMINATEDS], bool)
    last_real = np.asarray(starts) + lengths_arr - 1
    term = np.zeros((num, seq_len), bool)
    term[np.arange(num), lengths_arr - 1] = np.asarray(is_last) & terminateds[last_real]
    out = {
        Columns.OBS: tree_map2(sequence_obs, rows_obs, next_obs),
        Columns.ACTIONS: np.where(valid, np.asarray(batch[Columns.ACTIONS])[safe], 0),
        Columns.REWARDS: np.where(valid, np.asarray(batch[Columns.REWARDS], np.float32)[safe], 0.0).astype(np.float32),
        Columns.TERMINATEDS: term,
        Columns.LOSS_MASK: valid,
    }
    out[Columns.STATE_IN] = {k: np.asarray(v)[np.asarray(starts)] for k, v in batch[Columns.STATE_IN].items()}
    return out
