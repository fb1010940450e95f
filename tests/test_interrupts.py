"""Ctrl-C (SIGINT) and SIGTERM stop ``scripts/run_marl.py`` cleanly.

The first signal lets the iteration in progress finish; the run then saves a
checkpoint of exactly the iterations in ``metrics.jsonl`` and exits with 130
(SIGINT) or 143 (SIGTERM). A second signal stops at once and saves nothing.
A dead reader of stdout (``| tee`` killed by the same Ctrl-C) changes none of
this. Most tests run the script as a user would, in its own process group,
and signal the whole group as a terminal does.
"""
from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from scripts import run_marl
from marl.experiment.closed_pipes import DropWhenClosed

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_marl.py"

#: CartPole iterations of ~0.5 s (so a signal mostly lands inside train()), far more than a test waits for.
SLOW_RUN = [
    "--env", "CartPole-v1", "--policy-setup", "shared",
    "--train_batch_size_per_learner=4000", "--minibatch_size=1000", "--num_epochs=2",
    "--stop-iters", "200",
]
#: 200-step CartPole iterations for in-process runs (each test adds its --stop-iters).
FAST_RUN = [
    "--env", "CartPole-v1", "--policy-setup", "shared",
    "--train_batch_size_per_learner=200", "--minibatch_size=100", "--num_epochs=1", "--no-progress",
]


def child_env() -> dict:
    return dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS="1")


def start_run(tmp_path: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    """``run_marl.py`` in a new session (its own process group, as a terminal's foreground job)."""
    with open(tmp_path / "stdout.txt", "wb") as out, open(tmp_path / "stderr.txt", "wb") as err:
        return subprocess.Popen([sys.executable, str(SCRIPT), *SLOW_RUN, "--run-dir", str(run_dir), *extra],
                                cwd=tmp_path, env=child_env(), start_new_session=True, stdout=out, stderr=err)


def metrics_lines(run_dir: Path) -> List[str]:
    path = run_dir / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def wait_for_iterations(proc: subprocess.Popen, run_dir: Path, n: int, timeout_s: float = 60.0) -> None:
    """Block until ``metrics.jsonl`` has ``n`` complete lines (fails if the run ends first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (run_dir / "metrics.jsonl").read_text() if (run_dir / "metrics.jsonl").exists() else ""
        if text.count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before iteration {n}: {stderr_of(run_dir)}")
        time.sleep(0.05)
    pytest.fail(f"no {n} iterations within {timeout_s} s")


def stderr_of(run_dir: Path) -> str:
    path = run_dir.parent / "stderr.txt"
    return path.read_text(errors="replace") if path.exists() else ""


def finish(proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the run did not stop within {timeout_s} s of the signal")


def checkpoint_iteration(run_dir: Path) -> int:
    """The iteration of ``run_dir/checkpoint`` as marl loads it."""
    from marl import Algorithm

    algo = Algorithm.from_checkpoint(str(run_dir / "checkpoint"))
    try:
        return algo.iteration
    finally:
        algo.stop()


def assert_whole_iterations(run_dir: Path) -> int:
    """metrics.jsonl holds iterations 1..n, every line complete JSON; returns n."""
    rows = [json.loads(line) for line in metrics_lines(run_dir)]
    assert [r["training_iteration"] for r in rows] == list(range(1, len(rows) + 1))
    return len(rows)


# ---------------------------------------------------------------- the first signal: finish, save, exit 128+n
def interrupt_run(tmp_path, sig, after_iterations):
    """Start a run, send ``sig`` to its process group after some iterations; check the
    exit status 128 + sig and whole metrics lines. Returns (run_dir, finished iterations)."""
    run_dir = tmp_path / "run"
    proc = start_run(tmp_path, run_dir, "--no-progress")
    wait_for_iterations(proc, run_dir, after_iterations)
    os.killpg(proc.pid, sig)
    assert finish(proc) == 128 + sig, stderr_of(run_dir)
    return run_dir, assert_whole_iterations(run_dir)


def test_sigint_saves_the_last_finished_iteration_and_exits_130(tmp_path):
    run_dir, finished = interrupt_run(tmp_path, signal.SIGINT, 2)
    assert finished >= 2
    assert checkpoint_iteration(run_dir) == finished
    err = stderr_of(run_dir)
    assert "SIGINT received: stopping after the current iteration" in err
    assert f"SIGINT: stopped after iteration {finished}, saved to" in err
    assert "Traceback" not in err


def test_sigterm_exits_143_and_the_run_resumes_where_it_stopped(tmp_path, isolated_run_dir):
    run_dir, finished = interrupt_run(tmp_path, signal.SIGTERM, 1)
    assert "SIGTERM: stopped after iteration" in stderr_of(run_dir)

    out = run_marl.main(["--resume", str(run_dir), "--stop-iters", str(finished + 1), "--no-progress"])
    assert out["iterations_this_session"] == 1
    assert assert_whole_iterations(run_dir) == finished + 1


def test_sigint_with_stdout_piped_into_a_reader_that_dies_too(tmp_path):
    """``run_marl.py ... 2>&1 | cat`` and Ctrl-C: cat dies, the run still saves and exits 130."""
    run_dir = tmp_path / "run"
    command = shlex.join([sys.executable, str(SCRIPT), *SLOW_RUN, "--run-dir", str(run_dir)])
    # The shell traps the signal (its children start with the default action) so that it
    # lives on to write the run's own exit status; the progress bar stays on, into the pipe.
    script = f"trap : INT; {command} 2>&1 | cat > seen_by_cat.txt; echo ${{PIPESTATUS[0]}} ${{PIPESTATUS[1]}} > status"
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=child_env(), start_new_session=True)
    wait_for_iterations(proc, run_dir, 2)
    os.killpg(proc.pid, signal.SIGINT)

    finish(proc)
    run_status, cat_status = (tmp_path / "status").read_text().split()
    assert cat_status == str(128 + signal.SIGINT)  # the reader died of the Ctrl-C
    assert run_status == "130", (tmp_path / "seen_by_cat.txt").read_text(errors="replace")
    finished = assert_whole_iterations(run_dir)
    assert checkpoint_iteration(run_dir) == finished


def test_sigint_to_the_process_group_with_two_env_runners(tmp_path):
    """The terminal's Ctrl-C reaches the worker processes too; the run still stops cleanly."""
    run_dir = tmp_path / "run"
    proc = start_run(tmp_path, run_dir, "--no-progress", "--num-env-runners", "2")
    wait_for_iterations(proc, run_dir, 2, timeout_s=90)
    os.killpg(proc.pid, signal.SIGINT)

    assert finish(proc) == 130, stderr_of(run_dir)
    finished = assert_whole_iterations(run_dir)
    assert checkpoint_iteration(run_dir) == finished
    assert "SIGINT: stopped after iteration" in stderr_of(run_dir)


# ---------------------------------------------------------------- in-process: deterministic timing
@pytest.fixture
def signal_during_train(monkeypatch):
    """``send(iteration, signals)``: the process signals itself at the start of that ``train()`` call."""
    from marl.algorithms.algorithm import Algorithm

    plan = {}
    original = Algorithm.train

    def train(self):
        for signum in plan.get(self.iteration + 1, ()):
            os.kill(os.getpid(), signum)
        return original(self)

    monkeypatch.setattr(Algorithm, "train", train)
    return lambda iteration, *signals: plan.__setitem__(iteration, signals)


def test_a_signal_inside_train_lets_that_iteration_finish_and_restores_the_handlers(
        tmp_path, isolated_run_dir, signal_during_train):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal_during_train(2, signal.SIGINT)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_marl.main(FAST_RUN + ["--stop-iters", "5", "--run-dir", str(run_dir)])

    assert exit_info.value.code == 130
    assert assert_whole_iterations(run_dir) == 2  # iteration 2 finished, 3 never started
    assert checkpoint_iteration(run_dir) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_signal_stops_at_once_and_keeps_the_previous_checkpoint(
        tmp_path, isolated_run_dir, signal_during_train, capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal_during_train(3, signal.SIGINT, signal.SIGINT)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_marl.main(FAST_RUN + ["--stop-iters", "5", "--checkpoint-every", "1", "--run-dir", str(run_dir)])

    assert exit_info.value.code == 130
    assert assert_whole_iterations(run_dir) == 2
    assert checkpoint_iteration(run_dir) == 2  # the periodic checkpoint, untouched
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no half-written checkpoint
    assert f"second SIGINT: stopped at once; nothing more saved; {run_dir / 'checkpoint'} holds iteration 2" \
        in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_broken_stdout_is_dropped_after_the_first_epipe():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has died
    stream = DropWhenClosed(io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=True))
    try:
        stream.write("summary table\n")  # EPIPE here: dropped, and the descriptor now goes to /dev/null
        stream.flush()
        stream.write("more\n")
        assert stream.closed_reader and not stream.isatty()
        assert os.path.samestat(os.fstat(write_end), os.stat(os.devnull))
    finally:
        stream.close()
