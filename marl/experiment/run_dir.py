"""The run directory: where one run keeps everything it produces.

```
runs/<env>-<algo>-<setup>-<YYYYmmdd-HHMMSS>/
  config.yaml          the resolved options (reusable with --config), plus the
                       algorithm config's effective values (informational)
  metrics.jsonl        one JSON object per training iteration, keys '/'-joined
  progress.csv         the same rows as a table (header: every key seen so far)
  tensorboard/         the same rows as TensorBoard scalars (with --tensorboard)
  learning_curve.png   episode return vs env steps
  checkpoint/          the latest Algorithm.save_to_path (final, or periodic)
  wandb/               offline wandb runs (with --wandb)
  eval.gif             --eval --render of this run's checkpoint
```

``--seeds 0,1,2`` puts one such directory per seed, ``seed-<S>/``, under one
group directory, with the group's ``summary.json``.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import yaml

from marl.experiment.cli import UsageError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"
CHECKPOINT_DIR = "checkpoint"

#: The x-axis of every curve and of wandb's charts.
STEP_KEY = "num_env_steps_sampled_lifetime"
#: The metric the summary, the sweeps and the plots report by default.
RETURN_KEY = "env_runners/episode_return_mean"
#: The same over the episodes of an evaluation during training (``--eval-interval``).
EVAL_RETURN_KEY = "evaluation/env_runners/episode_return_mean"
#: Each agent's return: ``<prefix>/<agent id>`` in a flattened result row.
AGENT_RETURN_PREFIX = "env_runners/agent_episode_returns_mean"
#: ``--eval-opponent`` during training: the win rate against that opponent.
GAMES_WIN_RATE_KEY = "evaluation/games/win_rate"


def default_run_dir_name(env: Any, algo: str, setup: str, when: Optional[float] = None) -> str:
    """``<env>-<algo>-<setup>-<timestamp>`` with the env made file-name safe."""
    env_name = re.sub(r"[^A-Za-z0-9_.]+", "_", str(env)).strip("_") or "env"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{env_name}-{algo}-{setup}-{stamp}"


def create_run_dir(path: Optional[str], env: Any, algo: str, setup: str, root: str = "runs") -> Path:
    """Make the run directory; a default name that exists already gets a ``-2``, ``-3`` ... suffix."""
    if path is not None:
        run_dir = Path(path)
        check_new_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    base = Path(root) / default_run_dir_name(env, algo, setup)
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a directory that holds a run already: a new run must not mix its rows into it."""
    if (Path(run_dir) / METRICS_FILE).exists():
        raise UsageError(
            f"argument --run-dir: {str(run_dir)!r} already holds a run ({METRICS_FILE}); "
            "use --resume to continue it, or choose another directory"
        )


def find_run_dir(path: str, argument: str) -> Tuple[Path, Path]:
    """``(run_dir, checkpoint)`` from a run directory or a checkpoint inside one.

    Raises `UsageError` naming ``argument`` when ``path`` is neither.
    """
    p = Path(path)
    if (p / CONFIG_FILE).is_file():
        checkpoint = _surviving(p / CHECKPOINT_DIR)
        if not (checkpoint / "metadata.json").is_file():
            raise UsageError(f"argument {argument}: run directory {str(p)!r} has no checkpoint ({CHECKPOINT_DIR}/)")
        return p, checkpoint
    if (p / "metadata.json").is_file():
        for parent in p.resolve().parents:
            if (parent / CONFIG_FILE).is_file():
                return parent, p
        raise UsageError(
            f"argument {argument}: no {CONFIG_FILE} in the directories above checkpoint {str(p)!r}; "
            "pass a run directory made by run_marl.py, or a checkpoint inside one"
        )
    raise UsageError(
        f"argument {argument}: {str(p)!r} is neither a run directory (with {CONFIG_FILE}) nor a "
        "checkpoint (with metadata.json)"
    )


def _surviving(checkpoint: Path) -> Path:
    """``checkpoint``, or the complete copy a save killed mid-swap left beside it
    (``marl.core.checkpoint_io.locate_checkpoint``, which warns naming it)."""
    if checkpoint.exists():
        return checkpoint
    from marl.core.checkpoint_io import CheckpointError, locate_checkpoint

    try:
        return locate_checkpoint(checkpoint)
    except CheckpointError:
        return checkpoint


def find_checkpoint(path: str, argument: str) -> Path:
    """A checkpoint directory from itself or from the run directory holding it."""
    p = _surviving(Path(path))
    if (p / "metadata.json").is_file():
        return p
    inside = _surviving(p / CHECKPOINT_DIR)
    if (inside / "metadata.json").is_file():
        return inside
    raise UsageError(
        f"argument {argument}: {str(p)!r} is neither a checkpoint (with metadata.json) nor a run "
        f"directory with {CHECKPOINT_DIR}/"
    )


# ------------------------------------------------------------------ config.yaml
def write_config(run_dir: Path, options: Mapping[str, Any], algorithm_config: Mapping[str, Any]) -> Path:
    """Write ``config.yaml``: the options first, then the effective algorithm config."""
    path = run_dir / CONFIG_FILE
    data = dict(options)
    data["algorithm_config"] = dict(algorithm_config)
    tmp = path.with_suffix(".yaml.tmp")
    with open(tmp, "w") as f:
        f.write("# Resolved options of this run (reusable: run_marl.py --config this-file).\n")
        f.write("# 'algorithm_config' lists the effective values for reference and is not read back.\n")
        yaml.safe_dump(data, f, sort_keys=False, default_flow_style=None)
    os.replace(tmp, path)
    return path


def read_config(run_dir: Path) -> Dict[str, Any]:
    with open(Path(run_dir) / CONFIG_FILE) as f:
        return yaml.safe_load(f) or {}


# ------------------------------------------------------------------ metrics
def flatten(result: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested result dict -> ``{"a/b/c": value}`` with JSON-safe scalars.

    numpy scalars become Python numbers, NaN/inf become None (strict JSON);
    lists and other objects are left out.
    """
    out: Dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
            continue
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            out[name] = value
        elif isinstance(value, (int, float)):
            out[name] = value if math.isfinite(value) else None
    return out


class MetricsLog:
    """``metrics.jsonl``: one line per iteration, appended and flushed as it comes."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_FILE

    def log(self, row: Mapping[str, Any]) -> None:
        """Add one line with a single ``write``: a signal handler that raises (a second Ctrl-C)
        runs before or after it, never in the middle of the line."""
        data = (json.dumps(row) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # a regular file takes it all at once unless the disk is full
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def close(self) -> None:
        pass  # every line is written and closed as it comes

    def truncate_after(self, iteration: int) -> int:
        """Drop rows of iterations after ``iteration`` (written after the checkpoint a resume starts from).

        Returns how many rows were dropped.
        """
        rows = read_metrics(self.path.parent)
        kept = [r for r in rows if r.get("training_iteration", 0) <= iteration]
        if len(kept) != len(rows):
            tmp = self.path.with_suffix(".jsonl.tmp")
            with open(tmp, "w") as f:
                for row in kept:
                    f.write(json.dumps(row) + "\n")
            os.replace(tmp, self.path)
        return len(rows) - len(kept)


def read_metrics(run_dir: Path) -> List[Dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (a torn last line, from a crash, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    rows: List[Dict[str, Any]] = []
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def series(rows: Iterable[Mapping[str, Any]], metric: str, x: str = STEP_KEY) -> Tuple[List[float], List[float]]:
    """``(xs, ys)`` of the rows where both ``x`` and ``metric`` are numbers."""
    xs: List[float] = []
    ys: List[float] = []
    for row in rows:
        a, b = row.get(x), row.get(metric)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(b, bool):
            xs.append(float(a))
            ys.append(float(b))
    return xs, ys
