#!/usr/bin/env python
"""Run a hyperparameter sweep described by a wandb sweep YAML file.

    python scripts/sweep.py scripts/sweeps/ppo_simple_spread_lr_entropy.yaml            # local (offline)
    python scripts/sweep.py scripts/sweeps/ppo_simple_spread_lr_entropy.yaml --count 4
    WANDB_MODE=online python scripts/sweep.py scripts/sweeps/ppo_simple_spread_lr_entropy.yaml   # wandb controller

Online (``--online``, or wandb mode ``online`` by the rule in
``marl/experiment/tracking.py``, and no ``--offline``): ``wandb.sweep`` registers the file with wandb's
controller and ``wandb.agent`` runs the trials in this process, each one
``run_marl.main`` with the sampled parameters as ``--key=value``.

Offline (the default without a wandb API key, or ``--offline``): the same
file runs locally through Optuna (grid / random / bayes -> GridSampler /
RandomSampler / TPESampler). Each trial gets ``<sweep_dir>/trial-NNN/`` (a
normal run directory; with ``--wandb`` also an offline wandb run), and at the
end a results table sorted by the sweep's metric is printed and
``<sweep_dir>/summary.json`` and ``<sweep_dir>/comparison.png`` are written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from marl.experiment import local_sweep, progress, tracking  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sweep files: scripts/sweeps/*.yaml (wandb's format; 'program: scripts/run_marl.py').",
        allow_abbrev=False,
    )
    parser.add_argument("file", metavar="SWEEP.yaml", help="wandb sweep configuration")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="number of trials (default: the whole grid; random/bayes: run_cap or 10)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true",
                      help="run locally through Optuna even when wandb is online")
    mode.add_argument("--online", action="store_true",
                      help="use wandb's sweep controller even without $WANDB_MODE=online / $WANDB_API_KEY "
                           "(e.g. after `wandb login`)")
    parser.add_argument("--sweep-dir", metavar="DIR", default=None,
                        help="where the trial run directories go (default: runs/sweeps/<name>-<timestamp>)")
    parser.add_argument("--wandb", action="store_true",
                        help="local mode: log each trial to wandb too (offline unless the wandb mode is online)")
    parser.add_argument("--wandb-project", default=None, metavar="NAME",
                        help="wandb project (default: the file's 'project', else 'marl')")
    parser.add_argument("--wandb-entity", default=None, metavar="NAME")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar per trial")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the sweep; returns ``{"mode", "sweep_dir", "trials", "summary", "comparison"}``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = local_sweep.load_sweep(Path(args.file))
    except FileNotFoundError:
        parser.error(f"argument SWEEP.yaml: no such file: {args.file!r}")
    except local_sweep.SweepFileError as e:
        parser.error(f"argument SWEEP.yaml: {e}")
    if args.count is not None and args.count < 1:
        parser.error(f"argument --count: expected an integer >= 1, got {args.count}")
    program = spec.program or "scripts/run_marl.py"
    if Path(program).name != "run_marl.py":
        parser.error(f"argument SWEEP.yaml: program={program!r}; this runner only runs scripts/run_marl.py")

    sweep_dir = Path(args.sweep_dir) if args.sweep_dir else (
        Path("runs") / "sweeps" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    online = args.online or (not args.offline and tracking.resolve_wandb_mode() == "online")
    if online:
        return run_with_wandb(spec, sweep_dir, args)
    return run_locally(spec, sweep_dir, args)


def _run_marl_main():
    from scripts import run_marl

    return run_marl.main


# ---------------------------------------------------------------- local (Optuna)
def run_locally(spec: local_sweep.SweepSpec, sweep_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    from marl.experiment import plotting

    sweep_dir.mkdir(parents=True, exist_ok=True)
    run_marl_main = _run_marl_main()
    console = progress.console()
    console.print(
        f"[bold]local sweep[/bold] {spec.name}: {spec.method} over "
        f"{', '.join(p.name for p in spec.search)}; metric {spec.metric} ({spec.goal}); dir {sweep_dir}"
    )

    def run_trial(trial_args: List[str], run_dir: Path) -> Dict[str, Any]:
        extra = ["--run-dir", str(run_dir)]
        if args.no_progress:
            extra.append("--no-progress")
        if args.wandb:
            extra += ["--wandb", "--wandb-group", spec.name,
                      "--wandb-project", args.wandb_project or spec.raw.get("project") or "marl"]
            if args.wandb_entity:
                extra += ["--wandb-entity", args.wandb_entity]
        console.print(f"[bold]trial {run_dir.name}[/bold]: {' '.join(trial_args)}")
        return run_marl_main(trial_args + extra)

    records = local_sweep.run_local_sweep(spec, sweep_dir, run_trial, args.count, seed=args.seed)
    summary = local_sweep.write_summary(sweep_dir / "summary.json", spec, records)
    ranked = local_sweep.sort_records(records, spec.goal)
    param_names = [p.name for p in spec.search]
    rows = [
        {"rank": i + 1, "trial": r.number, **{n: r.params.get(n) for n in param_names},
         spec.metric: r.value, "env steps": r.env_steps,
         "seconds": None if r.seconds is None else round(r.seconds, 1), "state": r.state,
         "run dir": Path(r.run_dir).name if r.run_dir else None}
        for i, r in enumerate(ranked)
    ]
    console.print(progress.results_table(
        f"{spec.name}: {len(records)} trials, sorted by {spec.metric} ({spec.goal})",
        rows, ["rank", "trial", *param_names, spec.metric, "env steps", "seconds", "state", "run dir"],
    ))
    comparison = None
    run_dirs = [Path(r.run_dir) for r in records if r.run_dir and (Path(r.run_dir) / "metrics.jsonl").exists()]
    if run_dirs:
        runs = [plotting.load_run(p) for p in run_dirs]
        try:
            comparison = plotting.plot_groups(plotting.group_runs(runs), sweep_dir / "comparison.png",
                                              metric=spec.metric, title=f"sweep {spec.name}")
        except ValueError as e:  # no trial logged the metric
            console.print(f"[yellow]no comparison plot: {e}[/yellow]")
    console.print(f"trial run directories: {sweep_dir}/trial-*\nsummary: {summary}"
                  + (f"\ncomparison plot: {comparison}" if comparison else ""))
    return {"mode": "local", "sweep_dir": sweep_dir, "trials": records, "summary": summary,
            "comparison": comparison}


# ---------------------------------------------------------------- online (wandb)
def run_with_wandb(spec: local_sweep.SweepSpec, sweep_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """wandb's controller picks the parameters; wandb.agent runs the trials in this process."""
    import wandb

    run_marl_main = _run_marl_main()
    project = args.wandb_project or spec.raw.get("project") or "marl"
    sweep_id = wandb.sweep(sweep=dict(spec.raw), project=project, entity=args.wandb_entity)
    sweep_dir.mkdir(parents=True, exist_ok=True)

    def trial() -> None:
        run = wandb.init(dir=str(sweep_dir))
        params = dict(run.config)
        argv = [f"--{k}={local_sweep.cli_value(v)}" for k, v in params.items()]
        argv += ["--wandb", "--run-dir", str(sweep_dir / f"trial-{run.id}")]
        if args.no_progress:
            argv.append("--no-progress")
        run_marl_main(argv)

    wandb.agent(sweep_id, function=trial, count=args.count, project=project, entity=args.wandb_entity)
    return {"mode": "wandb", "sweep_id": sweep_id, "sweep_dir": sweep_dir}


if __name__ == "__main__":
    main()
