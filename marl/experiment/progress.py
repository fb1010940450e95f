"""What a run shows on the console: progress while training, rich tables after.

Progress, by where stdout goes:

- a terminal: a tqdm bar (on stderr) with iteration, env steps, return, steps/s;
- anything else (a log file, a pipe, a notebook, a sweep), or ``--no-progress``:
  one line per iteration on stdout, which a log keeps and ``grep`` can read,
  ``iter 3 | env steps 6,000 | return -65.43 | eval -60.12 | 2,345 steps/s | 8.1 s``;
- ``--quiet``: neither (the start line and the summary still print).
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from marl.experiment.run_dir import AGENT_RETURN_PREFIX, EVAL_RETURN_KEY, GAMES_WIN_RATE_KEY, RETURN_KEY, STEP_KEY
from marl.experiment.stopping import StopConditions

PROGRESS_MODES = ("bar", "lines", "off")


def progress_mode(progress: bool, quiet: bool, interactive: Optional[bool] = None) -> str:
    """``bar``, ``lines`` or ``off`` for ``--progress`` / ``--quiet`` (see the module docstring).

    ``interactive`` defaults to whether stdout and stderr (where the bar goes) are terminals.
    """
    if quiet:
        return "off"
    if interactive is None:
        interactive = sys.stdout.isatty() and sys.stderr.isatty()
    return "bar" if progress and interactive else "lines"


def iteration_line(row: Mapping[str, Any], prefix: str = "") -> str:
    """One iteration as one line of text (the ``lines`` mode, also used by parallel seeds)."""
    parts = [f"iter {row.get('training_iteration')}", f"env steps {_fmt(row.get(STEP_KEY, 0))}",
             f"return {_return_text(row)}"]
    if EVAL_RETURN_KEY in row:
        parts.append(f"eval {_fmt(row.get(EVAL_RETURN_KEY))}")
    if GAMES_WIN_RATE_KEY in row:
        parts.append(f"win {row[GAMES_WIN_RATE_KEY]:.2f}")
    parts.append(f"{row.get('num_env_steps_sampled_per_s', 0.0):,.0f} steps/s")
    parts.append(f"{row.get('time_total_s', 0.0):,.1f} s")
    return prefix + " | ".join(parts)


def _return_text(row: Mapping[str, Any]) -> str:
    """The team return, or each agent's where the team return is zero by construction
    (a zero-sum game: ``return player_0 0.62, player_1 -0.62``)."""
    team = row.get(RETURN_KEY)
    prefix = AGENT_RETURN_PREFIX + "/"
    agents = {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}
    if isinstance(team, (int, float)) and abs(team) < 1e-9 and agents:
        return ", ".join(f"{agent} {_fmt(value)}" for agent, value in sorted(agents.items()))
    return _fmt(team)


class TrainingProgress:
    """Per-iteration progress in one of `PROGRESS_MODES`; ``prefix`` starts every line (``seed 1 | ``)."""

    def __init__(self, stop: StopConditions, start_row: Optional[Mapping[str, Any]], mode: str = "bar",
                 prefix: str = "") -> None:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"mode={mode!r}: expected one of {PROGRESS_MODES}")
        self.mode, self.prefix = mode, prefix
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
            disable=mode != "bar",
            file=sys.stderr,
            desc=prefix.strip(" |") or "training",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"
            if self.total
            else None,
        )

    def update(self, row: Mapping[str, Any]) -> None:
        if self.mode == "lines":
            print(iteration_line(row, self.prefix), flush=True)
        if self.mode != "bar":
            return
        value = int(row.get(STEP_KEY if self.unit == "steps" else "training_iteration", 0) or 0)
        if self.total:
            value = min(value, self.total)
        self.bar.update(max(0, value - self.bar.n))
        postfix = {"iter": row.get("training_iteration"), "steps": f"{row.get(STEP_KEY, 0):,}",
                   "return": _fmt(row.get(RETURN_KEY))}
        if EVAL_RETURN_KEY in row:
            postfix["eval"] = _fmt(row.get(EVAL_RETURN_KEY))
        postfix["steps/s"] = f"{row.get('num_env_steps_sampled_per_s', 0.0):.0f}"
        self.bar.set_postfix(postfix, refresh=True)

    def write(self, message: str) -> None:
        """A line between iterations (e.g. 'checkpoint saved'): above the bar, or as a line."""
        if self.mode == "bar":
            self.bar.write(self.prefix + message, file=sys.stderr)
        elif self.mode == "lines":
            print(self.prefix + message, flush=True)

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
    evaluations = [r for r in rows if isinstance(r.get(EVAL_RETURN_KEY), (int, float))]
    if evaluations:
        final = evaluations[-1]
        how = f"{_fmt(final.get('evaluation/env_runners/num_episodes'))} episodes"
        table.add_row(f"evaluation return, final (iteration {final['training_iteration']}, {how})",
                      _fmt(final[EVAL_RETURN_KEY]))
        table.add_row("evaluation return, best", _fmt(max(r[EVAL_RETURN_KEY] for r in evaluations)))
    prefix = AGENT_RETURN_PREFIX + "/"
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
