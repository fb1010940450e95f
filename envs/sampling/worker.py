"""The worker side of the env-runner backends, and the parent's handle on one worker.

A worker process (``process_pool``) and a Ray actor (``ray_pool``) build their
runner with ``_start_runner`` and answer requests with ``_serve``; the parent
talks to either through a ``RunnerHandle``.

Pipe protocol: the parent sends ``(request_id, command, args, kwargs)``; the worker
answers ``(request_id, status, result)``. Replies carry the id of the request
they answer, so a reply that arrives after its caller gave up (Ctrl-C in the
middle of ``train()``, a timeout) is recognised as stale and dropped, and the
next call reads its own answer: the pipe never desynchronises.

Workers ignore SIGINT: a Ctrl-C in the terminal reaches the whole process
group, and the parent decides what an interrupt means (finish the iteration,
save, exit). A watchdog thread ends a worker whose env has been inside one
call for ``2 * sample_timeout_s + 5`` seconds (a hang in C code that the
in-process deadline cannot interrupt); the pool then restarts it.
"""
from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from envs.sampling.runner import MultiAgentEnvRunner

logger = logging.getLogger("envs.sampling")

try:  # optional: lets lambdas cross the process boundary
    import cloudpickle as _cloudpickle
except ImportError:  # pragma: no cover - depends on the environment
    _cloudpickle = None

#: Exit code of a worker ended by its watchdog (an env call that never returned).
EXIT_ENV_HUNG = 75


class WorkerError(RuntimeError):
    """An exception raised inside an env runner worker (message holds its traceback)."""


class _WorkerDied(Exception):
    pass


def _dumps(obj: Any) -> bytes:
    if _cloudpickle is not None:
        return _cloudpickle.dumps(obj)
    return pickle.dumps(obj)


def _check_picklable(runner_kwargs: Mapping[str, Any]) -> bytes:
    """Serialise the kwargs, naming the argument that cannot be sent to a worker."""
    for key, value in runner_kwargs.items():
        try:
            _dumps(value)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            how = "cloudpickle" if _cloudpickle is not None else "pickle (cloudpickle is not installed)"
            raise TypeError(
                f"EnvRunnerGroup: runner argument {key!r} = {value!r} cannot be sent to a worker "
                f"process with {how}: {exc}. With num_env_runners > 0, env creators, "
                "policy_mapping_fn and connector factories must be picklable: module-level "
                "functions or classes, or registered env names (strings); or use "
                "num_env_runners=0"
            ) from exc
    return _dumps(dict(runner_kwargs))


def _weights_to_numpy(weights: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, np.ndarray]]:
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for module_id, state in weights.items():
        out[module_id] = {}
        for name, value in state.items():
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            out[module_id][name] = np.asarray(value)
    return out


def _start_watchdog(runner: MultiAgentEnvRunner, worker_index: int) -> None:
    """End this process when one env call outlives twice the deadline (see module doc)."""
    timeout = runner.sample_timeout_s
    if timeout is None:
        return
    limit = 2 * timeout + 5

    def watch() -> None:
        while True:
            time.sleep(min(1.0, limit / 4))
            started = runner._deadline.call_started
            if started is not None and time.monotonic() - started > limit:
                sys.stderr.write(
                    f"env runner worker {worker_index}: an env call has not returned for {limit:.0f} s "
                    "(hung outside Python, so the sample_timeout_s deadline could not stop it); "
                    "exiting so that the pool restarts this worker\n")
                sys.stderr.flush()
                os._exit(EXIT_ENV_HUNG)

    threading.Thread(target=watch, name="env_hang_watchdog", daemon=True).start()


def _run_command(runner: MultiAgentEnvRunner, command: str, args: Tuple[Any, ...], kw: Dict[str, Any]) -> Any:
    if command == "set_weights":
        return runner.set_weights(args[0])
    if command == "get_state":
        state = runner.get_state()
        if "rl_module" in state:
            state["rl_module"] = _weights_to_numpy(state["rl_module"])
        return state
    if command == "get_weights":
        return _weights_to_numpy(runner.get_weights())
    if command == "sample" and kw.get("weights") is not None:  # overlapped sampling: weights ride along
        kw = dict(kw)
        runner.set_weights(kw.pop("weights"))
    return getattr(runner, command)(*args, **kw)


def _format_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def _start_runner(payload: bytes, worker_index: int) -> Tuple[Optional[MultiAgentEnvRunner], Tuple[str, Any]]:
    """Build the runner of a worker (a process or a Ray actor) and start its watchdog.

    Start-up errors come back as an ``("error", traceback)`` status pair rather
    than as an exception, so the parent reports a broken env creator as a start
    failure instead of restarting the worker forever.
    """
    import torch

    torch.set_num_threads(1)  # one core per runner: N runners must not oversubscribe the machine
    try:
        kwargs = pickle.loads(payload)
        kwargs["worker_index"] = worker_index
        runner = MultiAgentEnvRunner(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        return None, ("error", _format_error(exc))
    _start_watchdog(runner, worker_index)
    return runner, ("ok", None)


def _serve(runner: MultiAgentEnvRunner, command: str, args: Tuple[Any, ...], kw: Dict[str, Any]) -> Tuple[str, Any]:
    """Run one request; user-code errors become an ``("error", traceback)`` reply, so a
    healthy worker stays up and the parent re-raises them (``WorkerError``)."""
    try:
        return "ok", _run_command(runner, command, args, kw)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        return "error", _format_error(exc)


def _worker_main(conn: Any, payload: bytes, worker_index: int) -> None:
    """Worker process: build one runner, then serve requests until 'stop'."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner, started = _start_runner(payload, worker_index)
    conn.send((0, *started))
    if runner is None:
        conn.close()
        return
    while True:
        try:
            request_id, command, args, kw = conn.recv()
        except (EOFError, OSError):
            break
        if command == "stop":
            runner.stop()
            conn.send((request_id, "ok", None))
            break
        conn.send((request_id, *_serve(runner, command, args, kw)))
    conn.close()


class RunnerHandle:
    """The parent's end of one remote runner, whatever carries the calls.

    Backends (a process with a pipe, a Ray actor) implement ``send``,
    ``_recv`` (the ``(status, result)`` reply to the latest request, raising
    ``_WorkerDied`` when the runner is gone or silent past ``timeout_s``),
    ``kill`` and ``is_alive``; the reply protocol and its errors are shared.
    A new handle's first ``_recv`` answers whether its runner started.
    """

    worker_index: int
    start_timeout_s: float
    #: The lifetime counters of the runner's latest sample, restored into a restarted runner.
    last_lifetime: Dict[str, int]

    def send(self, command: str, *args: Any, **kw: Any) -> None:
        raise NotImplementedError

    def _recv(self, timeout_s: Optional[float]) -> Tuple[str, Any]:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def is_alive(self) -> bool:
        raise NotImplementedError

    def wait_started(self) -> "RunnerHandle":
        """Block until the runner in the worker is built (or raise why it was not)."""
        try:
            status, result = self._recv(self.start_timeout_s)
        except _WorkerDied as exc:
            self.kill()
            raise WorkerError(f"env runner worker {self.worker_index} died while starting: {exc}") from exc
        if status != "ok":
            self.kill()
            raise WorkerError(f"env runner worker {self.worker_index} failed to start:\n{result}")
        return self

    def recv(self, timeout_s: Optional[float]) -> Any:
        status, result = self._recv(timeout_s)
        if status == "error":
            raise WorkerError(f"env runner worker {self.worker_index} raised:\n{result}")
        return result

    def call(self, command: str, *args: Any, timeout_s: Optional[float] = None, **kw: Any) -> Any:
        self.send(command, *args, **kw)
        return self.recv(timeout_s)


class _Worker(RunnerHandle):
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, payload: bytes, worker_index: int, start_timeout_s: float) -> None:
        self.worker_index = worker_index
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process = ctx.Process(target=_worker_main, args=(child, payload, worker_index),
                                   name=f"env_runner_{worker_index}", daemon=True)
        self.process.start()
        child.close()
        self.last_lifetime: Dict[str, int] = {}
        self.start_timeout_s = start_timeout_s
        self._ids = itertools.count(1)
        self._waiting_for = 0  # the request whose reply the next recv() returns

    def send(self, command: str, *args: Any, **kw: Any) -> None:
        request_id = next(self._ids)
        try:
            self.conn.send((request_id, command, args, kw))
        except (BrokenPipeError, EOFError, OSError) as exc:
            raise _WorkerDied(str(exc)) from exc
        self._waiting_for = request_id

    def _recv(self, timeout_s: Optional[float]) -> Tuple[str, Any]:
        """The reply to the latest request; stale replies to abandoned requests are dropped."""
        try:
            waited = 0.0
            while True:
                while not self.conn.poll(0.5):
                    waited += 0.5
                    if not self.process.is_alive():
                        raise _WorkerDied(self._exit_reason())
                    if timeout_s is not None and waited >= timeout_s:
                        raise _WorkerDied(f"no answer within {timeout_s} s")
                request_id, status, result = self.conn.recv()
                if request_id == self._waiting_for:
                    return status, result
                logger.debug("worker %d: dropped a stale reply to request %d", self.worker_index, request_id)
        except (EOFError, OSError, ConnectionResetError) as exc:
            self.process.join(timeout=2)
            if not self.process.is_alive():
                raise _WorkerDied(self._exit_reason()) from exc
            raise _WorkerDied(f"{type(exc).__name__}: {exc}") from exc

    def _exit_reason(self) -> str:
        code = self.process.exitcode
        why = " (its watchdog ended it: an env call never returned)" if code == EXIT_ENV_HUNG else ""
        return f"process exited with code {code}{why}"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def is_alive(self) -> bool:
        return self.process.is_alive()
