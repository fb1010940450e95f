"""Advantage and return estimators over agent-trajectory segments.

Env runners hand over flat arrays in which every segment (contiguous steps of
one agent in one episode) is contiguous; ``seq_lens`` gives the segment
lengths. A segment that ends in termination bootstraps from 0, any other end
(truncation, or the sample call's boundary) from the value of the observation
that followed it.
"""
from __future__ import annotations

import numpy as np


def segment_end_mask(seq_lens: np.ndarray, n: int) -> np.ndarray:
    """Boolean ``[N]``: True at the last step of each segment."""
    ends = np.zeros(n, dtype=bool)
    if len(seq_lens):
        ends[np.cumsum(seq_lens) - 1] = True
    return ends


def compute_gae(
    rewards: np.ndarray,      # [N]
    values: np.ndarray,       # [N]   V(s_t)
    terminateds: np.ndarray,  # [N]   bool, True at a terminal step
    seq_lens: np.ndarray,     # [S]
    bootstrap_values: np.ndarray,  # [S]  V(s_T) after each segment's last step
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation; returns ``(advantages, value_targets)``.

    The bootstrap after a segment is ``bootstrap_values`` unless its last step
    terminated, in which case it is 0 (no future reward exists).
    """
    n = len(rewards)
    ends = segment_end_mask(seq_lens, n)
    next_values = np.empty(n, dtype=np.float64)
    next_values[:-1] = values[1:]
    if n:
        next_values[ends] = bootstrap_values
    next_values[terminateds.astype(bool)] = 0.0
    deltas = rewards + gamma * next_values - values
    advantages = np.empty(n, dtype=np.float64)
    running = 0.0
    decay = gamma * lambda_
    for t in range(n - 1, -1, -1):  # plain loop: N is a few thousand, segments reset it
        if ends[t]:
            running = 0.0
        running = deltas[t] + decay * running
        advantages[t] = running
    value_targets = advantages + values
    return advantages.astype(np.float32), value_targets.astype(np.float32)


def compute_returns_to_go(
    rewards: np.ndarray,
    terminateds: np.ndarray,
    seq_lens: np.ndarray,
    bootstrap_values: np.ndarray | None,
    gamma: float,
) -> np.ndarray:
    """Discounted returns-to-go per segment (vanilla policy gradient targets).

    Without a value function (``bootstrap_values=None``) a cut-off segment
    bootstraps from 0: the usual REINFORCE approximation.
    """
    n = len(rewards)
    ends = segment_end_mask(seq_lens, n)
    tails = np.zeros(len(seq_lens)) if bootstrap_values is None else np.asarray(bootstrap_values)
    returns = np.empty(n, dtype=np.float64)
    seg = len(seq_lens) - 1
    running = 0.0
    for t in range(n - 1, -1, -1):
        if ends[t]:
            running = 0.0 if terminateds[t] else float(tails[seg])
            seg -= 1
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns.astype(np.float32)


def bootstrap_step_advantages(
    values: np.ndarray,            # [N]  V(s_t) of the real steps
    advantages: np.ndarray,        # [N]  their GAE advantages
    seq_lens: np.ndarray,          # [S]
    bootstrap_values: np.ndarray,  # [S]  V of the observation after each segment
    gamma: float,
    lambda_: float,
) -> np.ndarray:
    """The advantages RLlib computes for its extra bootstrap step after each segment.

    RLlib's learner appends one artificial step to every segment (the next
    observation, reward 0, no done flag, masked out of the loss) so one value
    pass also yields the bootstrap values. Its GAE then runs over the
    elongated rows, and the artificial step's residual reads the value (and
    the running advantage) of the row after it: the next segment's first
    step, or nothing after the last segment. These values never enter the
    loss, but RLlib standardises advantages with statistics over all rows,
    artificial ones included; this returns them so the same statistics can
    be formed (``[S]``).
    """
    starts = np.concatenate([[0], np.cumsum(seq_lens)[:-1]]).astype(np.int64)
    next_value = np.zeros(len(seq_lens), dtype=np.float64)
    next_adv = np.zeros(len(seq_lens), dtype=np.float64)
    if len(seq_lens) > 1:
        next_value[:-1] = values[starts[1:]]
        next_adv[:-1] = advantages[starts[1:]]
    return gamma * next_value - np.asarray(bootstrap_values, np.float64) + gamma * lambda_ * next_adv
