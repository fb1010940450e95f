"""The sampler: env runners that step PettingZoo envs in lockstep, and their pools.

One job per file:

- ``runner``: `MultiAgentEnvRunner`, the public runner (assembled from the mix-ins below);
- ``lockstep``: the step loop (one batched forward, every env steps once);
- ``slots``: per-module and per-env bookkeeping; ``buffers``: step rows;
- ``pipelines``: env-to-module connector pipelines and module spaces;
- ``actions``: module actions to env actions, the fast categorical sampler;
- ``batch_builder``: rows to per-module batches of agent segments;
- ``recovery``: seeded resets, crashed / hung envs, NaN/inf values;
- ``sampling_state``: exact resume without pickle;
- ``episode_metrics``: episode statistics and their one pooling;
- ``worker`` / ``process_pool``: `EnvRunnerGroup` over worker processes;
- ``ray_pool``: `RayEnvRunnerGroup`, the same over Ray actors (Ray imported only there).
"""
from envs.sampling.episode import EpisodeHandle, default_policy_mapping_fn
from envs.sampling.episode_metrics import episode_metrics, merge_metrics
from envs.sampling.pipelines import infer_module_spaces
from envs.sampling.process_pool import EnvRunnerGroup, merge_batches
from envs.sampling.ray_pool import RayEnvRunnerGroup
from envs.sampling.recovery import EnvTimeoutError, NonFiniteEnvValueError
from envs.sampling.runner import DEFAULT_SAMPLE_TIMEOUT_S, MultiAgentEnvRunner
from envs.sampling.worker import WorkerError

__all__ = [
    "DEFAULT_SAMPLE_TIMEOUT_S",
    "EnvRunnerGroup",
    "EnvTimeoutError",
    "EpisodeHandle",
    "MultiAgentEnvRunner",
    "NonFiniteEnvValueError",
    "RayEnvRunnerGroup",
    "WorkerError",
    "default_policy_mapping_fn",
    "episode_metrics",
    "infer_module_spaces",
    "merge_batches",
    "merge_metrics",
]
