"""wandb sweep files run locally through Optuna (no search loop of our own).

The same YAML file drives wandb's own controller (online) and this module
(offline). Here:

- ``method``: ``grid`` -> ``optuna.samplers.GridSampler``, ``random`` ->
  ``RandomSampler``, ``bayes`` -> ``TPESampler``;
- ``metric: {name, goal}`` -> the study's direction; a trial's value is the
  last logged value of ``name`` in its ``metrics.jsonl`` (what wandb's run
  summary holds);
- ``parameters``: ``value`` (fixed, passed to every trial), ``values``
  (categorical), ``min``/``max`` (int or float uniform), ``distribution``:
  ``constant``, ``categorical``, ``int_uniform``, ``uniform``,
  ``log_uniform_values``, ``log_uniform`` (bounds are natural-log exponents),
  ``q_uniform``; nested ``parameters`` become dotted keys
  (``model_config.fcnet_hiddens``). Distributions Optuna has no sampler for
  (``normal``, ``q_log_uniform_values``, ...) are refused by name.

Every trial is one ``run_marl.py`` run: the parameters go in as
``--key=value``, exactly as wandb's agent passes them.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")


class SweepFileError(ValueError):
    """The sweep YAML has a value this runner cannot use; the message names the key."""


@dataclass
class SearchParam:
    """One searched parameter: categorical ``choices`` or a numeric range."""

    name: str
    choices: Optional[List[Any]] = None
    low: Optional[float] = None
    high: Optional[float] = None
    kind: str = "categorical"  # categorical | int | float
    log: bool = False
    step: Optional[float] = None

    def suggest(self, trial: Any) -> Any:
        """Ask the Optuna trial for this parameter's value."""
        if self.kind == "categorical":
            return _decode(trial.suggest_categorical(self.name, [encode_choice(c) for c in self.choices]))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)


@dataclass
class SweepSpec:
    name: str
    method: str
    metric: str
    goal: str
    fixed: Dict[str, Any] = field(default_factory=dict)
    search: List[SearchParam] = field(default_factory=list)
    run_cap: Optional[int] = None
    program: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict)

    def grid_size(self) -> int:
        return math.prod(len(p.choices or []) for p in self.search) if self.search else 1


def encode_choice(value: Any) -> Any:
    """Optuna's categorical choices must be None/bool/int/float/str: lists and dicts go as JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def cli_value(value: Any) -> str:
    """A parameter value as ``run_marl.py`` reads it back (``--key=<this>``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def load_sweep(path: Path) -> SweepSpec:
    """Read and check a wandb sweep YAML file."""
    path = Path(path)
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise SweepFileError(f"{path}: expected a mapping at the top level")
    method = raw.get("method")
    if method not in METHODS:
        raise SweepFileError(f"{path}: method={method!r}; expected one of {', '.join(METHODS)}")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict) or not metric.get("name"):
        raise SweepFileError(f"{path}: metric must be a mapping with a 'name' (and 'goal'), got {metric!r}")
    goal = metric.get("goal", "minimize")
    if goal not in GOALS:
        raise SweepFileError(f"{path}: metric.goal={goal!r}; expected one of {', '.join(GOALS)}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepFileError(f"{path}: 'parameters' must be a non-empty mapping")
    spec = SweepSpec(
        name=str(raw.get("name") or path.stem),
        method=method,
        metric=str(metric["name"]),
        goal=goal,
        run_cap=raw.get("run_cap"),
        program=raw.get("program"),
        raw=raw,
    )
    _read_parameters(parameters, "", spec, path)
    if method == "grid":
        for p in spec.search:
            if p.kind != "categorical":
                raise SweepFileError(
                    f"{path}: parameters.{p.name}: grid search needs 'values' (a list), got a {p.kind} range"
                )
    return spec


def _read_parameters(parameters: Mapping[str, Any], prefix: str, spec: SweepSpec, path: Path) -> None:
    for key, entry in parameters.items():
        name = f"{prefix}{key}"
        where = f"{path}: parameters.{name}"
        if not isinstance(entry, dict):
            raise SweepFileError(f"{where}: expected a mapping such as {{values: [...]}} or {{value: x}}, got {entry!r}")
        if "parameters" in entry:
            _read_parameters(entry["parameters"], f"{name}.", spec, path)
            continue
        dist = entry.get("distribution")
        if dist == "constant" or (dist is None and "value" in entry):
            if "value" not in entry:
                raise SweepFileError(f"{where}: distribution 'constant' needs 'value'")
            spec.fixed[name] = entry["value"]
        elif dist == "categorical" or (dist is None and "values" in entry):
            values = entry.get("values")
            if not isinstance(values, list) or not values:
                raise SweepFileError(f"{where}: 'values' must be a non-empty list, got {values!r}")
            if "probabilities" in entry:
                warnings.warn(f"{where}: 'probabilities' are ignored locally (Optuna samples choices uniformly)")
            spec.search.append(SearchParam(name, choices=list(values)))
        elif dist in (None, "int_uniform", "uniform", "log_uniform_values", "log_uniform", "q_uniform"):
            if "min" not in entry or "max" not in entry:
                raise SweepFileError(f"{where}: expected 'value', 'values' or 'min' and 'max', got keys {sorted(entry)}")
            low, high = entry["min"], entry["max"]
            if dist is None:
                dist = "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
            if dist == "int_uniform":
                spec.search.append(SearchParam(name, low=int(low), high=int(high), kind="int"))
            elif dist == "uniform":
                spec.search.append(SearchParam(name, low=float(low), high=float(high), kind="float"))
            elif dist == "log_uniform_values":
                spec.search.append(SearchParam(name, low=float(low), high=float(high), kind="float", log=True))
            elif dist == "log_uniform":
                spec.search.append(SearchParam(name, low=math.exp(low), high=math.exp(high), kind="float", log=True))
            else:  # q_uniform
                q = float(entry.get("q", 1.0))
                spec.search.append(SearchParam(name, low=float(low), high=float(high), kind="float", step=q))
        else:
            raise SweepFileError(
                f"{where}: distribution {dist!r} is not supported by the local (Optuna) runner; use "
                "constant, categorical, int_uniform, uniform, log_uniform_values, log_uniform or q_uniform, "
                "or run the sweep online with wandb"
            )


def make_sampler(spec: SweepSpec, seed: Optional[int]) -> Any:
    import optuna

    if spec.method == "grid":
        space = {p.name: [encode_choice(c) for c in p.choices] for p in spec.search}
        return optuna.samplers.GridSampler(space, seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def trial_argv(spec: SweepSpec, params: Mapping[str, Any]) -> List[str]:
    """The ``run_marl.py`` arguments of one trial: fixed values, then the sampled ones."""
    argv = [f"--{k}={cli_value(v)}" for k, v in spec.fixed.items()]
    argv += [f"--{k}={cli_value(v)}" for k, v in params.items()]
    return argv


def last_value(rows: Sequence[Mapping[str, Any]], metric: str) -> Optional[float]:
    """The last number logged for ``metric`` (wandb's run summary), or None."""
    for row in reversed(rows):
        value = row.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


@dataclass
class TrialRecord:
    number: int
    params: Dict[str, Any]
    run_dir: Optional[str]
    value: Optional[float]
    state: str
    env_steps: Optional[int] = None
    seconds: Optional[float] = None
    error: Optional[str] = None


def run_local_sweep(
    spec: SweepSpec,
    sweep_dir: Path,
    run_trial: Callable[[List[str], Path], Dict[str, Any]],
    count: Optional[int],
    seed: Optional[int] = None,
) -> List[TrialRecord]:
    """Run the sweep's trials with an Optuna study; ``run_trial(argv, run_dir)`` runs one.

    ``count`` caps the trials (default: the whole grid for ``grid``, else
    ``run_cap`` or 10). Returns one record per trial, in trial order.
    """
    import optuna

    from marl.experiment.run_dir import read_metrics

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if count is None:
        count = spec.grid_size() if spec.method == "grid" else (spec.run_cap or 10)
    study = optuna.create_study(
        study_name=spec.name,
        direction=spec.goal,
        sampler=make_sampler(spec, seed),
    )
    records: List[TrialRecord] = []

    def objective(trial: "optuna.Trial") -> float:
        params = {p.name: p.suggest(trial) for p in spec.search}
        run_dir = sweep_dir / f"trial-{trial.number:03d}"
        record = TrialRecord(number=trial.number, params=params, run_dir=str(run_dir), value=None, state="RUNNING")
        records.append(record)
        try:
            result = run_trial(trial_argv(spec, params), run_dir)
        except Exception as e:
            record.state, record.error = "FAIL", f"{type(e).__name__}: {e}"
            raise
        rows = read_metrics(run_dir)
        record.value = last_value(rows, spec.metric)
        record.env_steps = rows[-1].get("num_env_steps_sampled_lifetime") if rows else None
        record.seconds = result.get("session_seconds")
        if record.value is None:
            record.state = "FAIL"
            record.error = f"metric {spec.metric!r} was never logged"
            raise optuna.TrialPruned(record.error)  # recorded, not a crash of the sweep
        record.state = "COMPLETE"
        return record.value

    study.optimize(objective, n_trials=count, catch=(Exception,))
    return records


def _decode(value: Any) -> Any:
    """Undo `encode_choice` for JSON-encoded list / dict choices."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def sort_records(records: List[TrialRecord], goal: str) -> List[TrialRecord]:
    """Best first by the sweep's metric; trials without a value last."""
    sign = -1.0 if goal == "maximize" else 1.0
    return sorted(records, key=lambda r: (r.value is None, sign * (r.value or 0.0), r.number))


def write_summary(path: Path, spec: SweepSpec, records: List[TrialRecord]) -> Path:
    data = {
        "name": spec.name,
        "method": spec.method,
        "metric": {"name": spec.metric, "goal": spec.goal},
        "fixed": spec.fixed,
        "trials": [r.__dict__ for r in sort_records(records, spec.goal)],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
