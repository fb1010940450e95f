"""Joint transitions for value decomposition: every agent of one env step in one row.

VDN and QMIX learn from the team reward at each env step, so their replay
rows hold all agents together: each agent's observation, action and next
observation, the global state before and after, the team reward (the sum of
the agents' rewards) and whether the team's episode terminated. The env
runners record per row which env episode and step it belongs to
(``ENV_EPISODE_ID``, ``ENV_T``) and the agent's index (``AGENT_INDEX``);
rows of all agents are joined on (episode, step). Each agent's n-step window
comes from ``segment_transitions``; the team's n-step reward is the sum of
the agents' (the windows coincide when agents act at every step, which is
what value decomposition assumes). An env step at which some agent did not
act is dropped, and counted.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from marl.core.columns import (
    AGENT_INDEX, BOOTSTRAP_OBS, ENV_EPISODE_ID, ENV_T, GLOBAL_OBS, SEGMENT_COLUMNS, Columns, bootstrap_global_rows,
    env_step_keys, global_rows,
)
from marl.core.nested import take_rows

from learners.transitions import N_STEP, segment_transitions

STATE = "state"
NEXT_STATE = "new_state"
#: The key of joint batches (one row per env step, all agents) in a learner update.
JOINT = "__joint__"
#: Per-agent rewards and terminations of joint rows (MASAC's per-agent critics).
AGENT_REWARDS = "agent_rewards"
AGENT_TERMINATEDS = "agent_terminateds"


def joint_transitions(samples: Dict[str, Dict[str, Any]], agents: Sequence[Any], n_step: int,
                      gamma: float) -> Tuple[Dict[str, Any], int]:
    """``(rows, num_dropped_steps)``; ``agents`` in ``possible_agents`` order (their indices)."""
    per_agent: Dict[int, Tuple[np.ndarray, Dict[str, Any]]] = {}
    for batch in samples.values():
        for column in (GLOBAL_OBS, AGENT_INDEX, ENV_EPISODE_ID, ENV_T):
            if column not in batch:
                raise KeyError(f"samples lack {column!r}: the env runners must record global inputs "
                               "(build VDN/QMIX through QMIXConfig)")
        moves = segment_transitions(batch, n_step, gamma)
        step_states = global_rows(batch)
        states = segment_transitions({**batch, Columns.OBS: step_states,
                                      BOOTSTRAP_OBS: bootstrap_global_rows(batch)}, n_step, gamma)
        moves[STATE], moves[NEXT_STATE] = step_states, states[Columns.NEXT_OBS]
        keys = env_step_keys(batch[ENV_EPISODE_ID], batch[ENV_T])
        index = np.asarray(batch[AGENT_INDEX])
        for i in np.unique(index).tolist():
            rows = np.flatnonzero(index == i)
            per_agent[int(i)] = (keys[rows], {k: take_rows(v, rows) for k, v in moves.items()})
    if len(per_agent) < len(agents) or not per_agent:
        return {}, sum(len(k) for k, _ in per_agent.values())
    chosen, dropped = _join(per_agent, len(agents))
    n_steps = np.stack([c[N_STEP] for c in chosen])
    consistent = (n_steps == n_steps[0]).all(axis=0)
    keep = np.flatnonzero(consistent)
    dropped += int(len(consistent) - len(keep))
    chosen = [{k: take_rows(v, keep) for k, v in c.items()} for c in chosen]
    rows = _team_rows(chosen, agents, (Columns.OBS, Columns.ACTIONS, Columns.NEXT_OBS), (N_STEP, STATE, NEXT_STATE))
    rows[STATE], rows[NEXT_STATE] = rows[STATE].astype(np.float32), rows[NEXT_STATE].astype(np.float32)
    return rows, dropped


def joint_sequences(samples: Dict[str, Dict[str, Any]], agents: Sequence[Any],
                    seq_len: int) -> Tuple[Dict[str, Any], int]:
    """Recurrent VDN/QMIX: every agent's ``segment_sequences`` chunk of the same steps in one row.

    Chunks are joined on the env episode and step they start at; each agent
    keeps its own stored ``STATE_IN``. The row also holds the global state
    sequence (``seq_len + 1`` states, the last one after the chunk), the team
    reward and termination per step, and the loss mask every agent shares.
    """
    from learners.transitions import segment_sequences

    per_agent: Dict[int, Tuple[np.ndarray, Dict[str, Any]]] = {}
    for batch in samples.values():
        for column in (GLOBAL_OBS, AGENT_INDEX, ENV_EPISODE_ID, ENV_T, Columns.STATE_IN):
            if column not in batch:
                raise KeyError(f"samples lack {column!r}: recurrent VDN/QMIX needs recorded global inputs "
                               "and recurrent states")
        index = np.asarray(batch[AGENT_INDEX])
        step_states, boot_states = global_rows(batch), bootstrap_global_rows(batch)
        for i in np.unique(index).tolist():
            rows = np.flatnonzero(index == i)
            # One agent's rows, still in segment order, with that agent's segment bookkeeping.
            sub = {k: take_rows(v, rows) for k, v in batch.items() if k not in SEGMENT_COLUMNS}
            sub[GLOBAL_OBS] = step_states[rows]
            starts = np.concatenate([[0], np.cumsum(batch[Columns.SEQ_LENS])[:-1]])
            mine = np.flatnonzero(index[starts] == i)
            sub[Columns.SEQ_LENS] = np.asarray(batch[Columns.SEQ_LENS])[mine]
            sub[BOOTSTRAP_OBS] = take_rows(batch[BOOTSTRAP_OBS], mine)
            chunks = segment_sequences(sub, seq_len)
            states = segment_sequences({**sub, Columns.OBS: sub[GLOBAL_OBS],
                                        BOOTSTRAP_OBS: boot_states[mine]}, seq_len)
            chunks[STATE] = states[Columns.OBS].astype(np.float32)
            first = _chunk_starts(sub[Columns.SEQ_LENS], seq_len)
            per_agent[int(i)] = (env_step_keys(sub[ENV_EPISODE_ID][first], sub[ENV_T][first]), chunks)
    if len(per_agent) < len(agents):
        return {}, sum(len(k) for k, _ in per_agent.values())
    chosen, dropped = _join(per_agent, len(agents))
    masks = np.stack([c[Columns.LOSS_MASK] for c in chosen])
    keep = np.flatnonzero((masks == masks[0]).all(axis=(0, 2)))
    dropped += len(masks[0]) - len(keep)
    chosen = [{k: take_rows(v, keep) for k, v in c.items()} for c in chosen]
    return _team_rows(chosen, agents, (Columns.OBS, Columns.ACTIONS, Columns.STATE_IN),
                      (Columns.LOSS_MASK, STATE)), dropped


def _team_rows(chosen: List[Dict[str, Any]], agents: Sequence[Any], per_agent: Sequence[str],
               shared: Sequence[str]) -> Dict[str, Any]:
    """Joined rows: ``per_agent`` columns as ``{agent: ...}``, the team reward (sum) and
    termination (any), and ``shared`` columns (equal for every agent) taken once."""
    names = [str(a) for a in agents]
    rows: Dict[str, Any] = {col: {n: c[col] for n, c in zip(names, chosen)} for col in per_agent}
    rows[AGENT_REWARDS] = {n: np.asarray(c[Columns.REWARDS], np.float32) for n, c in zip(names, chosen)}
    rows[AGENT_TERMINATEDS] = {n: np.asarray(c[Columns.TERMINATEDS], bool) for n, c in zip(names, chosen)}
    rows[Columns.REWARDS] = np.sum([c[Columns.REWARDS] for c in chosen], axis=0).astype(np.float32)
    rows[Columns.TERMINATEDS] = np.any([c[Columns.TERMINATEDS] for c in chosen], axis=0)
    rows.update({col: chosen[0][col] for col in shared})
    return rows


def _join(per_agent: Dict[int, Tuple[np.ndarray, Dict[str, Any]]], num_agents: int) -> Tuple[List[Dict[str, Any]], int]:
    """Each agent's rows at the keys every agent has, in one order; and how many rows were left out."""
    common = per_agent[0][0]
    for i in range(1, num_agents):
        common = np.intersect1d(common, per_agent[i][0])
    chosen = []
    for i in range(num_agents):
        keys, rows = per_agent[i]
        order = np.argsort(keys, kind="stable")
        pos = order[np.searchsorted(keys[order], common)]
        chosen.append({k: take_rows(v, pos) for k, v in rows.items()})
    return chosen, max(len(k) for k, _ in per_agent.values()) - len(common)


def _chunk_starts(seq_lens: np.ndarray, seq_len: int) -> np.ndarray:
    """Row index of each chunk's first step, in ``segment_sequences``' order."""
    starts, offset = [], 0
    for length in np.asarray(seq_lens).tolist():
        starts.extend(range(offset, offset + length, seq_len))
        offset += length
    return np.asarray(starts, np.int64)
