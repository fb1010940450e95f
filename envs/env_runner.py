"""Compatibility path: the env runner now lives in ``envs.sampling`` (one job per file)."""
from marl.core.columns import BOOTSTRAP_OBS, BOOTSTRAP_STATE_IN
from envs.sampling.episode import EpisodeHandle, PolicyMappingFn, default_policy_mapping_fn
from envs.sampling.episode_metrics import episode_metrics
from envs.sampling.pipelines import infer_module_spaces
from envs.sampling.recovery import (
    MAX_CONSECUTIVE_CREATOR_FAILURES,
    MAX_CONSECUTIVE_EPISODE_CRASHES,
    MAX_CONSECUTIVE_RESET_FAILURES,
)
from envs.sampling.runner import MultiAgentEnvRunner

__all__ = [
    "BOOTSTRAP_OBS", "BOOTSTRAP_STATE_IN", "EpisodeHandle", "MAX_CONSECUTIVE_CREATOR_FAILURES",
    "MAX_CONSECUTIVE_EPISODE_CRASHES", "MAX_CONSECUTIVE_RESET_FAILURES", "MultiAgentEnvRunner",
    "PolicyMappingFn", "default_policy_mapping_fn", "episode_metrics", "infer_module_spaces",
]
