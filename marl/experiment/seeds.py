"""``--seeds 0,1,2``: the same experiment once per seed, then one summary across the seeds.

One result is one seed; a claim needs several. Each seed is an ordinary run
(its own ``seed-<S>/`` run directory, resumable and plottable alone) under one
group directory, which ``plot.py <group dir>`` draws as mean and spread and
whose ``summary.json`` holds every seed's final return with the mean and std.

Seeds run one after the other, or ``--parallel N`` at once, each in its own
process (spawned: a fresh interpreter, no forked torch state); their progress
lines start with ``seed <S> |``. Ctrl-C stops every running seed after its
current iteration, saved as a single run would be (a terminal sends it to
the whole process group; a SIGTERM to this process is passed on), seeds not
started are skipped, and the summary covers the seeds that ran. A second
signal stops everything at once.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import signal
import statistics
import sys
from multiprocessing import connection
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from marl.experiment import interrupts
from marl.experiment.cli import RunSpec
from marl.experiment.run_dir import check_new_run_dir, create_run_dir

#: ``train(spec, prefix) -> result``: `scripts/run_marl.py`'s ``train``.
TrainFn = Callable[..., Dict[str, Any]]
SUMMARY_FILE = "summary.json"


def seed_specs(spec: RunSpec, group_dir: Path) -> List[RunSpec]:
    """One single-seed spec per ``--seeds`` value, its run directory ``<group_dir>/seed-<S>``.

    A seed that would land on an earlier run fails here, before any seed
    trains. wandb groups the seeds under the group directory's name unless
    ``--wandb-group`` says otherwise.
    """
    specs = []
    for seed in spec.seeds or ():
        run_dir = group_dir / f"seed-{seed}"
        check_new_run_dir(run_dir)
        specs.append(dataclasses.replace(spec, seed=seed, seeds=None, parallel=1, run_dir=str(run_dir),
                                         wandb_group=spec.wandb_group or group_dir.name))
    return specs


def run_seeds(spec: RunSpec, train: TrainFn) -> Dict[str, Any]:
    """Train every seed of ``spec.seeds``; print and write the summary.

    Returns ``{"group_dir", "runs", "summary", "interrupted_by", "exit_code"}``;
    ``runs`` holds ``train``'s result of every seed that ran, in seed order.
    """
    from marl.experiment import progress

    group_dir = create_run_dir(spec.run_dir, spec.env, spec.algo, spec.policy_setup)
    specs = seed_specs(spec, group_dir)
    with interrupts.deferred_stop("each running seed's current iteration") as interrupt:
        if spec.parallel > 1:
            results = _run_parallel(specs, train, spec.parallel, spec.torch_threads, interrupt)
        else:
            results = _run_in_turn(specs, train, interrupt)
    summary = summarize(results, spec.seeds or [])
    (group_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    columns = ["seed", "final return", "final eval return", "env steps", "stop reason", "run dir"]
    if summary["final_eval_return"] is None:
        columns.remove("final eval return")
    progress.console().print(progress.results_table(
        f"{group_dir}: {len(results)} of {len(specs)} seeds", summary_rows(summary), columns))
    stopped = [(r["interrupted_by"], r["exit_code"]) for r in results if r["interrupted_by"] is not None]
    if interrupt.requested:
        stopped.append((interrupt.name, interrupt.exit_code))
    return {
        "group_dir": group_dir,
        "runs": results,
        "summary": summary,
        "interrupted_by": stopped[0][0] if stopped else None,
        "exit_code": stopped[0][1] if stopped else 0,
    }


def _prefix(spec: RunSpec) -> str:
    return f"seed {spec.seed} | "


def _run_in_turn(specs: Sequence[RunSpec], train: TrainFn,
                 interrupt: interrupts.StopRequest) -> List[Dict[str, Any]]:
    """Seed after seed; a signal during a seed reaches that seed's own handler, one between
    two seeds ``interrupt``; either way the seeds after it do not start."""
    results: List[Dict[str, Any]] = []
    for spec in specs:
        if interrupt.requested or (results and results[-1]["interrupted_by"] is not None):
            break
        results.append(train(spec, prefix=_prefix(spec)))
    return results


def _seed_process(train: TrainFn, spec: RunSpec, torch_threads: int, conn: Connection) -> None:
    """One seed in its own process; sends ``("result", dict)`` or ``("error", exception)`` back.

    A second stop signal (or one that comes before training starts) ends the
    process with the shell's status, as ``main`` would, and sends nothing.
    """
    import torch

    from marl.experiment import closed_pipes

    torch.set_num_threads(torch_threads)
    try:
        with closed_pipes.tolerate_closed_pipes():
            conn.send(("result", train(spec, prefix=_prefix(spec))))
    except interrupts.ForcedStop as e:
        print(f"{_prefix(spec)}{e}; {e.detail or 'nothing saved'}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(interrupts.exit_code(signal.SIGINT)) from None
    except Exception as e:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            conn.send(("error", e))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))


def _run_parallel(specs: Sequence[RunSpec], train: TrainFn, workers: int, torch_threads: int,
                  interrupt: interrupts.StopRequest) -> List[Dict[str, Any]]:
    """``workers`` seeds at a time, each in a spawned process printing lines (bars would interleave)."""
    context = multiprocessing.get_context("spawn")
    waiting = list(specs)
    running: Dict[Any, Tuple[RunSpec, Connection]] = {}
    outcomes: Dict[int, Tuple[str, Any]] = {}
    passed_on = False
    try:
        while waiting or running:
            while waiting and len(running) < workers and not interrupt.requested:
                spec = dataclasses.replace(waiting.pop(0), progress=False)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_seed_process, args=(train, spec, torch_threads, sender),
                                          name=f"seed-{spec.seed}")
                process.start()
                sender.close()
                running[process] = (spec, receiver)
            if interrupt.requested and not passed_on:
                passed_on = True  # Ctrl-C from a terminal reached the seeds too; a SIGTERM did not
                waiting.clear()  # seeds not started are skipped
                if interrupt.signum == signal.SIGTERM:
                    for process in running:
                        process.terminate()
            connection.wait([p.sentinel for p in running]
                            + [c for spec, c in running.values() if spec.seed not in outcomes], timeout=1.0)
            for process, (spec, receiver) in list(running.items()):
                _receive(spec, receiver, outcomes)
                if not process.is_alive():
                    process.join()
                    _receive(spec, receiver, outcomes)  # what it sent just before it ended
                    receiver.close()
                    del running[process]
                    outcomes.setdefault(spec.seed, ("exit", process.exitcode))
    except interrupts.ForcedStop as e:
        _stop_now(running)
        e.detail = "the running seeds stopped at once; their run directories hold what they saved before"
        raise
    return _results(specs, outcomes)


def _receive(spec: RunSpec, receiver: Connection, outcomes: Dict[int, Tuple[str, Any]]) -> None:
    """Take the seed's one message, if it has come (a process that ended silently sends none)."""
    if spec.seed in outcomes or not receiver.poll():
        return
    try:
        outcomes[spec.seed] = receiver.recv()
    except EOFError:
        pass  # ended without a word: its exit status tells what happened


def _stop_now(running: Mapping[Any, Any]) -> None:
    """After a second signal: the seeds stop at once too (SIGTERM, then SIGKILL after 10 s)."""
    for process in running:
        process.terminate()
    for process in running:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def _results(specs: Sequence[RunSpec], outcomes: Mapping[int, Tuple[str, Any]]) -> List[Dict[str, Any]]:
    """The seeds' results in seed order; a seed's error is raised (after every seed has stopped)."""
    results = []
    for spec in specs:
        kind, value = outcomes.get(spec.seed, ("skipped", None))
        if kind == "error":
            raise value
        if kind == "exit" and value not in (0, interrupts.exit_code(signal.SIGINT), interrupts.exit_code(signal.SIGTERM)):
            raise RuntimeError(f"seed {spec.seed}: its process ended with exit status {value} before it finished "
                               f"(see its output above); {spec.run_dir} holds what it saved")
        if kind == "result":
            results.append(value)
    return results


# ---------------------------------------------------------------------- summary
def _stats(values: Sequence[Optional[float]]) -> Optional[Dict[str, Any]]:
    """Mean and sample std (n - 1; 0 for one seed) of the seeds that have a value."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": statistics.fmean(present), "std": std, "n": len(present)}


def summarize(results: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> Dict[str, Any]:
    """Per seed its final return (and final evaluation return), then their mean and std."""
    from marl.experiment.run_dir import STEP_KEY

    per_seed = [{
        "seed": r["seed"],
        "run_dir": str(r["run_dir"]),
        "final_return": r["final_return"],
        "final_eval_return": r["final_eval_return"],
        "env_steps": r["final"].get(STEP_KEY),
        "stop_reason": r["stop_reason"],
    } for r in results]
    return {
        "seeds": list(seeds),
        "runs": per_seed,
        "final_return": _stats([r["final_return"] for r in per_seed]),
        "final_eval_return": _stats([r["final_eval_return"] for r in per_seed]),
    }


def _mean_std(stats: Optional[Mapping[str, Any]]) -> str:
    return "n/a" if stats is None else f"{stats['mean']:.2f} ± {stats['std']:.2f} (n={stats['n']})"


def _two_places(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary_rows(summary: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The summary table's rows: one per seed, then mean ± std."""
    rows: List[Dict[str, Any]] = [{
        "seed": r["seed"], "final return": _two_places(r["final_return"]),
        "final eval return": _two_places(r["final_eval_return"]), "env steps": r["env_steps"],
        "stop reason": r["stop_reason"], "run dir": Path(r["run_dir"]).name,
    } for r in summary["runs"]]
    rows.append({"seed": "mean ± std", "final return": _mean_std(summary["final_return"]),
                 "final eval return": _mean_std(summary["final_eval_return"]),
                 "env steps": "", "stop reason": "", "run dir": ""})
    return rows
