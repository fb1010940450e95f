"""Action-mask observations (PettingZoo's classic convention) and logit masking."""
from __future__ import annotations

from typing import Optional, Tuple

import gymnasium as gym
import torch

#: The keys of an action-masked Dict observation space.
OBSERVATION_KEY = "observation"
ACTION_MASK_KEY = "action_mask"


def split_observation_space(space: gym.Space) -> Tuple[gym.spaces.Box, Optional[gym.Space]]:
    """Return (the space to encode, the action-mask space or None).

    A Box is encoded as is. A Dict with exactly the keys "observation" and
    "action_mask" encodes its "observation" Box and masks logits with the
    other. Anything else raises a TypeError naming the space and pointing at
    `FlattenObservations`, the connector that turns Discrete / Dict / Tuple
    observations into a flat Box.
    """
    if isinstance(space, gym.spaces.Box):
        return space, None
    if (isinstance(space, gym.spaces.Dict)
            and set(space.spaces) == {OBSERVATION_KEY, ACTION_MASK_KEY}):
        inner, mask = space[OBSERVATION_KEY], space[ACTION_MASK_KEY]
        if not isinstance(inner, gym.spaces.Box):
            raise TypeError(
                f"The default models encode Box observations; the 'observation' entry of "
                f"{space} is {inner}. Flatten it first, e.g. with the "
                f"`FlattenObservations` env-to-module connector."
            )
        if not isinstance(mask, (gym.spaces.Box, gym.spaces.MultiBinary)):
            raise TypeError(f"The 'action_mask' entry of {space} must be a Box or "
                            f"MultiBinary of one entry per action; got {mask}")
        return inner, mask
    raise TypeError(
        f"The default models support Box observations (1-D vectors, HxWxC images, "
        f"others flattened) and Dict({{'observation', 'action_mask'}}); got {space}. "
        f"Use the `FlattenObservations` env-to-module connector to turn Discrete, "
        f"MultiDiscrete, Dict or Tuple observations into a flat Box."
    )


def apply_action_mask(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set logits of disallowed actions (mask == 0) to `finfo(dtype).min`.

    Why finfo.min and not -inf: softmax still gives those actions probability
    0, but entropy and KL stay finite (no 0 * -inf = nan).
    """
    if mask.shape != logits.shape:
        raise ValueError(f"action_mask of shape {tuple(mask.shape)} does not match the "
                         f"logits of shape {tuple(logits.shape)}")
    return logits.masked_fill(mask.to(logits.device) == 0, torch.finfo(logits.dtype).min)
