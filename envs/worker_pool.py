"""Compatibility path: the worker pool now lives in ``envs.sampling.process_pool``."""
from envs.sampling.episode_metrics import merge_metrics
from envs.sampling.process_pool import EnvRunnerGroup, merge_batches
from envs.sampling.worker import WorkerError

__all__ = ["EnvRunnerGroup", "WorkerError", "merge_batches", "merge_metrics"]
