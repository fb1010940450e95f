"""What a policy mapping function sees of an episode, and the default mapping."""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from marl.core.constants import DEFAULT_MODULE_ID

# Agent-episode ids and episode ids: worker index in the high bits, so they are
# unique across the env runners of one training run.
ID_SHIFT = 40

PolicyMappingFn = Callable[..., str]


def default_policy_mapping_fn(agent_id: Any, episode: Any, **kwargs: Any) -> str:
    """Every agent acts with ``DEFAULT_MODULE_ID`` (parameter sharing)."""
    return DEFAULT_MODULE_ID


class EpisodeHandle:
    """What ``policy_mapping_fn(agent_id, episode)`` sees of an episode.

    Attributes:
        id_: unique episode id (an int, unique across env runners).
        env_index: which of the runner's envs plays the episode.
        agent_ids: the agents that appeared so far, in order of appearance.
        worker_index: the env runner's worker index.
    """

    __slots__ = ("id_", "env_index", "agent_ids", "worker_index")

    def __init__(self, id_: int, env_index: int, agent_ids: Optional[List[Any]] = None,
                 worker_index: int = 0) -> None:
        self.id_ = id_
        self.env_index = env_index
        self.agent_ids = agent_ids if agent_ids is not None else []
        self.worker_index = worker_index

    def __repr__(self) -> str:
        return (f"EpisodeHandle(id_={self.id_}, env_index={self.env_index}, "
                f"agent_ids={self.agent_ids})")

