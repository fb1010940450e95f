"""Filling a module spec's spaces from the env: the one place both the Algorithm and
a stand-alone env runner do it, so a module gets the same spaces either way."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import gymnasium as gym

from marl.core.rl_module import RLModuleSpec

ModuleSpaces = Dict[str, Tuple[gym.Space, gym.Space]]


def common_spaces(module_spaces: ModuleSpaces) -> Optional[Tuple[gym.Space, gym.Space]]:
    """The (observation, action) spaces every module shares, if they all share one pair."""
    pairs = list(module_spaces.values())
    if pairs and all(p[0] == pairs[0][0] and p[1] == pairs[0][1] for p in pairs):
        return pairs[0]
    return None


def fill_spaces(spec: RLModuleSpec, module_id: str, module_spaces: ModuleSpaces, *,
                required: bool = True) -> None:
    """Set the spec's missing spaces to those of the agents mapped to ``module_id``.

    A module no agent maps to (yet: e.g. a mapping that varies per episode)
    gets the spaces all agents share. ``required``: raise ``ValueError`` when
    neither is known and the spec does not set its spaces itself.
    """
    spaces = module_spaces.get(module_id) or common_spaces(module_spaces)
    if spaces is None:
        if required and (spec.observation_space is None or spec.action_space is None):
            raise ValueError(
                f"module {module_id!r}: no agent of the env maps to it and the agents' spaces differ, "
                "so its spaces are unknown; set observation_space/action_space in its RLModuleSpec")
        return
    if spec.observation_space is None:
        spec.observation_space = spaces[0]
    if spec.action_space is None:
        spec.action_space = spaces[1]
