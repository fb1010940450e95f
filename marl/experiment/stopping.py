"""Stop conditions: a run stops as soon as any one of them holds (as in RLlib / Tune).

``--stop-iters`` and ``--stop-timesteps`` count over the run's lifetime (a
resumed run continues counting); ``--stop-time`` counts this session only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from marl.experiment.run_dir import RETURN_KEY, STEP_KEY


@dataclass(frozen=True)
class StopConditions:
    iters: Optional[int] = None
    timesteps: Optional[int] = None
    episode_return: Optional[float] = None
    seconds: Optional[float] = None

    @classmethod
    def from_spec(cls, spec: Any) -> "StopConditions":
        return cls(spec.stop_iters, spec.stop_timesteps, spec.stop_return, spec.stop_time)

    def reason(self, row: Mapping[str, Any], session_seconds: float) -> Optional[str]:
        """Why the run stops after ``row`` (a flattened result), or None to go on."""
        if self.iters is not None and row.get("training_iteration", 0) >= self.iters:
            return f"reached --stop-iters {self.iters}"
        if self.timesteps is not None and row.get(STEP_KEY, 0) >= self.timesteps:
            return f"reached --stop-timesteps {self.timesteps}"
        ret = row.get(RETURN_KEY)
        if self.episode_return is not None and isinstance(ret, (int, float)) and ret >= self.episode_return:
            return f"reached --stop-return {self.episode_return} ({RETURN_KEY}={ret:.2f})"
        if self.seconds is not None and session_seconds >= self.seconds:
            return f"reached --stop-time {self.seconds:g}s"
        return None

    def progress_total(self) -> Tuple[Optional[int], str]:
        """``(total, unit)`` for a progress bar: env steps if bounded by them, else iterations."""
        if self.timesteps is not None:
            return self.timesteps, "steps"
        if self.iters is not None:
            return self.iters, "iters"
        return None, "iters"

    def describe(self) -> str:
        parts = []
        if self.iters is not None:
            parts.append(f"{self.iters} iterations")
        if self.timesteps is not None:
            parts.append(f"{self.timesteps:,} env steps")
        if self.episode_return is not None:
            parts.append(f"return >= {self.episode_return:g}")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        return " or ".join(parts) or "never (Ctrl-C to stop)"
