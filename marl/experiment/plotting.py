"""Learning curves from run directories (matplotlib, Agg backend: no display needed).

Runs are grouped (by default, runs whose options differ only in the seed form
one group; or by one config key with ``group_by``); a group of several runs
is drawn as its mean with a band (min-max or +-1 std) on a common x grid.
Curves can be smoothed (a moving average over ``smooth`` iterations, per run,
before averaging) and split per agent. Axes are labelled in words
(`axis_label`), since a figure leaves the run directory where the key names
are explained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from marl.experiment.run_dir import (  # noqa: E402
    CONFIG_FILE,
    EVAL_RETURN_KEY,
    METRICS_FILE,
    RETURN_KEY,
    STEP_KEY,
    read_metrics,
    series,
)

#: Options that do not change what a run learns; runs differing only in these share a group.
NOT_IDENTITY = {
    "seed", "run_dir", "resume", "eval", "eval_episodes", "render", "gif", "progress", "config",
    "checkpoint_every", "torch_threads", "wandb", "wandb_project", "wandb_entity", "wandb_group", "wandb_tags",
    "wandb_mode", "stop_iters", "stop_timesteps", "stop_return", "stop_time", "algorithm_config",
    "resumed_from",
}
BANDS = ("minmax", "std", "none")

#: Axis labels of the metrics people plot; other keys are spelled out by `axis_label`.
LABELS = {
    STEP_KEY: "env steps",
    "num_agent_steps_sampled_lifetime": "agent steps",
    "training_iteration": "training iteration",
    "time_total_s": "training time (s)",
    RETURN_KEY: "episode return (sum over agents; mean of the iteration's episodes)",
    "env_runners/smoothed_episode_return_mean": "episode return (sum over agents; mean of the latest episodes)",
    EVAL_RETURN_KEY: "evaluation episode return (sum over agents; mean of the evaluation's episodes)",
    "env_runners/episode_len_mean": "episode length (mean of the iteration's episodes)",
}
class PlotError(ValueError):
    """Nothing to draw for what was asked; ``argument`` names the option to change."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


#: What a per-agent key holds in place of a team metric's ``episode_return_mean``.
_AGENT_PARTS = ("agent_episode_returns_mean/", "agent_episode_return_mean/")


def axis_label(key: str) -> str:
    """``key`` in words: `LABELS`, else its last part with the rest as context
    (``learners/agent_0/entropy`` -> ``entropy (learners, agent_0)``)."""
    if key in LABELS:
        return LABELS[key]
    *context, name = key.split("/")
    return name.replace("_", " ") + (f" ({', '.join(context)})" if context else "")


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (fewer at the start, so no point is lost)."""
    y = np.asarray(values, float)
    if window <= 1 or len(y) == 0:
        return y
    sums = np.concatenate([[0.0], np.cumsum(y)])  # sums[i]: the sum of y[:i]
    end = np.arange(1, len(y) + 1)
    start = np.maximum(end - window, 0)
    return (sums[end] - sums[start]) / (end - start)


def agent_keys(runs: Sequence[Run], metric: str) -> Dict[str, str]:
    """``{agent: key}`` of the per-agent versions of a team return ``metric``."""
    suffix = "episode_return_mean"
    if not metric.endswith(suffix):
        return {}
    prefixes = [metric[: -len(suffix)] + part for part in _AGENT_PARTS]
    found: Dict[str, str] = {}
    for run in runs:
        for row in run.rows:
            for key in row:
                prefix = next((p for p in prefixes if key.startswith(p)), None)
                if prefix is not None:
                    found.setdefault(key[len(prefix):], key)
    return dict(sorted(found.items()))


@dataclass
class Run:
    path: Path
    config: Dict[str, Any]
    rows: List[Dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name


def find_runs(paths: Iterable[str]) -> List[Path]:
    """Run directories (holding ``metrics.jsonl``) among ``paths``; a directory without one
    (a sweep directory, ``runs/``) contributes the runs below it."""
    found: List[Path] = []
    for raw in paths:
        p = Path(raw)
        if (p / METRICS_FILE).is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(m.parent for m in p.rglob(METRICS_FILE)))
        else:
            raise FileNotFoundError(f"{str(p)!r} is not a run directory (no {METRICS_FILE}) or a directory of runs")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise FileNotFoundError(f"no run directories ({METRICS_FILE}) under {list(paths)}")
    return unique


def load_run(path: Path) -> Run:
    config: Dict[str, Any] = {}
    if (path / CONFIG_FILE).is_file():
        with open(path / CONFIG_FILE) as f:
            config = yaml.safe_load(f) or {}
    return Run(path=path, config=config, rows=read_metrics(path))


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """``key`` in a run's config: an option, a hyperparameter, an effective algorithm-config
    value, or a dotted field (``env_config.N``)."""
    for source in (config, config.get("hyperparameters") or {}, config.get("algorithm_config") or {}):
        value: Any = source
        for part in key.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                break
        else:
            return value
    return None


def _identity(config: Mapping[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in NOT_IDENTITY and k != "hyperparameters"}
    for k, v in (config.get("hyperparameters") or {}).items():
        out[k] = v
    return out


def _hashable(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=True).strip()


def group_runs(runs: Sequence[Run], group_by: Optional[str] = None) -> Dict[str, List[Run]]:
    """``{label: runs}``. Labels name what differs between groups (``lr=0.001, entropy_coeff=0.01``)."""
    if group_by:
        groups: Dict[str, List[Run]] = {}
        for run in runs:
            groups.setdefault(f"{group_by}={_short(config_value(run.config, group_by))}", []).append(run)
        return groups
    keyed: Dict[str, List[Run]] = {}
    identities: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        identity = _identity(run.config)
        key = _hashable(identity)
        keyed.setdefault(key, []).append(run)
        identities[key] = identity
    if len(keyed) == 1:
        (key, members), = keyed.items()
        ident = identities[key]
        label = f"{ident.get('algo', '?')} {ident.get('policy_setup', '')} on {ident.get('env', '?')}".strip()
        return {label: members}
    all_keys = sorted({k for ident in identities.values() for k in ident})
    varying = [k for k in all_keys if len({_hashable(ident.get(k)) for ident in identities.values()}) > 1]
    groups = {}
    for key, members in keyed.items():
        ident = identities[key]
        label = ", ".join(f"{k}={_short(ident.get(k))}" for k in varying) or members[0].name
        groups.setdefault(label, []).extend(members)
    return groups


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return _hashable(value)
    return str(value)


def aggregate(curves: Sequence[Tuple[Sequence[float], Sequence[float]]], band: str = "minmax",
              points: int = 200) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Mean and band of several curves on the x range they all cover.

    Curves with identical x values are averaged point by point; otherwise each
    is linearly interpolated onto ``points`` evenly spaced x values.
    """
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        return np.array([]), np.array([]), None, None
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, None, None
    if all(len(c[0]) == len(curves[0][0]) and np.array_equal(c[0], curves[0][0]) for c in curves):
        grid = curves[0][0]
        ys = np.stack([c[1] for c in curves])
    else:
        lo = max(c[0].min() for c in curves)
        hi = min(c[0].max() for c in curves)
        if hi <= lo:  # no common range: fall back to the union of the ranges
            lo, hi = min(c[0].min() for c in curves), max(c[0].max() for c in curves)
        grid = np.linspace(lo, hi, points)
        ys = np.stack([np.interp(grid, c[0], c[1]) for c in curves])
    mean = ys.mean(axis=0)
    if band == "std":
        std = ys.std(axis=0)
        return grid, mean, mean - std, mean + std
    if band == "minmax":
        return grid, mean, ys.min(axis=0), ys.max(axis=0)
    return grid, mean, None, None


def draw_groups(groups: Mapping[str, Sequence[Run]], metric: str = RETURN_KEY, x: str = STEP_KEY,
                band: str = "minmax", title: Optional[str] = None, smoothing: int = 1,
                per_agent: bool = False) -> Figure:
    """One figure, one line (mean) per group, with its band when it has several runs.

    ``smoothing``: moving-average window (iterations) applied to each run first.
    ``per_agent``: also one dashed line per agent (its mean over the group's
    runs) for a team return ``metric``. Raises `PlotError` naming what is missing.
    """
    if band not in BANDS:
        raise ValueError(f"band={band!r}: expected one of {BANDS}")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    drawn = 0
    for label, runs in groups.items():
        line = _draw_mean(ax, runs, metric, x, band, smoothing, label, linewidth=1.8)
        if line is None:
            continue
        drawn += 1
        if per_agent:
            agents = agent_keys(runs, metric)
            if not agents:
                plt.close(fig)
                raise PlotError("--per-agent", f"the runs of {label!r} have no per-agent keys for {metric!r} "
                                "(per-agent returns exist for metrics ending in episode_return_mean)")
            for agent, key in agents.items():
                _draw_mean(ax, runs, key, x, "none", smoothing, f"{label}: {agent}", linewidth=1.0, linestyle="--")
    if drawn == 0:
        plt.close(fig)
        raise PlotError("--metric", f"no run has both {metric!r} and {x!r} in its {METRICS_FILE}")
    ax.set_xlabel(axis_label(x))
    ylabel = axis_label(metric)
    ax.set_ylabel(ylabel if smoothing <= 1 else f"{ylabel},\nmoving average of {smoothing} iterations")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    plt.close(fig)  # the caller saves it; closed figures still draw and keep their axes
    return fig


def _draw_mean(ax: Any, runs: Sequence[Run], metric: str, x: str, band: str, smoothing: int, label: str,
               **style: Any) -> Any:
    """The mean of ``runs``' curves (and its band) on ``ax``; None when no run has the metric."""
    curves = [(xs, smooth(ys, smoothing)) for xs, ys in (series(r.rows, metric, x) for r in runs)]
    grid, mean, low, high = aggregate(curves, band)
    if not len(grid):
        return None
    n = sum(1 for c in curves if len(c[0]))
    line, = ax.plot(grid, mean, label=f"{label} (n={n})" if n > 1 else label, **style)
    if low is not None and high is not None:
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def save_figure(fig: Figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def plot_groups(groups: Mapping[str, Sequence[Run]], out: Path, metric: str = RETURN_KEY, x: str = STEP_KEY,
                band: str = "minmax", title: Optional[str] = None) -> Path:
    """`draw_groups` saved to ``out``."""
    return save_figure(draw_groups(groups, metric, x, band, title), out)


def plot_run(run_dir: Path, out: Optional[Path] = None, metric: str = RETURN_KEY, x: str = STEP_KEY) -> Optional[Path]:
    """A run's own ``learning_curve.png``; None when it has no point to draw yet."""
    run = load_run(Path(run_dir))
    if not series(run.rows, metric, x)[0]:
        return None
    return plot_groups({run.name: [run]}, out or Path(run_dir) / "learning_curve.png", metric, x, "none",
                       title=_run_title(run))


def _run_title(run: Run) -> str:
    c = run.config
    return f"{c.get('algo', '?')} / {c.get('policy_setup', '?')} on {c.get('env', '?')} (seed {c.get('seed')})"

