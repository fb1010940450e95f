"""What a run shows on the console: a tqdm progress bar while training, rich tables after."""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from scripts.experiment.run_dir import RETURN_KEY, STEP_KEY
from scripts.experiment.stopping import StopConditions


class TrainingProgress:
    """A progress bar over env steps (or iterations): iteration, steps, return, steps/s.

    Disabled (``enabled=False``) it prints nothing; the summary still comes.
    """

    def __init__(self, stop: StopConditions, start_row: Optional[Mapping[str, Any]], enabled: bool = True) -> None:
        self.total, self.unit = stop.progress_total()
        start = 0
        if start_row:
            start = int(start_row.get(STEP_KEY if self.unit == "steps" else "training_iteration", 0) or 0)
        self.bar = tqdm(
            total=self.total,
            initial=min(start, self.total) if self.total else start,
            unit=self.unit,
            unit_scale=self.unit == "steps",
            dynamic_ncols=True,
            disable=not enabled,
            file=sys.stderr,
            desc="training",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"
            if self.total
            else None,
        )

    def update(self, row: Mapping[str, Any]) -> None:
        value = int(row.get(STEP_KEY if self.unit == "steps" else "training_iteration", 0) or 0)
        if self.total:
            value = min(value, self.total)
        self.bar.update(max(0, value - self.bar.n))
        ret = row.get(RETURN_KEY)
        self.bar.set_postfix(
            {
                "iter": row.get("training_iteration"),
                "steps": f"{row.get(STEP_KEY, 0):,}",
                "return": "n/a" if ret is None else f"{ret:.2f}",
                "steps/s": f"{row.get('num_env_steps_sampled_per_s', 0.0):.0f}",
            },
            refresh=True,
        )

    def write(self, message: str) -> None:
        """A line above the bar (e.g. 'checkpoint saved')."""
        if not self.bar.disable:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _fmt(value: Any, digits: int = 2) -> str:
    """Numbers for tables: ``digits`` decimals, or ``digits`` significant digits when negative."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{-digits}g}" if digits < 0 else f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_table(
    *,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    session_rows: Sequence[Mapping[str, Any]],
    session_seconds: float,
    facts: Mapping[str, Any],
) -> Table:
    """The end-of-run table: counts, throughput, returns (first, final, best), per-agent returns."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("", style="bold")
    table.add_column("value", overflow="fold")
    last = rows[-1] if rows else {}
    for name, value in facts.items():
        table.add_row(name, _fmt(value))
    table.add_row("iterations", _fmt(last.get("training_iteration")))
    table.add_row("env steps", _fmt(last.get(STEP_KEY)))
    table.add_row("episodes", _fmt(last.get("env_runners/num_episodes_lifetime")))
    session_steps = sum(int(r.get("env_runners/num_env_steps_sampled", 0) or 0) for r in session_rows)
    if not session_steps and session_rows:
        first = session_rows[0]
        session_steps = int(last.get(STEP_KEY, 0)) - int(first.get(STEP_KEY, 0)) + int(
            first.get("env_runners/num_env_steps_sampled", 0) or 0
        )
    table.add_row("wall time (this session)", f"{session_seconds:,.1f} s")
    table.add_row("throughput (this session)", f"{session_steps / max(session_seconds, 1e-9):,.0f} env steps/s")
    returns = [r[RETURN_KEY] for r in rows if isinstance(r.get(RETURN_KEY), (int, float))]
    if returns:
        table.add_row("return, first iteration", _fmt(returns[0]))
        table.add_row("return, final", _fmt(returns[-1]))
        table.add_row("return, best", _fmt(max(returns)))
        k = 5 if len(returns) >= 10 else 1
        early, late = sum(returns[:k]) / k, sum(returns[-k:]) / k
        if k > 1:  # single iterations are noisy: compare the means of the first and last five
            table.add_row("return, mean of first 5 iterations", _fmt(early))
            table.add_row("return, mean of last 5 iterations", _fmt(late))
        table.add_row("return, improvement", f"{late - early:+,.2f}")
    prefix = "env_runners/agent_episode_returns_mean/"
    for key in sorted(k for k in last if k.startswith(prefix)):
        table.add_row(f"  agent {key[len(prefix):]}, final", _fmt(last[key]))
    return table


def evaluation_table(title: str, returns: Sequence[float], lengths: Sequence[int],
                     agent_returns: Sequence[Mapping[str, float]]) -> Table:
    """One row per evaluation episode, then the mean."""
    agents = sorted({a for per in agent_returns for a in per}, key=str)
    table = Table(title=title, header_style="bold")
    table.add_column("episode", justify="right")
    table.add_column("return", justify="right")
    table.add_column("length", justify="right")
    for agent in agents:
        table.add_column(f"agent {agent}", justify="right")
    for i, ret in enumerate(returns):
        per = agent_returns[i] if i < len(agent_returns) else {}
        table.add_row(str(i + 1), f"{ret:.2f}", str(lengths[i] if i < len(lengths) else ""),
                      *[f"{per[a]:.2f}" if a in per else "" for a in agents])
    if returns:
        n = len(returns)
        table.add_row("mean", f"{sum(returns) / n:.2f}",
                      f"{sum(lengths) / max(len(lengths), 1):.1f}" if lengths else "",
                      *[f"{sum(p.get(a, 0.0) for p in agent_returns) / max(len(agent_returns), 1):.2f}" for a in agents],
                      style="bold")
    return table


def results_table(title: str, rows: List[Dict[str, Any]], columns: Sequence[str]) -> Table:
    """A plain table of dict rows (the sweep results)."""
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_fmt(row.get(c), -6) for c in columns])
    return table


def console() -> Console:
    """The console tables print to (stdout; plain text when it is not a terminal)."""
    return Console(width=None if sys.stdout.isatty() else 120)
