"""The default policy head: features -> action distribution inputs."""
from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import torch
from torch import nn

from marl.distributions import get_default_dist_cls
from marl.models.mlp import mlp_from_config

SUPPORTED_ACTION_SPACES = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box)


def check_action_space(space: gym.Space) -> None:
    """Raise a TypeError unless the default models support `space`."""
    if not isinstance(space, SUPPORTED_ACTION_SPACES):
        raise TypeError(
            f"The default models support Discrete, MultiDiscrete and Box action "
            f"spaces; got {space}. Write a custom RLModule for other action spaces."
        )


def build_head(in_dim: int, output_dim: int, cfg: Mapping[str, Any]) -> nn.Sequential:
    """An MLP head (`head_fcnet_*`) ending in a linear layer of `output_dim`."""
    return mlp_from_config(in_dim, cfg, "head_fcnet", output_dim=output_dim)


class PolicyHead(nn.Module):
    """Head producing the flat logits `get_default_dist_cls(space)` expects.

    Output width is `required_input_dim(action_space, cfg)`. For Box actions
    the second half of the output is log_std, clamped to
    [-log_std_clip_param, log_std_clip_param]; with `free_log_std` the MLP
    outputs only the mean and `log_std` is a state-independent parameter
    broadcast over the batch, so the output width is the same either way.
    """

    def __init__(self, in_dim: int, action_space: gym.Space, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        check_action_space(action_space)
        self.output_dim = int(
            get_default_dist_cls(action_space).required_input_dim(action_space, dict(cfg))
        )
        self.is_gaussian = isinstance(action_space, gym.spaces.Box)
        self.free_log_std = self.is_gaussian and bool(cfg["free_log_std"])
        self.log_std_clip_param = float(cfg["log_std_clip_param"])
        if self.is_gaussian and self.output_dim % 2:
            raise ValueError(f"Box action space {action_space}: expected an even number of "
                             f"distribution inputs (mean, log_std); got {self.output_dim}")
        mlp_out = self.output_dim // 2 if self.free_log_std else self.output_dim
        self.net = build_head(in_dim, mlp_out, cfg)
        if self.free_log_std:
            self.log_std = nn.Parameter(torch.zeros(self.output_dim // 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.net(features)
        if not self.is_gaussian:
            return out
        if self.free_log_std:
            mean, log_std = out, self.log_std.expand_as(out)
        else:
            mean, log_std = torch.chunk(out, 2, dim=-1)
        clip = self.log_std_clip_param
        return torch.cat([mean, log_std.clamp(-clip, clip)], dim=-1)
