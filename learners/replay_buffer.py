"""Replay buffers for off-policy learners: uniform and proportional prioritized.

One implementation for every off-policy algorithm (DQN/IQL, VDN/QMIX's joint
transitions, SAC): a ring buffer of rows whose columns may be nested (dict /
tuple observations, action masks, ``[num_agents, ...]`` joint rows), stored
as preallocated numpy arrays, sampled with its own seeded numpy Generator so
a run's replay is reproducible and its state can be checkpointed (arrays to
safetensors, the rest to JSON; no pickle).

``PrioritizedReplayBuffer`` is Schaul et al.'s proportional variant, as
RLlib's ``PrioritizedEpisodeReplayBuffer`` configures it (``alpha`` 0.6,
``beta`` 0.4): new rows get the largest priority seen so far, rows are drawn
with probability ``p_i^alpha / sum p^alpha`` and weighted by
``(N P(i))^-beta`` normalised by the largest possible weight; priorities are
``max(|td_error|, 1e-12)``, RLlib's floor. Sampling recomputes the cumulative sum (O(N) per
batch): at RLlib's default capacity (50k) that is tens of microseconds, and
no tree to keep consistent.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from marl.core.nested import flatten_nested, num_rows, set_rows, take_rows, unflatten_nested, zeros_like_rows

#: Columns ``sample()`` adds: importance weights and the rows' buffer indices.
WEIGHTS = "weights"
INDICES = "batch_indexes"


class ReplayBuffer:
    """A uniform ring buffer of transitions; ``capacity`` rows, oldest overwritten first."""

    def __init__(self, capacity: int, seed: Optional[int] = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"replay buffer capacity={capacity!r}: expected an int >= 1")
        self.capacity = int(capacity)
        self.columns: Optional[Dict[str, Any]] = None
        self.size = 0
        self.next_index = 0
        self.num_added = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, rows: Dict[str, Any]) -> np.ndarray:
        """Append rows (every column ``[n, ...]``); returns the buffer indices written."""
        n = num_rows(next(iter(rows.values())))
        if n == 0:
            return np.zeros(0, np.int64)
        if self.columns is None:
            self.columns = {k: zeros_like_rows(v, self.capacity) for k, v in rows.items()}
        missing = set(self.columns) ^ set(rows)
        if missing:
            raise KeyError(f"rows have columns {sorted(rows)}; this buffer stores {sorted(self.columns)}")
        if n > self.capacity:  # only the newest rows fit
            rows = {k: take_rows(v, slice(n - self.capacity, n)) for k, v in rows.items()}
            n = self.capacity
        idx = (self.next_index + np.arange(n)) % self.capacity
        for k, v in rows.items():
            set_rows(self.columns[k], idx, v)
        self.next_index = int((self.next_index + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)
        self.num_added += n
        self._on_add(idx)
        return idx

    def _on_add(self, idx: np.ndarray) -> None:
        pass

    def _draw(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.rng.integers(0, self.size, n), np.ones(n, np.float32)

    def sample(self, n: int) -> Dict[str, Any]:
        """``n`` rows drawn with replacement, plus ``weights`` and ``batch_indexes``."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx, weights = self._draw(int(n))
        batch = {k: take_rows(v, idx) for k, v in self.columns.items()}
        batch[WEIGHTS] = weights
        batch[INDICES] = idx.astype(np.int64)
        return batch

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay has no priorities; prioritized replay overrides this."""

    # ------------------------------------------------------------------ state
    def get_state(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """``(json_state, arrays)``: everything needed to continue exactly (the filled rows only)."""
        arrays: Dict[str, np.ndarray] = {}
        layout = {k: flatten_nested(f"columns/{k}", take_rows(v, slice(0, self.size)), arrays)
                  for k, v in (self.columns or {}).items()}
        json_state = {"type": type(self).__name__, "capacity": self.capacity, "size": self.size,
                      "next_index": self.next_index, "num_added": self.num_added,
                      "rng": _jsonable(self.rng.bit_generator.state), "columns": layout}
        return json_state, arrays

    def set_state(self, json_state: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        if json_state.get("capacity") != self.capacity:
            raise ValueError(f"the stored replay buffer has capacity {json_state.get('capacity')!r}; "
                             f"this one {self.capacity}")
        size = int(json_state["size"])
        columns = None
        if json_state["columns"]:
            filled = {k: unflatten_nested(v, arrays) for k, v in json_state["columns"].items()}
            columns = {k: zeros_like_rows(v, self.capacity) for k, v in filled.items()}
            for k, v in filled.items():
                set_rows(columns[k], slice(0, size), v)
        self.columns = columns
        self.size, self.next_index = size, int(json_state["next_index"])
        self.num_added = int(json_state["num_added"])
        self.rng.bit_generator.state = json_state["rng"]


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (``alpha``: how much priorities count; ``beta``: IS correction)."""

    #: RLlib's floor under a priority (a TD error of exactly 0 must stay drawable).
    MIN_PRIORITY = 1e-12

    def __init__(self, capacity: int, seed: Optional[int] = None, alpha: float = 0.6, beta: float = 0.4) -> None:
        super().__init__(capacity, seed)
        if not (0.0 <= alpha):
            raise ValueError(f"alpha={alpha!r}: expected a number >= 0")
        if not (0.0 <= beta <= 1.0):
            raise ValueError(f"beta={beta!r}: expected a number in [0, 1]")
        self.alpha, self.beta = float(alpha), float(beta)
        self.priorities = np.zeros(self.capacity, np.float64)
        self.max_priority = 1.0

    def _on_add(self, idx: np.ndarray) -> None:
        self.priorities[idx] = self.max_priority

    def _draw(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        p = self.priorities[: self.size] ** self.alpha
        cumulative = np.cumsum(p)
        total = cumulative[-1]
        idx = np.searchsorted(cumulative, self.rng.random(n) * total, side="right")
        idx = np.minimum(idx, self.size - 1)
        probs = p[idx] / total
        weights = (self.size * probs) ** -self.beta
        max_weight = (self.size * (p.min() / total)) ** -self.beta
        return idx, (weights / max_weight).astype(np.float32)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.maximum(np.abs(np.asarray(td_errors, np.float64)), self.MIN_PRIORITY)
        if not np.all(np.isfinite(priorities)):
            raise ValueError("non-finite TD errors cannot become replay priorities")
        self.priorities[np.asarray(indices, np.int64)] = priorities
        self.max_priority = max(self.max_priority, float(priorities.max(initial=0.0)))

    def get_state(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        json_state, arrays = super().get_state()
        arrays["priorities"] = self.priorities[: self.size].copy()
        json_state.update(alpha=self.alpha, beta=self.beta, max_priority=self.max_priority)
        return json_state, arrays

    def set_state(self, json_state: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        super().set_state(json_state, arrays)
        self.priorities[:] = 0.0
        self.priorities[: self.size] = arrays["priorities"]
        self.max_priority = float(json_state["max_priority"])


def make_replay_buffer(config: Dict[str, Any], seed: Optional[int]) -> ReplayBuffer:
    """From ``replay_buffer_config`` (RLlib's keys: ``type``, ``capacity``, ``alpha``, ``beta``)."""
    kind = config.get("type", "PrioritizedEpisodeReplayBuffer")
    capacity = config.get("capacity", 50000)
    if kind in PRIORITIZED_TYPES:
        return PrioritizedReplayBuffer(capacity, seed, alpha=config.get("alpha", 0.6), beta=config.get("beta", 0.4))
    if kind in UNIFORM_TYPES:
        return ReplayBuffer(capacity, seed)
    raise ValueError(f"replay_buffer_config type={kind!r}: expected one of {sorted(PRIORITIZED_TYPES | UNIFORM_TYPES)}")


#: Accepted ``type`` names: marl's and RLlib's. marl keeps one buffer per module, so RLlib's
#: multi-agent buffers (one buffer, sampled per module, ``capacity`` env steps) are the same
#: buffers here: each module holds up to ``capacity`` of its own steps, as many as an RLlib
#: buffer of ``capacity`` env steps keeps of an agent that acts at every step.
PRIORITIZED_TYPES = {"prioritized", "PrioritizedReplayBuffer", "PrioritizedEpisodeReplayBuffer",
                     "MultiAgentPrioritizedEpisodeReplayBuffer"}
UNIFORM_TYPES = {"uniform", "ReplayBuffer", "EpisodeReplayBuffer", "MultiAgentEpisodeReplayBuffer"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
