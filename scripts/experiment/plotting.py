"""Learning curves from run directories (matplotlib, Agg backend: no display needed).

Runs are grouped (by default, runs whose options differ only in the seed form
one group; or by one config key with ``group_by``); a group of several runs
is drawn as its mean with a band (min-max or +-1 std) on a common x grid.
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

from scripts.experiment.run_dir import CONFIG_FILE, METRICS_FILE, RETURN_KEY, STEP_KEY, read_metrics, series  # noqa: E402

#: Options that do not change what a run learns; runs differing only in these share a group.
NOT_IDENTITY = {
    "seed", "run_dir", "resume", "eval", "eval_episodes", "render", "gif", "progress", "config",
    "checkpoint_every", "torch_threads", "wandb", "wandb_project", "wandb_entity", "wandb_group", "wandb_tags",
    "wandb_mode", "stop_iters", "stop_timesteps", "stop_return", "stop_time", "algorithm_config",
    "resumed_from",
}
BANDS = ("minmax", "std", "none")


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


def plot_groups(groups: Mapping[str, Sequence[Run]], out: Path, metric: str = RETURN_KEY, x: str = STEP_KEY,
                band: str = "minmax", title: Optional[str] = None) -> Path:
    """One figure, one line (mean) per group, with its band when it has several runs."""
    if band not in BANDS:
        raise ValueError(f"band={band!r}: expected one of {BANDS}")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    drawn = 0
    for label, runs in groups.items():
        curves = [series(r.rows, metric, x) for r in runs]
        grid, mean, low, high = aggregate(curves, band)
        if not len(grid):
            continue
        n = sum(1 for c in curves if c[0])
        line, = ax.plot(grid, mean, label=f"{label} (n={n})" if n > 1 else label, linewidth=1.8)
        if low is not None and high is not None:
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if drawn == 0:
        plt.close(fig)
        raise ValueError(f"no run has both {metric!r} and {x!r} in its {METRICS_FILE}")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


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

