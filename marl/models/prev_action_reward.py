"""Previous action / reward features for the LSTM input (lstm_use_prev_*)."""
from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F


def prev_action_dim(space: gym.Space) -> int:
    """Width of `encode_prev_actions`: one-hot for discrete actions, flat for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"lstm_use_prev_action supports Discrete, MultiDiscrete and Box "
                    f"actions; got {space}")


def encode_prev_actions(actions: torch.Tensor, space: gym.Space,
                        lead_shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Turn previous actions into float features [*lead_shape, prev_action_dim(space)].

    Discrete actions are one-hot encoded (an index is not a magnitude);
    MultiDiscrete ones are one-hot per component and concatenated.
    """
    lead = tuple(lead_shape)
    if isinstance(space, gym.spaces.Discrete):
        idx = actions.long().reshape(lead) - int(space.start)
        return F.one_hot(idx, int(space.n)).to(dtype)
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = [int(n) for n in np.asarray(space.nvec).reshape(-1)]
        start = torch.as_tensor(np.asarray(space.start).reshape(-1), dtype=torch.long)
        idx = actions.long().reshape(*lead, len(nvec)) - start.to(actions.device)
        parts = [F.one_hot(idx[..., i], n) for i, n in enumerate(nvec)]
        return torch.cat(parts, dim=-1).to(dtype)
    return actions.reshape(*lead, -1).to(dtype)


def encode_prev_rewards(rewards: torch.Tensor, lead_shape: Sequence[int],
                        dtype: torch.dtype) -> torch.Tensor:
    """Previous rewards as one float feature column [*lead_shape, 1]."""
    return rewards.reshape(*tuple(lead_shape), 1).to(dtype)
