"""Where each iteration's metrics go: one flattened row, fanned out to every enabled logger.

`MetricsStream.log` is the only place that turns a training result into a
row (``flatten``: ``'/'``-joined keys, JSON-safe scalars, plus a
``timestamp``), so ``metrics.jsonl``, ``progress.csv``, TensorBoard and wandb
always show the same numbers under the same names:

- ``metrics.jsonl`` (`run_dir.MetricsLog`): always; the run's record, read back
  by ``--resume``, the plots and the sweeps;
- ``progress.csv`` (`CsvLog`): always; for spreadsheets and pandas;
- ``tensorboard/`` (`TensorBoardLog`): with ``--tensorboard``;
- wandb (`tracking.WandbTracker`): with ``--wandb``.
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence

from marl.experiment.run_dir import STEP_KEY, flatten

CSV_FILE = "progress.csv"
TENSORBOARD_DIR = "tensorboard"


class Logger(Protocol):
    def log(self, row: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class CsvLog:
    """``progress.csv``: one row per iteration under a header of every key seen so far.

    Keys come and go between iterations (evaluation runs every N iterations,
    the return is missing while no episode has finished), so the header is the
    union of the keys in order of first appearance: a row that brings a new key
    rewrites the file with the wider header (columns are only ever appended,
    so a column keeps its position), and a missing value is an empty cell.
    """

    def __init__(self, run_dir: Path, rows: Sequence[Mapping[str, Any]] = ()) -> None:
        self.path = Path(run_dir) / CSV_FILE
        self.columns: List[str] = []
        self.rows: List[Mapping[str, Any]] = []
        for row in rows:  # a resumed run: the CSV is rebuilt from metrics.jsonl, its record
            self._add(row)
        self._rewrite()

    def _add(self, row: Mapping[str, Any]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        self.rows.append(row)
        return bool(new)

    def log(self, row: Mapping[str, Any]) -> None:
        if self._add(row):
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        pass


class TensorBoardLog:
    """Every numeric metric as a TensorBoard scalar (tag = the flattened key) at step = env steps."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.path))

    def log(self, row: Mapping[str, Any]) -> None:
        step = int(row.get(STEP_KEY) or 0)
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (STEP_KEY, "timestamp"):
                self.writer.add_scalar(key, value, global_step=step, walltime=row.get("timestamp"))
        self.writer.flush()  # a run killed later still has every finished iteration on disk

    def close(self) -> None:
        self.writer.close()


class MetricsStream:
    """Flattens each training result once and hands the row to every logger."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def log(self, result: Mapping[str, Any]) -> Dict[str, Any]:
        """Log one ``Algorithm.train()`` result; returns the row every logger got."""
        row = flatten(result)
        row["timestamp"] = time.time()
        for logger in self.loggers:
            logger.log(row)
        return row

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def open_loggers(run_dir: Path, history: Sequence[Mapping[str, Any]], tensorboard: bool,
                 tracker: Optional[Logger] = None) -> MetricsStream:
    """The stream of one run: ``metrics.jsonl`` and ``progress.csv`` always, the others when asked.

    ``history``: the rows already in ``metrics.jsonl`` (a resumed run), which
    ``progress.csv`` is rebuilt from.
    """
    from marl.experiment.run_dir import MetricsLog

    loggers: List[Logger] = [MetricsLog(run_dir), CsvLog(run_dir, history)]
    if tensorboard:
        loggers.append(TensorBoardLog(run_dir))
    if tracker is not None:
        loggers.append(tracker)
    return MetricsStream(loggers)
