"""`RayEnvRunnerGroup`: the env runners of `EnvRunnerGroup` as Ray actors.

Same interface, batches, metrics and fault tolerance as the process pool
(``process_pool.RunnerGroupBase`` holds all of that); only the transport
differs, so a run can move from one machine to a Ray cluster without a code
change:

- each runner is an actor (``num_cpus=num_cpus_per_env_runner``,
  ``worker_index`` 1..n, one torch thread) built from the same pickled kwargs
  as a worker process, kept once in the object store for restarts;
- weights cross as numpy, ``ray.put`` once per sync and read by every actor
  from the object store (not serialised once per actor);
- replies are gathered with ``ray.wait``. An actor that died (``ray.kill``, a
  crashed process, a lost node, its env-hang watchdog) or that does not answer
  in time is killed and restarted with the same kwargs, the last weights and
  its lifetime counters; its share of the call is retried once. Restarts are
  counted in ``metrics["num_env_runner_restarts"]``. An exception raised by
  user code in a healthy actor is re-raised here as ``WorkerError`` with its
  traceback.

Ray is optional and imported only when a group with runners is built. The
group uses the Ray instance this process is connected to: ``ray.init()``
(local) or ``ray.init(address="auto")`` (a cluster, whose nodes must be able
to import ``marl`` and ``envs``: install the project there or pass
``runtime_env={"working_dir": ...}``). Without one it starts a local instance.
"""
from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from marl.core.nested import tree_map
from marl.core.optional_ray import import_ray

from envs.sampling.process_pool import RunnerGroupBase
from envs.sampling.runner import DEFAULT_SAMPLE_TIMEOUT_S, MultiAgentEnvRunner
from envs.sampling.worker import RunnerHandle, _check_picklable, _serve, _start_runner, _WorkerDied

logger = logging.getLogger("envs.sampling")

class _RunnerActor:
    """The actor body: one runner served exactly as in a worker process."""

    def __init__(self, payload: bytes, worker_index: int) -> None:
        self._runner, self._started = _start_runner(payload, worker_index)

    def ready(self) -> Tuple[str, Any]:
        return self._started

    def call(self, command: str, *args: Any, **kw: Any) -> Tuple[str, Any]:
        return _serve(self._runner, command, args, kw)


class _RayRunner(RunnerHandle):
    """The driver's handle on one runner actor; ``_recv`` waits for the latest request."""

    def __init__(self, actor_cls: Any, payload_ref: Any, worker_index: int, start_timeout_s: float) -> None:
        self._ray = import_ray("Ray env runners")
        self.worker_index = worker_index
        self.start_timeout_s = start_timeout_s
        self.last_lifetime: Dict[str, int] = {}
        self.actor = actor_cls.remote(payload_ref, worker_index)
        self._alive = True
        self._pending = self.actor.ready.remote()
        self._sent_at = time.monotonic()

    def send(self, command: str, *args: Any, **kw: Any) -> None:
        # Object refs among the top-level arguments are resolved by Ray in the actor.
        self._pending = self.actor.call.remote(command, *args, **kw)
        self._sent_at = time.monotonic()

    def _recv(self, timeout_s: Optional[float]) -> Tuple[str, Any]:
        """The reply, waiting at most ``timeout_s`` from when the request was sent."""
        ray = self._ray
        remaining = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - self._sent_at))
        ready, _ = ray.wait([self._pending], timeout=remaining)
        if not ready:
            self.kill()
            raise _WorkerDied(f"no answer within {timeout_s} s")
        errors = ray.exceptions
        try:
            return tree_map(_writable, ray.get(self._pending))
        except errors.RayTaskError as exc:  # the call itself failed (e.g. an argument did not deserialise)
            return "error", str(exc)
        except (errors.RayActorError, errors.WorkerCrashedError, errors.ObjectLostError,
                errors.NodeDiedError) as exc:
            self._alive = False
            raise _WorkerDied(f"{type(exc).__name__}: {exc}") from exc

    def kill(self) -> None:
        self._alive = False
        try:
            self._ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone (or Ray shut down): nothing left to end
            logger.debug("env runner actor %d was already gone", self.worker_index, exc_info=True)

    def is_alive(self) -> bool:
        """Whether no call found the actor dead (Ray has no cheap synchronous liveness query)."""
        return self._alive


def _writable(x: Any) -> Any:
    """Arrays as the process pool returns them: Ray hands out large ones as read-only views
    of the object store, which callers (and torch) may not expect."""
    return x.copy() if isinstance(x, np.ndarray) and not x.flags.writeable else x


def _runner_default(name: str) -> Any:
    return inspect.signature(MultiAgentEnvRunner.__init__).parameters[name].default


class RayEnvRunnerGroup(RunnerGroupBase):
    """Run ``num_env_runners`` env runners as Ray actors (0: one local runner, no Ray).

    Args:
        num_env_runners: actors; 0 runs a local ``MultiAgentEnvRunner`` as
            ``EnvRunnerGroup(0, ...)`` does.
        runner_kwargs: keyword arguments of ``MultiAgentEnvRunner`` (without
            ``worker_index``); they must pickle (cloudpickle: lambdas are fine).
        num_cpus_per_env_runner: CPUs Ray reserves per actor (fractions allowed);
            the actor runs torch on one thread whatever this is.
        sample_timeout_s: the runners' env-call deadline, as for
            ``EnvRunnerGroup``; other commands may take
            ``max(60, sample_timeout_s)`` seconds before the actor is restarted.
        sample_wait_s: how long one actor may take over its share of a sample
            before it is restarted. Default: what the runner's own deadline
            allows, ``max(60, sample_timeout_s) + lockstep steps *
            sample_timeout_s``, so a slow but healthy actor is never restarted;
            episode-count samples and ``sample_timeout_s=None`` wait without a
            limit (an env hung in C code is still ended by the actor's watchdog).
        start_timeout_s: how long an actor may take to be placed and started.

    Raises:
        ImportError: with ``num_env_runners > 0`` when Ray is not installed.
    """

    def __init__(self, num_env_runners: int, runner_kwargs: Mapping[str, Any], *,
                 num_cpus_per_env_runner: float = 1,
                 sample_timeout_s: Optional[float] = DEFAULT_SAMPLE_TIMEOUT_S,
                 sample_wait_s: Optional[float] = None,
                 start_timeout_s: float = 300.0) -> None:
        if (isinstance(num_cpus_per_env_runner, bool) or not isinstance(num_cpus_per_env_runner, (int, float))
                or num_cpus_per_env_runner < 0):
            raise ValueError(f"num_cpus_per_env_runner must be a number >= 0, got {num_cpus_per_env_runner!r}")
        if sample_wait_s is not None and not sample_wait_s > 0:
            raise ValueError(f"sample_wait_s must be None or a number > 0, got {sample_wait_s!r}")
        super().__init__(num_env_runners, runner_kwargs, sample_timeout_s=sample_timeout_s,
                         start_timeout_s=start_timeout_s)
        self.num_cpus_per_env_runner = num_cpus_per_env_runner
        self.sample_wait_s = sample_wait_s
        if self.local_runner is not None:
            return
        ray = import_ray("Ray env runners")
        if not ray.is_initialized():
            logger.info("Ray is not initialised: starting a local Ray instance for %d env runner actors "
                        "(call ray.init(address='auto') first to use a cluster)", num_env_runners)
            ray.init(include_dashboard=False, log_to_driver=False)
        self._ray = ray
        cluster_cpus = ray.cluster_resources().get("CPU", 0)
        if num_cpus_per_env_runner > cluster_cpus:
            logger.warning("num_cpus_per_env_runner=%s exceeds the %s CPUs of the Ray cluster: the env "
                           "runner actors wait for a node that large", num_cpus_per_env_runner, cluster_cpus)
        self._actor_cls = ray.remote(num_cpus=num_cpus_per_env_runner)(_RunnerActor)
        self._payload_ref = ray.put(_check_picklable(self.runner_kwargs))
        self._start_workers()

    def _launch(self, worker_index: int) -> RunnerHandle:
        return _RayRunner(self._actor_cls, self._payload_ref, worker_index, self.start_timeout_s)

    def _share(self, value: Any) -> Any:
        return value if isinstance(value, self._ray.ObjectRef) else self._ray.put(value)

    def _sample_wait_s(self, call: Mapping[str, Any]) -> Optional[float]:
        if self.sample_wait_s is not None:
            return self.sample_wait_s
        if self.sample_timeout_s is None or call.get("num_episodes") is not None:
            return None
        if call.get("num_timesteps") is not None:
            num_envs = self.runner_kwargs.get("num_envs", _runner_default("num_envs"))
            steps = math.ceil(call["num_timesteps"] / num_envs)
        else:
            steps = self.runner_kwargs.get("rollout_fragment_length", _runner_default("rollout_fragment_length"))
        return self._command_timeout_s + steps * self.sample_timeout_s
