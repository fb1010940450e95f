"""Where the data-parallel learners run: spawned processes or Ray actors.

Both transports expose the same two calls, ``call_all(method, *args)`` (one
call on every learner, results in rank order) and ``stop()``, so the
``LearnerGroup`` is written once. A learner that raises is reported with its
traceback; a ``NonFiniteLossError`` keeps its type (every learner raises it
together, after rolling its update back, so the group stays usable). A
learner that dies ends the group: the others are blocked in a collective
that can no longer complete, so they are stopped too, and the error says to
resume from the last checkpoint.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import tempfile
import traceback
from typing import Any, List, Optional, Sequence, Tuple

import torch.multiprocessing as mp

from marl.core.optional_ray import import_ray

from learners.learner import NonFiniteLossError
from learners.learner_worker import LearnerWorker

class LearnerWorkerError(RuntimeError):
    """A remote learner raised, died or did not start (the message says which and why)."""


def _reraise(rank: int, error: Tuple[str, str, Any]) -> None:
    kind, text, extra = error
    if kind == "NonFiniteLossError":
        raise NonFiniteLossError(f"learner {rank}: {text}", module_ids=extra[0], terms=extra[1])
    raise LearnerWorkerError(f"learner {rank} raised {kind}:\n{text}")


def _describe(exc: BaseException) -> Tuple[str, str, Any]:
    if isinstance(exc, NonFiniteLossError):
        return "NonFiniteLossError", str(exc), (exc.module_ids, exc.terms)
    return type(exc).__name__, f"{exc}\n{traceback.format_exc()}", None


def _serve(conn: Any, init: Tuple[Any, ...], init_method: str, timeout_s: float) -> None:
    """Learner process: build, join the group, then answer ``(id, method, args)`` until stopped.

    SIGINT is ignored: a Ctrl-C reaches the whole process group, and the driver
    decides what it means (the learners finish the update they are in)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = LearnerWorker(*init)
        worker.join(init_method, timeout_s)
    except BaseException as exc:  # noqa: BLE001 - reported to the driver
        conn.send((0, "error", _describe(exc)))
        return
    conn.send((0, "ok", None))
    while True:
        try:
            request_id, method, args = conn.recv()
        except (EOFError, OSError):
            break
        try:
            conn.send((request_id, "ok", getattr(worker, method)(*args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the driver
            conn.send((request_id, "error", _describe(exc)))
        if method == "stop":
            break


class ProcessLearners:
    """``world_size`` learners in ``spawn``-ed processes; rendezvous through a file."""

    def __init__(self, inits: Sequence[Tuple[Any, ...]], *, timeout_s: float, start_timeout_s: float = 300.0) -> None:
        ctx = mp.get_context("spawn")
        self._dir = tempfile.mkdtemp(prefix="marl_learners_")
        init_method = f"file://{os.path.join(self._dir, 'rendezvous')}"
        self._conns, self._procs = [], []
        for rank, init in enumerate(inits):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, init, init_method, timeout_s),
                               name=f"learner_{rank}", daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._ids = itertools.count(1)
        self._waiting = [0] * len(inits)
        try:
            self._gather(range(len(inits)), start_timeout_s)
        except LearnerWorkerError as exc:
            raise LearnerWorkerError(
                f"{exc}\nThe learners did not start. Learner processes are spawned: a script that "
                "builds an algorithm with num_learners > 0 must keep its top-level code under "
                "`if __name__ == \"__main__\":`.") from None

    def call_all(self, method: str, *args: Any) -> List[Any]:
        request_id = next(self._ids)
        for rank, conn in enumerate(self._conns):
            try:
                conn.send((request_id, method, args))
            except (BrokenPipeError, EOFError, OSError) as exc:
                self._died(rank, str(exc))
            self._waiting[rank] = request_id
        return self._gather(range(len(self._conns)), None)

    def _gather(self, ranks: Sequence[int], timeout_s: Optional[float]) -> List[Any]:
        replies = [self._recv(rank, timeout_s) for rank in ranks]
        for rank, (status, result) in zip(ranks, replies):
            if status == "error":
                _reraise(rank, result)
        return [result for _, result in replies]

    def _recv(self, rank: int, timeout_s: Optional[float]) -> Tuple[str, Any]:
        """The reply to rank's latest request; replies to requests abandoned by a Ctrl-C are dropped."""
        conn, proc, waited = self._conns[rank], self._procs[rank], 0.0
        while True:
            while not conn.poll(0.5):
                waited += 0.5
                if not proc.is_alive():
                    self._died(rank, f"process exited with code {proc.exitcode}")
                if timeout_s is not None and waited >= timeout_s:
                    self._died(rank, f"no answer within {timeout_s} s")
            try:
                request_id, status, result = conn.recv()
            except (EOFError, OSError):
                proc.join(timeout=5)
                self._died(rank, f"process exited with code {proc.exitcode}")
            if request_id == self._waiting[rank]:
                return status, result

    def _died(self, rank: int, why: str) -> None:
        self.stop()
        raise LearnerWorkerError(
            f"learner {rank} died or hung ({why}); the other learners were stopped, since they wait "
            "for it in every gradient all-reduce. Resume from the last checkpoint.")

    def stop(self) -> None:
        """Ask every learner to leave the process group and exit; kill those that do not."""
        for conn, proc in zip(self._conns, self._procs):
            if proc.is_alive():
                try:
                    conn.send((-1, "stop", ()))
                except (BrokenPipeError, EOFError, OSError):
                    pass
        for conn, proc in zip(self._conns, self._procs):
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            conn.close()
        self._conns, self._procs = [], []
        shutil.rmtree(self._dir, ignore_errors=True)


class RayLearners:
    """``world_size`` learners as Ray actors (``num_cpus`` / ``num_gpus`` each); the process
    group meets at a free port on rank 0's node, so it works on a multi-node cluster."""

    def __init__(self, inits: Sequence[Tuple[Any, ...]], *, timeout_s: float, num_cpus: float,
                 num_gpus: float) -> None:
        ray = import_ray("Ray learners (learner_backend='ray')")
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        actor_class = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(LearnerWorker)
        self._ray = ray
        self._actors = [actor_class.remote(*init) for init in inits]
        try:
            address = self._get([self._actors[0].address.remote()])[0]
            self._get([actor.join.remote(address, timeout_s) for actor in self._actors])
        except BaseException:
            self.stop()
            raise

    def call_all(self, method: str, *args: Any) -> List[Any]:
        refs = [self._ray.put(a) for a in args]  # in the object store once, not once per actor
        return self._get([getattr(actor, method).remote(*refs) for actor in self._actors])

    def _get(self, refs: List[Any]) -> List[Any]:
        from ray.exceptions import RayActorError, RayTaskError

        results = []
        for rank, ref in enumerate(refs):
            try:
                results.append(self._ray.get(ref))
            except RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, NonFiniteLossError):
                    raise NonFiniteLossError(f"learner {rank}: {cause}", module_ids=cause.module_ids,
                                             terms=cause.terms) from None
                raise LearnerWorkerError(f"learner {rank} raised:\n{exc}") from None
            except RayActorError as exc:
                self.stop()
                raise LearnerWorkerError(
                    f"learner {rank} (a Ray actor) died: {exc}; the other learners were stopped. "
                    "Resume from the last checkpoint.") from None
        return results

    def stop(self) -> None:
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
