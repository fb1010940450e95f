"""n-step windows across sampling calls: the same transitions as one uncut call, resumable."""
from __future__ import annotations

import numpy as np
import pytest

from learners.nstep_carry import NStepCarry, carry_horizon
from learners.transitions import N_STEP, ranged_segment_transitions, segment_transitions
from marl.core.columns import BOOTSTRAP_OBS, Columns
from marl.core.nested import concat_nested, take_rows

GAMMA = 0.9


def episode(eps_id: int, length: int, terminated: bool, seed: int):
    """One agent-episode: obs [eps_id * 1000 + t, t], random rewards, the obs after the last step."""
    rng = np.random.default_rng(seed)
    obs = np.stack([np.full(length + 1, eps_id * 1000.0), np.arange(length + 1.0)], axis=1).astype(np.float32)
    return {"obs": obs, "actions": rng.integers(0, 2, length), "rewards": rng.normal(size=length).astype(np.float32),
            "terminated": terminated, "eps_id": eps_id}


def call_batch(pieces):
    """A sampling call's batch: ``pieces`` are (episode, start, stop), one segment each, sorted by eps_id."""
    parts, lens, boots = [], [], []
    for ep, start, stop in sorted(pieces, key=lambda p: p[0]["eps_id"]):
        length = len(ep["actions"])
        ends_episode = stop == length
        n = stop - start
        terminateds = np.zeros(n, bool)
        truncateds = np.zeros(n, bool)
        if ends_episode:
            (terminateds if ep["terminated"] else truncateds)[-1] = True
        parts.append({Columns.OBS: ep["obs"][start:stop], Columns.ACTIONS: ep["actions"][start:stop],
                      Columns.REWARDS: ep["rewards"][start:stop], Columns.TERMINATEDS: terminateds,
                      Columns.TRUNCATEDS: truncateds, Columns.EPS_ID: np.full(n, ep["eps_id"], np.int64)})
        lens.append(n)
        boot = np.zeros(2, np.float32) if (ends_episode and ep["terminated"]) else ep["obs"][stop]
        boots.append(boot)
    batch = concat_nested(parts)
    batch[Columns.SEQ_LENS] = np.asarray(lens, np.int64)
    batch[BOOTSTRAP_OBS] = np.stack(boots)
    return batch


def by_start(rows):
    """Transitions keyed by their (episode, step) observation, so call order does not matter."""
    return {tuple(o): {k: take_rows(v, i) for k, v in rows.items()} for i, o in enumerate(rows[Columns.OBS].tolist())}


def assert_same_transitions(got, want):
    got, want = by_start(got), by_start(want)
    assert sorted(got) == sorted(want)
    for key in want:
        for col in (Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS, N_STEP):
            np.testing.assert_allclose(got[key][col], want[key][col], rtol=1e-6, err_msg=f"{key} {col}")


def stored(carry, batches, n_step):
    out = []
    for batch in batches:
        joined, ready = carry.join(batch)
        rows = ranged_segment_transitions(joined, n_step, GAMMA)
        out.append({k: take_rows(v, np.flatnonzero(ready)) for k, v in rows.items()})
    return concat_nested(out)


@pytest.mark.parametrize("n_step", [3, (2, 5)])
def test_windows_across_calls_equal_the_windows_of_one_uncut_call(n_step):
    """Two episodes (one terminates, one is truncated) sampled in calls of 4 steps: every stored
    transition has the window the whole episode in one call would give, none is cut at a call's end."""
    a, b = episode(7, 11, terminated=True, seed=0), episode(9, 6, terminated=False, seed=1)
    calls = [call_batch([(a, 0, 4), (b, 0, 4)]), call_batch([(a, 4, 8), (b, 4, 6)]), call_batch([(a, 8, 11)])]
    carry = NStepCarry(carry_horizon(n_step))
    got = stored(carry, calls, n_step)
    want = ranged_segment_transitions(call_batch([(a, 0, 11), (b, 0, 6)]), n_step, GAMMA)
    assert_same_transitions(got, want)
    assert len(carry) == 0 and carry.pending is None


def test_only_the_last_n_minus_1_steps_of_a_cut_segment_wait():
    a = episode(1, 20, terminated=True, seed=2)
    carry = NStepCarry(carry_horizon(4))
    joined, ready = carry.join(call_batch([(a, 0, 10)]))
    assert ready.tolist() == [True] * 7 + [False] * 3
    np.testing.assert_array_equal(carry.pending[Columns.OBS], a["obs"][7:10])
    rows = segment_transitions(joined, 4, GAMMA)
    assert rows[N_STEP][:7].tolist() == [4] * 7  # every released window is whole


def test_an_episode_missing_from_the_next_call_is_released_with_the_windows_it_has():
    """A held-back episode the runner dropped (env error, discarded episode): its steps are stored
    at the next call, bootstrapping from the observation after its last step, not lost."""
    a, b = episode(1, 20, terminated=True, seed=3), episode(2, 5, terminated=True, seed=4)
    carry = NStepCarry(carry_horizon(3))
    carry.join(call_batch([(a, 0, 6)]))
    joined, ready = carry.join(call_batch([(b, 0, 5)]))
    assert ready.all() and carry.pending is None
    rows = by_start(segment_transitions(joined, 3, GAMMA))
    last = rows[(1000.0, 5.0)]
    np.testing.assert_array_equal(last[Columns.NEXT_OBS], a["obs"][6])  # the call's bootstrap observation
    assert last[N_STEP] == 1 and not last[Columns.TERMINATEDS]


def test_one_step_windows_hold_nothing_back():
    a = episode(1, 9, terminated=False, seed=5)
    carry = NStepCarry(carry_horizon(1))
    _, ready = carry.join(call_batch([(a, 0, 4)]))
    assert ready.all() and len(carry) == 0


def test_state_round_trip_continues_identically():
    a, b = episode(3, 12, terminated=True, seed=6), episode(4, 12, terminated=False, seed=7)
    first, second = call_batch([(a, 0, 5), (b, 0, 3)]), call_batch([(a, 5, 12), (b, 3, 12)])
    straight = NStepCarry(carry_horizon((2, 5)))
    straight.join(first)
    json_state, arrays = straight.get_state()
    resumed = NStepCarry(carry_horizon((2, 5)))
    resumed.set_state(json_state, arrays)
    for (j1, r1), (j2, r2) in [(straight.join(second), resumed.join(second))]:
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(j1[Columns.OBS], j2[Columns.OBS])
        np.testing.assert_array_equal(j1[BOOTSTRAP_OBS], j2[BOOTSTRAP_OBS])
    with pytest.raises(ValueError, match="horizon 3.*this config's is 2"):
        NStepCarry(carry_horizon(3)).set_state(json_state, arrays)
