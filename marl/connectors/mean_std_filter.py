"""``MeanStdFilter``: observations standardised by running statistics, as RLlib's piece does.

Continuous-control envs hand out observations on very different scales
(Pendulum's angular velocity spans [-8, 8], its cosines [-1, 1]); RLlib's
tuned examples put them through ``MeanStdFilter`` so every input reaches the
network at unit scale. This is the same filter under the same name: each
observation first updates the running mean and variance (Welford), then is
mapped to ``clip((obs - mean) / (std + 1e-8), -clip_by_value, clip_by_value)``.
The module and the training batch see the filtered values, exactly what the
policy acted on. With a single observation seen the variance is undefined
and the filter divides by 1 (that observation maps to 0 either way).

Statistics are connector state: ``get_state()`` gives plain lists that a
checkpoint stores as JSON, ``set_state()`` restores them, and
``pop_delta()`` / ``apply_deltas()`` pool what several copies saw (parallel
Welford), which is how env runners in worker processes agree on one filter.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

__all__ = ["MeanStdFilter"]


class MeanStdFilter:
    """Running mean/std observation filter for Box observation spaces.

    Args:
        clip_by_value: filtered values are clipped to ``[-clip, clip]``
            (RLlib's default 10.0; ``None`` disables clipping).
        update: whether calls update the statistics (set False to freeze them,
            e.g. for evaluation of a finished policy).
    """

    def __init__(self, clip_by_value: Optional[float] = 10.0, update: bool = True) -> None:
        self.clip_by_value = clip_by_value
        self.update = bool(update)
        self.count = 0
        self.mean: Optional[np.ndarray] = None
        self.m2: Optional[np.ndarray] = None  # sum of squared deviations
        # What this copy saw since it last shared its statistics (see pop_delta).
        self._delta_stats = (0, None, None)

    def recompute_output_observation_space(self, input_observation_space: gym.Space) -> gym.Space:
        """A float32 Box of the input's shape, bounded by the clip value."""
        if not isinstance(input_observation_space, gym.spaces.Box):
            raise TypeError(
                f"MeanStdFilter: expected a Box observation space, got {input_observation_space!r}; "
                "put FlattenObservations() before it for Discrete, MultiDiscrete or Dict observations"
            )
        bound = np.inf if self.clip_by_value is None else float(self.clip_by_value)
        return gym.spaces.Box(-bound, bound, shape=input_observation_space.shape, dtype=np.float32)

    @property
    def std(self) -> np.ndarray:
        if self.mean is None:
            raise ValueError("MeanStdFilter has seen no observation yet")
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.sqrt(self.m2 / (self.count - 1))

    def _push(self, batch: np.ndarray) -> None:
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(axis=0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(axis=0)
        self._combine(n, batch_mean, batch_m2)
        self._delta_stats = _pooled(self._delta_stats, (n, batch_mean, batch_m2))

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        self.count, self.mean, self.m2 = _pooled((self.count, self.mean, self.m2), (n, mean, m2))

    def __call__(self, observations: Any, input_observation_space: Optional[gym.Space] = None) -> np.ndarray:
        batch = np.asarray(observations, dtype=np.float64)
        if batch.ndim == 0:
            raise ValueError(f"MeanStdFilter: expected a batch of observations [B, ...], got a scalar {batch!r}")
        if self.mean is not None and batch.shape[1:] != self.mean.shape:
            raise ValueError(
                f"MeanStdFilter: observations of shape {batch.shape[1:]} do not match the "
                f"filter's shape {self.mean.shape}"
            )
        if self.update:
            self._push(batch)
        if self.mean is None:
            return batch.astype(np.float32)
        out = (batch - self.mean) / (self.std + 1e-8)
        if self.clip_by_value is not None:
            out = np.clip(out, -self.clip_by_value, self.clip_by_value)
        return out.astype(np.float32)

    def pop_delta(self) -> Optional[dict]:
        """Statistics of what this copy saw since the last call (None if nothing).

        Env runners in worker processes each filter their own observations;
        the worker pool collects every runner's delta after a sample call and
        hands each runner the others' (``apply_deltas``), so all copies hold
        the statistics of every observation sampled anywhere, as RLlib's
        filter synchronisation does.
        """
        count, mean, m2 = self._delta_stats
        self._delta_stats = (0, None, None)
        if not count:
            return None
        return {"count": int(count), "mean": mean.tolist(), "m2": m2.tolist()}

    def apply_deltas(self, deltas: Sequence[Optional[Mapping[str, Any]]]) -> None:
        """Pool other copies' deltas (from ``pop_delta``) into these statistics."""
        for d in deltas:
            if d and d["count"]:
                self._combine(int(d["count"]), np.asarray(d["mean"], np.float64), np.asarray(d["m2"], np.float64))

    def get_state(self) -> dict:
        """Plain JSON-able statistics."""
        return {
            "count": int(self.count),
            "mean": None if self.mean is None else self.mean.tolist(),
            "m2": None if self.m2 is None else self.m2.tolist(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or not {"count", "mean", "m2"} <= set(state):
            raise TypeError(f"MeanStdFilter.set_state: expected {{'count', 'mean', 'm2'}}, got {state!r}")
        self.count = int(state["count"])
        self.mean = None if state["mean"] is None else np.asarray(state["mean"], np.float64)
        self.m2 = None if state["m2"] is None else np.asarray(state["m2"], np.float64)
        self._delta_stats = (0, None, None)


def _pooled(a: tuple, b: tuple) -> tuple:
    """Parallel Welford: (count, mean, m2) of the union of two sets of observations."""
    (na, ma, sa), (nb, mb, sb) = a, b
    if not nb:
        return a
    if not na:
        return nb, np.array(mb, np.float64), np.array(sb, np.float64)
    total = na + nb
    delta = mb - ma
    return total, ma + delta * (nb / total), sa + sb + delta ** 2 * (na * nb / total)
