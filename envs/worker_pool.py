"""The env-runner groups and the one place that picks a backend for them.

The groups live in ``envs.sampling.process_pool`` (worker processes) and
``envs.sampling.ray_pool`` (Ray actors); this module keeps the old import path.
"""
from __future__ import annotations

from typing import Any, Mapping

from marl.core.optional_ray import ray_is_running

from envs.sampling.episode_metrics import merge_metrics
from envs.sampling.process_pool import EnvRunnerGroup, RunnerGroupBase, merge_batches
from envs.sampling.ray_pool import RayEnvRunnerGroup
from envs.sampling.worker import WorkerError

#: Valid ``backend`` names ("process" is accepted as an alias of "processes").
BACKENDS = ("auto", "processes", "ray")
_ALIASES = {"process": "processes"}

__all__ = ["BACKENDS", "EnvRunnerGroup", "RayEnvRunnerGroup", "WorkerError", "make_env_runner_group",
           "merge_batches", "merge_metrics"]


def make_env_runner_group(num_env_runners: int, runner_kwargs: Mapping[str, Any], *, backend: str = "auto",
                          num_cpus_per_env_runner: float = 1, **kwargs: Any) -> RunnerGroupBase:
    """Build the env-runner group for ``backend``.

    ``"processes"``: worker processes on this machine (``EnvRunnerGroup``).
    ``"ray"``: Ray actors (``RayEnvRunnerGroup``), on the cluster this process
    is connected to, or on a local Ray instance it starts.
    ``"auto"``: Ray actors when this process already called ``ray.init()``
    (so connecting to a cluster is the one switch), else processes.
    ``num_env_runners=0`` always samples with one local runner, without Ray.
    ``num_cpus_per_env_runner`` is a Ray resource request; processes ignore
    it. Other keyword arguments go to the group (``sample_timeout_s``, ...).
    """
    name = _ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    has_runners = isinstance(num_env_runners, int) and num_env_runners > 0  # the group validates the value
    if name == "ray" or (name == "auto" and has_runners and ray_is_running()):
        # With 0 runners this is a local runner too: Ray is neither imported nor started.
        return RayEnvRunnerGroup(num_env_runners, runner_kwargs,
                                 num_cpus_per_env_runner=num_cpus_per_env_runner, **kwargs)
    return EnvRunnerGroup(num_env_runners, runner_kwargs, **kwargs)
