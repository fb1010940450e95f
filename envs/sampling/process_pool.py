"""`EnvRunnerGroup`: several `MultiAgentEnvRunner`s in worker processes, one batch out.

With ``num_env_runners=0`` the group runs one local runner in this process.
With ``n > 0`` it starts ``n`` worker processes (``spawn`` context: no forked
torch / OpenMP state; each worker runs ``torch.set_num_threads(1)``), each
holding one runner with ``worker_index`` 1..n. ``sample()`` sends every
worker its share of the steps at once, gathers the results and merges them.

What crosses the process boundary:

- the runner kwargs, once per worker start. They are serialised with
  ``cloudpickle`` when it is installed (so lambdas, e.g. the guide's
  ``env_to_module_connector=lambda env: FlattenObservations()``, work), else
  with ``pickle``, in which case creators, mapping functions and connector
  factories must be module-level functions / classes. Anything that does not
  serialise raises a ``TypeError`` naming the argument, before any process
  starts.
- weights as numpy arrays (torch tensors sent through pipes would go through
  torch's shared-memory file descriptors);
- batches (numpy) and metrics.

A worker that dies (its pipe breaks or the process exits) is restarted with
the same kwargs and the last weights sent with ``sync_weights``; its result
for that call is retried once on the new worker (then skipped). Restarts are
counted in ``metrics["num_env_runner_restarts"]``. Exceptions raised inside a
healthy worker (a bad ``policy_mapping_fn``, say) are re-raised here.

``RunnerGroupBase`` holds all of this that does not depend on processes
(splitting, merging, restarts, state); ``ray_pool.RayEnvRunnerGroup`` is the
same group over Ray actors.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from marl.core.nested import concat_nested, state_to_torch

from envs.sampling.episode_metrics import merge_metrics
from envs.sampling.global_table import merge_global_tables
from envs.sampling.runner import DEFAULT_SAMPLE_TIMEOUT_S, MultiAgentEnvRunner
from envs.sampling.worker import (
    RunnerHandle,
    _check_picklable,
    _weights_to_numpy,
    _Worker,
    _WorkerDied,
)

logger = logging.getLogger("envs.sampling")


class RunnerGroupBase:
    """What every env-runner backend shares: splitting a sample over N runners,
    merging their batches and metrics, pooling connector statistics, state and
    exact-resume bookkeeping, and restart-on-death.

    A backend (worker processes here, Ray actors in ``ray_pool``) only says how
    one runner starts (``_launch``, returning a ``RunnerHandle``), how a large
    argument reaches every runner (``_share``) and how long one runner's share
    of a sample may take (``_sample_wait_s``). With ``num_env_runners=0`` every
    backend runs one local runner in this process.
    """

    def __init__(self, num_env_runners: int, runner_kwargs: Mapping[str, Any], *,
                 sample_timeout_s: Optional[float] = DEFAULT_SAMPLE_TIMEOUT_S,
                 start_timeout_s: float = 300.0) -> None:
        if isinstance(num_env_runners, bool) or not isinstance(num_env_runners, int) or num_env_runners < 0:
            raise ValueError(f"num_env_runners must be an int >= 0, got {num_env_runners!r}")
        kwargs = dict(runner_kwargs)
        if "worker_index" in kwargs:
            raise ValueError("runner_kwargs must not set worker_index: the group assigns it")
        self.num_env_runners = num_env_runners
        self.runner_kwargs = kwargs
        kwargs.setdefault("sample_timeout_s", sample_timeout_s)
        self.sample_timeout_s = kwargs["sample_timeout_s"]
        self._command_timeout_s = None if self.sample_timeout_s is None else max(60.0, self.sample_timeout_s)
        self.start_timeout_s = start_timeout_s
        self.num_env_runner_restarts = 0
        #: Whether the latest ``set_sampling_state`` continued every episode exactly (None: none yet).
        self.last_resume_exact: Optional[bool] = None
        self._in_flight: Optional[List[Dict[str, Any]]] = None
        self._weights: Optional[Dict[str, Dict[str, np.ndarray]]] = None
        self.local_runner: Optional[MultiAgentEnvRunner] = None
        self._workers: List[Optional[RunnerHandle]] = []
        if num_env_runners == 0:
            self.local_runner = MultiAgentEnvRunner(**kwargs, worker_index=0)

    # ------------------------------------------------------- backend hooks
    def _launch(self, worker_index: int) -> RunnerHandle:
        """Start one remote runner without waiting for it (``wait_started`` does)."""
        raise NotImplementedError

    def _share(self, value: Any) -> Any:
        """``value`` in the form every runner of one broadcast can read (Ray: one object-store ref)."""
        return value

    def _sample_wait_s(self, call: Mapping[str, Any]) -> Optional[float]:
        """How long one runner may take over its share ``call`` of a sample before it is
        restarted (None: no limit; hangs are then the runner's deadline's and watchdog's job)."""
        return None

    def _start_workers(self) -> None:
        # Launch every runner first, then wait: they import torch in parallel.
        try:
            self._workers = [self._launch(i + 1) for i in range(self.num_env_runners)]
            for w in self._workers:
                w.wait_started()
        except BaseException:
            self.stop()
            raise

    # ---------------------------------------------------------------- workers
    def _restart(self, i: int, reason: str) -> RunnerHandle:
        old = self._workers[i]
        logger.warning("env runner worker %d died (%s); restarting it", i + 1, reason)
        if old is not None:
            old.kill()
        worker = self._launch(i + 1).wait_started()
        if self._weights is not None:
            worker.call("set_weights", self._share(self._weights), timeout_s=self._command_timeout_s)
        if old is not None and old.last_lifetime:
            worker.call("set_state", old.last_lifetime, timeout_s=self._command_timeout_s)
            worker.last_lifetime = dict(old.last_lifetime)
        self._workers[i] = worker
        self.num_env_runner_restarts += 1
        return worker

    def _broadcast(self, command: str, *args: Any) -> List[Any]:
        """Run ``command`` on every worker (restarting dead ones; then retried once)."""
        args = tuple(self._share(a) for a in args)
        for i, w in enumerate(self._workers):
            try:
                w.send(command, *args)
            except _WorkerDied as exc:
                self._restart(i, str(exc)).send(command, *args)
        results = []
        for i, w in enumerate(self._workers):
            try:
                results.append(w.recv(self._command_timeout_s))
            except _WorkerDied as exc:
                results.append(self._restart(i, str(exc)).call(
                    command, *args, timeout_s=self._command_timeout_s))
        return results

    @property
    def num_healthy_workers(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.is_alive())

    # ----------------------------------------------------------------- public
    def get_spaces(self) -> Dict[str, Any]:
        """``{module_id: (obs_space, act_space)}`` as the (first) runner sees them."""
        if self.local_runner is not None:
            return self.local_runner.get_spaces()
        return self._call_one(0, "get_spaces")

    def _call_one(self, i: int, command: str, *args: Any) -> Any:
        try:
            return self._workers[i].call(command, *args, timeout_s=self._command_timeout_s)
        except _WorkerDied as exc:
            return self._restart(i, str(exc)).call(command, *args, timeout_s=self._command_timeout_s)

    def sample(self, num_timesteps_total: Optional[int] = None, num_episodes: Optional[int] = None,
               explore: Optional[bool] = None) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
        """Sample ``num_timesteps_total`` env steps (split over the workers) and merge.

        With ``num_episodes`` each worker runs ``ceil(num_episodes / n)``
        episodes. Without either, each runner samples its default fragment.
        """
        if self.local_runner is not None:
            batches, metrics = self.local_runner.sample(
                num_timesteps=num_timesteps_total, num_episodes=num_episodes, explore=explore)
            metrics.pop("connector_deltas", None)  # one runner: nothing to share
            metrics["num_env_runner_restarts"] = 0
            metrics["num_healthy_env_runners"] = 1
            return batches, metrics
        self.start_sample(num_timesteps_total, num_episodes, explore)
        return self.finish_sample()

    @property
    def sample_in_flight(self) -> bool:
        """Whether :meth:`start_sample` sent requests whose results were not collected yet."""
        return self._in_flight is not None

    def start_sample(self, num_timesteps_total: Optional[int] = None, num_episodes: Optional[int] = None,
                     explore: Optional[bool] = None,
                     weights: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        """Send every worker its share of a sample (as :meth:`sample`) and return at once;
        :meth:`finish_sample` collects the results. ``weights`` are loaded by each
        worker just before it samples (and kept for restarted workers)."""
        if self.local_runner is not None:
            raise ValueError("start_sample needs remote env runners (num_env_runners >= 1); "
                             "a local runner samples in this process")
        if self._in_flight is not None:
            raise RuntimeError("a sample is already in flight: call finish_sample() first")
        if weights is not None:
            self._weights = {**(self._weights or {}), **_weights_to_numpy(weights)}
            shared_weights = self._share(self._weights)
        n = len(self._workers)
        calls: List[Dict[str, Any]] = []
        for i in range(n):
            kw: Dict[str, Any] = {"explore": explore}
            if num_timesteps_total is not None:
                kw["num_timesteps"] = num_timesteps_total // n + (1 if i < num_timesteps_total % n else 0)
            elif num_episodes is not None:
                kw["num_episodes"] = -(-num_episodes // n)
            if weights is not None:
                kw["weights"] = shared_weights
            calls.append(kw)
        for i, w in enumerate(self._workers):
            try:
                w.send("sample", **calls[i])
            except _WorkerDied as exc:
                self._restart(i, str(exc)).send("sample", **calls[i])
        self._in_flight = calls

    def finish_sample(self) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
        """Collect and merge the results of :meth:`start_sample` (restarting dead workers)."""
        calls, self._in_flight = self._in_flight, None
        if calls is None:
            raise RuntimeError("no sample in flight: call start_sample() first")
        n = len(self._workers)
        results: List[Tuple[Dict[str, Any], Dict[str, Any]]] = []
        deltas_by_worker: List[Dict[str, Any]] = [{} for _ in range(n)]
        for i in range(n):
            try:
                result = self._workers[i].recv(self._sample_wait_s(calls[i]))
            except _WorkerDied as exc:
                try:
                    result = self._restart(i, str(exc)).call(
                        "sample", timeout_s=self._sample_wait_s(calls[i]), **calls[i])
                except _WorkerDied as exc2:  # died twice in one call: skip its share
                    logger.warning("env runner worker %d died again (%s); skipping its samples "
                                   "for this call", i + 1, exc2)
                    self._restart(i, str(exc2))
                    continue
            batches_i, metrics_i = result
            deltas_by_worker[i] = metrics_i.pop("connector_deltas", {})
            self._workers[i].last_lifetime = {
                k: metrics_i[k] for k in ("num_env_steps_sampled_lifetime",
                                          "num_agent_steps_sampled_lifetime") if k in metrics_i}
            results.append(result)
        self._share_connector_deltas(deltas_by_worker)
        batches = merge_batches([b for b, _ in results])
        metrics = merge_metrics([m for _, m in results])
        metrics["num_env_runner_restarts"] = self.num_env_runner_restarts
        metrics["num_healthy_env_runners"] = self.num_healthy_workers
        return batches, metrics

    def _share_connector_deltas(self, deltas: List[Dict[str, Any]]) -> None:
        """Give every worker the other workers' connector-statistics deltas, so
        running filters agree everywhere (RLlib syncs its filters likewise)."""
        if len(self._workers) < 2 or not any(deltas):
            return
        for i in range(len(self._workers)):
            others = [d for j, d in enumerate(deltas) if j != i and d]
            if others:
                self._call_one(i, "apply_connector_deltas", others)

    def sync_weights(self, weights: Mapping[str, Mapping[str, Any]]) -> None:
        """Load ``{module_id: state_dict}`` into every runner."""
        if self.local_runner is not None:
            self.local_runner.set_weights(weights)
            return
        self._weights = {**(self._weights or {}), **_weights_to_numpy(weights)}
        self._broadcast("set_weights", self._weights)

    def get_weights(self) -> Dict[str, Dict[str, Any]]:
        if self.local_runner is not None:
            return self.local_runner.get_weights()
        return state_to_torch(self._call_one(0, "get_weights"))

    def get_state(self) -> Dict[str, Any]:
        """The first runner's state (weights and connector states are the same on all),
        with lifetime counters summed over runners."""
        if self.local_runner is not None:
            return self.local_runner.get_state()
        states = self._broadcast("get_state")
        state = dict(states[0])
        if "rl_module" in state:
            state["rl_module"] = state_to_torch(state["rl_module"])
        for key in ("num_env_steps_sampled_lifetime", "num_agent_steps_sampled_lifetime",
                    "num_episodes_lifetime", "num_env_errors", "num_episodes_dropped_lifetime",
                    "num_env_hangs"):
            state[key] = int(sum(s.get(key, 0) for s in states))
        state["num_env_runner_restarts"] = self.num_env_runner_restarts
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Load weights and connector states into every runner. Lifetime counters are
        split evenly over the workers, so that merged metrics continue from them."""
        if self.local_runner is not None:
            self.local_runner.set_state(state)
            return
        n = len(self._workers)
        per_worker = dict(state)
        for key in ("num_env_steps_sampled_lifetime", "num_agent_steps_sampled_lifetime",
                    "num_episodes_lifetime", "num_env_errors", "num_episodes_dropped_lifetime",
                    "num_env_hangs"):
            if key in state:
                per_worker[key] = int(state[key]) // n
        if "rl_module" in state:
            self._weights = _weights_to_numpy(state["rl_module"])
            per_worker["rl_module"] = self._weights
        self.num_env_runner_restarts = int(state.get("num_env_runner_restarts",
                                                     self.num_env_runner_restarts))
        self._broadcast("set_state", per_worker)

    def get_sampling_state(self) -> Tuple[Optional[Dict[str, Any]], Dict[str, np.ndarray], Optional[str]]:
        """Every runner's in-flight sampling state (exact resume), arrays prefixed ``r<i>/``;
        ``(None, {}, reason)`` when some runner cannot store its state."""
        if getattr(self, "unsaved_sample_ahead", False):
            return None, {}, ("overlap_sampling: the batch sampled ahead for the next iteration is not "
                              "stored, so the resumed run samples a new one")
        if self.local_runner is not None:
            parts = [self.local_runner.get_sampling_state()]
        else:
            parts = self._broadcast("get_sampling_state")
        reasons = [reason for data, _, reason in parts if data is None]
        if reasons:
            return None, {}, "; ".join(reasons)
        arrays = {f"r{i}/{k}": v for i, (_, arr, _) in enumerate(parts) for k, v in arr.items()}
        return {"runners": [data for data, _, _ in parts]}, arrays, None

    def set_sampling_state(self, data: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bool:
        """Continue every runner where the saved one stopped; False when the resume is not
        exact (a different number of runners, or a runner that could not replay its envs)."""
        runners = list(data.get("runners", []))
        count = 1 if self.local_runner is not None else len(self._workers)
        if len(runners) != count:
            logger.warning("the checkpoint holds the sampling state of %d env runner(s), this group has %d; "
                           "resuming with fresh episodes (not an exact resume)", len(runners), count)
            self.last_resume_exact = False
            return False
        per_runner = [{k[len(f"r{i}/"):]: v for k, v in arrays.items() if k.startswith(f"r{i}/")}
                      for i in range(count)]
        if self.local_runner is not None:
            exact = [self.local_runner.set_sampling_state(runners[0], per_runner[0])]
        else:
            exact = [self._call_one(i, "set_sampling_state", runners[i], per_runner[i]) for i in range(count)]
            for i, w in enumerate(self._workers):
                w.last_lifetime = {k: v for k, v in runners[i]["lifetime"].items()
                                   if k in ("num_env_steps_sampled_lifetime", "num_agent_steps_sampled_lifetime")}
        self.last_resume_exact = all(exact)
        return self.last_resume_exact

    def stop(self) -> None:
        """Stop every worker (or close the local runner's envs)."""
        if self.local_runner is not None:
            self.local_runner.stop()
            return
        for w in self._workers:
            if w is None:
                continue
            try:
                w.call("stop", timeout_s=10)
            except Exception:  # noqa: BLE001 - killed below anyway
                pass
            w.kill()
        self._workers = []

    def __enter__(self) -> "RunnerGroupBase":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class EnvRunnerGroup(RunnerGroupBase):
    """Run ``num_env_runners`` env runners in worker processes (0: one local runner).

    Args:
        num_env_runners: worker processes; 0 runs a local ``MultiAgentEnvRunner``.
        runner_kwargs: keyword arguments of ``MultiAgentEnvRunner`` (without
            ``worker_index``, which the group sets: 0 locally, 1..n in workers).
            For workers they must be picklable (see the module docstring).
        mp_context: ``"spawn"`` (default) or ``"forkserver"``.
        sample_timeout_s: the runners' env-call deadline (see
            ``MultiAgentEnvRunner``): a hung env is recreated inside its
            runner; a worker whose env hangs outside Python is ended by its
            watchdog and restarted here. Other commands (weights, state) may
            take ``max(60, sample_timeout_s)`` seconds before the worker is
            treated as dead (None: no limit).
        start_timeout_s: how long a worker may take to start.
    """

    def __init__(self, num_env_runners: int, runner_kwargs: Mapping[str, Any], *,
                 mp_context: str = "spawn", sample_timeout_s: Optional[float] = DEFAULT_SAMPLE_TIMEOUT_S,
                 start_timeout_s: float = 300.0) -> None:
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError(
                f"mp_context must be 'spawn' or 'forkserver' (fork is unsafe with torch), got {mp_context!r}")
        super().__init__(num_env_runners, runner_kwargs, sample_timeout_s=sample_timeout_s,
                         start_timeout_s=start_timeout_s)
        if self.local_runner is not None:
            return
        self._payload = _check_picklable(self.runner_kwargs)
        self._ctx = mp.get_context(mp_context)
        self._start_workers()

    def _launch(self, worker_index: int) -> RunnerHandle:
        return _Worker(self._ctx, self._payload, worker_index, self.start_timeout_s)


def merge_batches(batches: Sequence[Mapping[str, Mapping[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """Concatenate per-module batches of several runners.

    Row columns, ``SEQ_LENS`` and the per-segment bootstrap columns are all
    concatenated in runner order, so segment ``j`` of the result is still
    described by ``SEQ_LENS[j]`` / ``BOOTSTRAP_OBS[j]``.
    """
    merged: Dict[str, Dict[str, Any]] = {}
    module_ids: List[str] = []
    for b in batches:
        for module_id in b:
            if module_id not in module_ids:
                module_ids.append(module_id)
    for module_id in module_ids:
        parts = [b[module_id] for b in batches if module_id in b]
        if len(parts) == 1:
            merged[module_id] = dict(parts[0])
            continue
        columns = [c for c in parts[0] if all(c in p for p in parts)]
        merged[module_id] = {c: concat_nested([p[c] for p in parts]) for c in columns}
    merge_global_tables(batches, merged)  # one table of global inputs, indices moved per runner
    return merged
