#!/usr/bin/env python
"""Train or evaluate a multi-agent policy; every run gets its own directory.

With no arguments: IPPO with a shared encoder on MPE simple_spread (3 agents)
for 200,000 env steps, a budget of steps rather than seconds so the result is
the same on every machine (1.5-2.5 minutes on two CPU cores). ``--help``
lists every option; ``marl/experiment/`` holds the pieces (one job per module).

    python scripts/run_marl.py
    python scripts/run_marl.py --seeds 0,1,2 --parallel 2 --tensorboard --eval-interval 10
    python scripts/run_marl.py --policy-setup per-agent --lr=0.0005 --stop-iters 50 --wandb
    python scripts/run_marl.py --resume runs/<run> --stop-timesteps 400000
    python scripts/run_marl.py --eval runs/<run> --eval-episodes 3 --render

Ctrl-C or SIGTERM lets the iteration in progress finish, saves it and exits
with 130 / 143; a second Ctrl-C stops at once. ``main(argv)`` is the whole
program and returns what it did (tests and ``sweep.py`` call it in-process).
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from marl.experiment import cli, closed_pipes, interrupts  # noqa: E402
from marl.experiment.run_dir import (  # noqa: E402
    CHECKPOINT_DIR,
    EVAL_RETURN_KEY,
    METRICS_FILE,
    RETURN_KEY,
    STEP_KEY,
    MetricsLog,
    create_run_dir,
    find_checkpoint,
    find_run_dir,
    read_metrics,
    write_config,
)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the command line ``argv`` (default ``sys.argv[1:]``).

    Returns ``{"run_dir", "checkpoint", "final", "stop_reason", ...}`` after
    training, ``{"group_dir", "runs", "summary", ...}`` after ``--seeds``, or
    ``{"returns", "gif", ...}`` after ``--eval``. Bad arguments
    print an argparse-style error naming the argument and exit with status 2.

    Ctrl-C (SIGINT) or SIGTERM during training stops the run once the
    iteration in progress has finished: it saves that iteration, prints the
    summary and raises ``SystemExit`` with 130 (SIGINT) or 143 (SIGTERM), so
    a sweep or a shell loop stops too. A second signal raises it at once,
    saving nothing. Console output whose reader has gone (``| tee`` killed by
    the same Ctrl-C) is dropped instead of failing the run.
    """
    with closed_pipes.tolerate_closed_pipes():
        spec = cli.parse_or_exit(argv)
        import torch

        torch.set_num_threads(spec.torch_threads)
        try:
            if spec.eval is not None:
                return evaluate(spec)
            if spec.seeds is not None:
                from marl.experiment.seeds import run_seeds

                result = run_seeds(spec, train)
            else:
                result = train(spec)
        except cli.UsageError as e:
            cli.usage_error(str(e))
            raise AssertionError("unreachable")
        except interrupts.ForcedStop as e:
            print(f"{e}; {e.detail or 'nothing saved'}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        except KeyboardInterrupt:  # before training started, or during --eval: nothing to save
            print("interrupted (SIGINT); nothing saved", file=sys.stderr)
            raise SystemExit(interrupts.exit_code(signal.SIGINT)) from None
    if result["interrupted_by"] is not None:
        raise SystemExit(result["exit_code"])
    return result


# ---------------------------------------------------------------------- train
def train(spec: cli.RunSpec, prefix: str = "") -> Dict[str, Any]:
    """Build the algorithm, train until a stop condition holds, save, plot, summarise.

    ``prefix`` starts each progress line (``seed 1 | `` when several seeds share a console).
    """
    from marl.experiment import loggers, plotting, progress, tracking
    from marl.experiment.algo_config import algorithm_config_snapshot, build_algorithm_config
    from marl.experiment.stopping import StopConditions

    config, setup = build_algorithm_config(spec)  # UsageError on bad values, before any file is written
    if spec.self_play:
        config = _self_play(config, spec)
    try:
        algo = config.build()
    except (ValueError, TypeError, KeyError) as e:  # e.g. a model config that does not fit the env
        raise cli.UsageError(
            f"cannot build the algorithm for --env {spec.env} (--policy-setup {spec.policy_setup}, "
            f"--model-config {spec.model_config}): {type(e).__name__}: {e}"
        ) from None
    trainer = _trainer(algo, spec)
    game_evaluation = _game_evaluation(spec)
    console = progress.console()
    # From here on Ctrl-C and SIGTERM only ask the loop to stop; it checks between iterations,
    # so metrics.jsonl and the checkpoint never see half an iteration (marl/experiment/interrupts.py).
    with interrupts.deferred_stop("the current iteration") as interrupt:
        on_disk: Optional[int] = None  # the iteration checkpoint/ holds, for the notes of an early stop
        try:
            resume_checkpoint: Optional[Path] = None
            if spec.resume is not None:
                run_dir, resume_checkpoint = find_run_dir(spec.resume, "--resume")
            else:
                run_dir = create_run_dir(spec.run_dir, spec.env, spec.algo, spec.policy_setup)
            options = spec.to_dict()
            options["run_dir"] = str(run_dir)
            if resume_checkpoint is not None:
                options["resumed_from"] = str(resume_checkpoint)
            write_config(run_dir, options, algorithm_config_snapshot(config))
            checkpoint = run_dir / CHECKPOINT_DIR

            if resume_checkpoint is not None:
                try:
                    algo.restore_from_path(str(resume_checkpoint))
                except Exception as e:  # e.g. options changed on resume so the modules no longer match
                    raise cli.UsageError(
                        f"argument --resume: checkpoint {str(resume_checkpoint)!r} does not fit the resolved "
                        f"config (did an override change the modules?): {type(e).__name__}: {e}"
                    ) from None
                dropped = MetricsLog(run_dir).truncate_after(algo.iteration)
                console.print(
                    f"resumed {run_dir} at iteration {algo.iteration}, "
                    f"{algo.get_state()['counters'][STEP_KEY]:,} env steps"
                    + (f" (dropped {dropped} metrics rows written after that checkpoint)" if dropped else "")
                )
            history = read_metrics(run_dir)
            tracker = tracking.start_tracking(spec, run_dir, options, resume_id=_wandb_run_id(run_dir))
            if isinstance(tracker, tracking.WandbTracker):
                (run_dir / "wandb_run_id").write_text(tracker.run_id)
            stream = loggers.open_loggers(run_dir, history, spec.tensorboard, tracker)
            stop = StopConditions.from_spec(spec)
            modules = (f"self-play on {spec.env}: module main trained against opponent, a pool of main's past weights "
                       f"(swapped every {spec.self_play} iterations)" if spec.self_play else
                       f"{setup.name} on {spec.env}: modules {', '.join(setup.module_ids)}")
            console.print(f"[bold]{spec.algo.upper()}[/bold] / {modules}; stop at {stop.describe()}; run dir {run_dir}")
            bar = progress.TrainingProgress(stop, history[-1] if history else None,
                                            mode=progress.progress_mode(spec.progress, spec.quiet), prefix=prefix)
            session_rows: List[Dict[str, Any]] = []
            started = time.perf_counter()
            if resume_checkpoint is not None and resume_checkpoint.resolve() == checkpoint.resolve():
                on_disk = algo.iteration
            saved_iteration = on_disk
            reason: Optional[str] = stop.reason(history[-1], 0.0) if history else None
            if reason is not None:
                console.print(f"[yellow]nothing to do: the run already {reason}; raise the stop conditions[/yellow]")
            try:
                try:
                    while reason is None and not interrupt.requested:
                        result = trainer()
                        if game_evaluation is not None and "evaluation" in result:
                            result["evaluation"]["games"] = game_evaluation(algo)
                        row = stream.log(result)
                        session_rows.append(row)
                        bar.update(row)
                        if spec.checkpoint_every and row["training_iteration"] % spec.checkpoint_every == 0:
                            algo.save_to_path(str(checkpoint))
                            saved_iteration = on_disk = algo.iteration
                            bar.write(f"checkpoint saved at iteration {row['training_iteration']}: {checkpoint}")
                        reason = stop.reason(row, time.perf_counter() - started)
                finally:
                    bar.close()
                    stream.close()
                    if game_evaluation is not None:
                        game_evaluation.close()
            except Exception as e:
                if not interrupt.requested:
                    raise
                # E.g. a worker process killed by the same Ctrl-C: what the failed iteration
                # left behind is no state to save.
                print(f"{interrupt.name}: the iteration in progress failed after the signal "
                      f"({type(e).__name__}: {e}); nothing saved; {_on_disk(checkpoint, on_disk)}", file=sys.stderr)
                tracker.finish(None, summary={"stop_reason": f"interrupted by {interrupt.name}; {type(e).__name__}"})
                raise SystemExit(interrupt.exit_code) from None
            if interrupt.requested and reason is None:
                reason = f"interrupted by {interrupt.name} after iteration {algo.iteration}"
            seconds = time.perf_counter() - started
            if saved_iteration != algo.iteration or not checkpoint.is_dir():
                algo.save_to_path(str(checkpoint))
                on_disk = algo.iteration
            if interrupt.requested:
                print(f"{interrupt.name}: stopped after iteration {algo.iteration}, saved to {checkpoint} "
                      f"(continue with --resume {run_dir}); exit status {interrupt.exit_code}", file=sys.stderr)
            rows = read_metrics(run_dir)
            curve = plotting.plot_run(run_dir)
            final = rows[-1] if rows else {}
            tracker.finish(checkpoint, summary={"stop_reason": reason})
        except interrupts.ForcedStop as e:
            # Raised in the middle of whatever ran: a training iteration or a save is abandoned
            # (saves are atomic), so checkpoint/ holds what the last finished save wrote.
            e.detail = "nothing saved" if on_disk is None else f"nothing more saved; {_on_disk(checkpoint, on_disk)}"
            raise
        finally:
            algo.stop()

    returns = [r[RETURN_KEY] for r in session_rows if isinstance(r.get(RETURN_KEY), (int, float))]
    console.print(
        progress.summary_table(
            title=f"{run_dir.name}: {reason}",
            rows=rows,
            session_rows=session_rows,
            session_seconds=seconds,
            facts=_facts(spec, setup, run_dir, checkpoint, curve),
        )
    )
    evaluations = [r[EVAL_RETURN_KEY] for r in rows if isinstance(r.get(EVAL_RETURN_KEY), (int, float))]
    return {
        "run_dir": run_dir,
        "seed": spec.seed,
        "checkpoint": checkpoint,
        "final": final,
        "stop_reason": reason,
        "session_seconds": seconds,
        "first_return": returns[0] if returns else None,
        "final_return": returns[-1] if returns else None,
        "final_eval_return": evaluations[-1] if evaluations else None,
        "iterations_this_session": len(session_rows),
        "learning_curve": curve,
        "interrupted_by": interrupt.name if interrupt.requested else None,
        "exit_code": interrupt.exit_code,
    }


def _facts(spec: cli.RunSpec, setup: Any, run_dir: Path, checkpoint: Path, curve: Optional[Path]) -> Dict[str, str]:
    """The summary's first rows: what ran and where its files are."""
    from marl.experiment.loggers import CSV_FILE, TENSORBOARD_DIR

    facts = {
        "run dir": str(run_dir),
        "setup": f"{spec.algo} / {setup.name}: {', '.join(f'{a}->{m}' for a, m in setup.agent_to_module.items())}",
        "seed": str(spec.seed),
        "checkpoint": str(checkpoint),
        "metrics": f"{run_dir / METRICS_FILE}, {run_dir / CSV_FILE}"
                   + (f", {run_dir / TENSORBOARD_DIR}/" if spec.tensorboard else ""),
        "learning curve": str(curve) if curve else "n/a (no episode finished)",
    }
    if spec.eval_interval:
        facts["evaluation"] = (f"every {spec.eval_interval} iterations, {spec.eval_episodes} episodes, "
                               + ("stochastic" if spec.eval_explore else "greedy"))
    return facts


def _on_disk(checkpoint: Path, iteration: Optional[int]) -> str:
    """What an early stop leaves on disk: the last checkpoint saved, if any."""
    if iteration is None:
        return "this session saved no checkpoint"
    return f"{checkpoint} holds iteration {iteration}"


def _wandb_run_id(run_dir: Path) -> Optional[str]:
    """The wandb run id a resumed run keeps logging to."""
    path = run_dir / "wandb_run_id"
    return path.read_text().strip() or None if path.is_file() else None


def _self_play(config: Any, spec: cli.RunSpec) -> Any:
    """``--self-play``: modules main and opponent (default modules built from the model
    config, whatever --policy-setup says), random seats, only main trained."""
    from marl.algorithms.self_play import self_play_config

    try:
        return self_play_config(config.rl_module(rl_module_spec=None))
    except ValueError as e:  # fewer than two agents
        raise cli.UsageError(f"argument --self-play: {e}") from None


def _trainer(algo: Any, spec: cli.RunSpec) -> Callable[[], Dict[str, Any]]:
    """One training iteration: ``algo.train()``, or with ``--self-play N`` the opponent pool's
    ``train()`` (which also stores main's weights and swaps the opponent every N iterations;
    a resumed run starts a new pool from the restored main)."""
    if not spec.self_play:
        return algo.train
    from marl.algorithms.self_play import OpponentPool

    return OpponentPool(algo, swap_every=spec.self_play).train


def _game_evaluation(spec: cli.RunSpec) -> Any:
    """``--eval-opponent`` with ``--eval-interval``: win rates whenever the algorithm evaluates."""
    if spec.eval_opponent is None or not spec.eval_interval:
        return None
    from marl.experiment.evaluation import GameEvaluation

    return GameEvaluation(spec.eval_opponent, spec.eval_episodes, spec.seed)


# ---------------------------------------------------------------------- evaluate
def evaluate(spec: cli.RunSpec) -> Dict[str, Any]:
    """Greedy episodes with ``--eval``'s checkpoint; prints their returns, optionally writes a GIF."""
    from marl.experiment import progress
    from marl.experiment.evaluation import evaluate_checkpoint

    checkpoint = find_checkpoint(spec.eval, "--eval")
    gif = Path(spec.gif) if spec.gif else checkpoint.resolve().parent / "eval.gif"
    result = evaluate_checkpoint(checkpoint, spec.eval_episodes, spec.seed, spec.render, gif)
    console = progress.console()
    console.print(progress.evaluation_table(f"greedy evaluation of {checkpoint}", result.returns,
                                            result.lengths, result.agent_returns))
    mean = sum(result.returns) / len(result.returns)
    console.print(f"episode returns: {[round(r, 3) for r in result.returns]}  mean {mean:.3f}")
    if result.gif is not None:
        console.print(f"GIF written to {result.gif}")
    outcome = {"checkpoint": checkpoint, "returns": result.returns, "mean_return": mean,
               "agent_returns": result.agent_returns, "gif": result.gif}
    if spec.eval_opponent is not None:  # two-player games: win/draw/loss rates from both seats
        from marl.experiment.evaluation import evaluate_games

        games = evaluate_games(checkpoint, spec.eval_opponent, spec.eval_episodes, spec.seed)
        console.print(games.summary(spec.eval_opponent))
        outcome["games"] = games.to_dict()
    return outcome


if __name__ == "__main__":
    main()
