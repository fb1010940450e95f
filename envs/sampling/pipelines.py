"""Env-to-module connector pipelines and the module spaces they imply."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym

from marl.core.nested import stack_observations

from envs.sampling.episode import EpisodeHandle, PolicyMappingFn, default_policy_mapping_fn

class Pipeline:
    """The env-to-module connector pieces of one module and their input spaces."""

    __slots__ = ("pieces", "input_spaces", "raw_space", "output_space")

    def __init__(self, connector: Any, env: Any, raw_space: gym.Space) -> None:
        pieces = make_pieces(connector, env)
        self.raw_space = raw_space
        self.pieces = pieces
        self.input_spaces: List[gym.Space] = []
        space = raw_space
        for piece in pieces:
            if not hasattr(piece, "recompute_output_observation_space"):
                raise TypeError(
                    f"env_to_module_connector returned {piece!r} (type {type(piece).__name__}), "
                    "which is not a connector piece: a piece has "
                    "recompute_output_observation_space(space) and __call__(batch, space)"
                )
            self.input_spaces.append(space)
            space = piece.recompute_output_observation_space(space)
        self.output_space = space

    def __call__(self, raw_observations: List[Any]) -> Any:
        """Stack raw per-agent observations, then run every piece on the batch."""
        return self.transform(self.stack(raw_observations))

    @staticmethod
    def stack(raw_observations: List[Any]) -> Any:
        """Per-agent raw observations as one batch of the same structure."""
        return stack_observations(raw_observations)

    def transform(self, batch: Any) -> Any:
        """Run every piece on a stacked batch (pieces with statistics update them)."""
        for piece, space in zip(self.pieces, self.input_spaces):
            batch = piece(batch, space)
        return batch


def make_pieces(connector: Any, env: Any) -> List[Any]:
    if connector is None:
        return []
    if hasattr(connector, "recompute_output_observation_space"):
        # A piece instance passed directly (instead of a factory ``env -> piece``).
        return [connector]
    pieces = connector(env)
    if pieces is None:
        return []
    if isinstance(pieces, (list, tuple)):
        return list(pieces)
    return [pieces]


def infer_module_spaces(
    env: Any,
    policy_mapping_fn: Optional[PolicyMappingFn] = None,
    env_to_module_connector: Any = None,
) -> Dict[str, Tuple[gym.Space, gym.Space]]:
    """``{module_id: (observation_space_after_connectors, action_space)}`` from one env.

    Every agent in ``env.possible_agents`` is mapped once (with a stand-in
    episode); the spaces of the agents mapped to one module must agree.

    Raises:
        ValueError: naming both agents and both spaces when two agents of one
            module have different observation or action spaces (pad them to
            one space with ``envs.supersuit_presets.pad_heterogeneous``).
    """
    mapping_fn = policy_mapping_fn or default_policy_mapping_fn
    agents = list(env.possible_agents)
    episode = EpisodeHandle(id_=-1, env_index=0, agent_ids=list(agents))
    result: Dict[str, Tuple[gym.Space, gym.Space]] = {}
    owner: Dict[str, Any] = {}
    for agent in agents:
        module_id = mapping_fn(agent, episode)
        obs_space = Pipeline(env_to_module_connector, env, env.observation_space(agent)).output_space
        act_space = env.action_space(agent)
        if module_id not in result:
            result[module_id] = (obs_space, act_space)
            owner[module_id] = agent
            continue
        first = owner[module_id]
        known_obs, known_act = result[module_id]
        for what, known, new in (("observation", known_obs, obs_space),
                                  ("action", known_act, act_space)):
            if known != new:
                raise ValueError(
                    f"agents {first!r} and {agent!r} both map to module {module_id!r} but have "
                    f"different {what} spaces: {known} vs {new}. One module needs one space: "
                    "pad them to a common space with envs.supersuit_presets.pad_heterogeneous, "
                    "or map the agents to different modules"
                )
    return result


def set_pipeline_state(pipeline: Pipeline, piece_states: Sequence[Any]) -> None:
    for piece, piece_state in zip(pipeline.pieces, piece_states):
        if hasattr(piece, "set_state"):
            piece.set_state(piece_state)

