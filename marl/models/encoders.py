"""The default models' encoders: observation -> features (optionally via an LSTM).

Shared by every default module, for the policy branch and for a separate
value branch (`vf_share_layers=False`), so both always have the same
architecture.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from marl.core.columns import Columns
from marl.models.cnn import build_cnn
from marl.models.lstm import LSTMCore, State
from marl.models.mlp import mlp_from_config
from marl.models.prev_action_reward import (
    encode_prev_actions,
    encode_prev_rewards,
    prev_action_dim,
)


class ObservationEncoder(nn.Module):
    """Encode Box observations with any number of leading batch dims.

    1-D Box -> MLP (`fcnet_*`); 3-D Box (H, W, C) -> CNN (`conv_*`), flattened;
    any other rank -> flatten, then MLP. Input [*lead, *obs_shape] (any
    dtype, cast to the weights' float dtype), output [*lead, output_dim].
    """

    def __init__(self, obs_space: gym.spaces.Box, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.obs_shape: Tuple[int, ...] = tuple(int(d) for d in obs_space.shape)
        if len(self.obs_shape) == 3:
            self.net: nn.Module = build_cnn(
                self.obs_shape, cfg["conv_filters"], cfg["conv_activation"],
                cfg["conv_kernel_initializer"], cfg["conv_kernel_initializer_kwargs"],
                cfg["conv_bias_initializer"], cfg["conv_bias_initializer_kwargs"],
            )
        else:
            self.net = mlp_from_config(int(np.prod(self.obs_shape)), cfg, "fcnet")
        self.output_dim: int = int(self.net.output_dim)
        # Non-persistent: follows .to()/.double() and stays out of state dicts.
        self.register_buffer("_dtype_probe", torch.empty(0), persistent=False)

    def lead_shape(self, obs: torch.Tensor) -> Tuple[int, ...]:
        """The batch dims in front of the observation shape (error if it mismatches)."""
        rank = len(self.obs_shape)
        if obs.dim() < rank or tuple(obs.shape[obs.dim() - rank:]) != self.obs_shape:
            raise ValueError(f"Observations of shape {tuple(obs.shape)} do not end in the "
                             f"observation space's shape {self.obs_shape}")
        return tuple(obs.shape[: obs.dim() - rank])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = self.lead_shape(obs)
        flat = obs.to(self._dtype_probe.dtype).reshape(-1, *self.obs_shape)
        if len(self.obs_shape) != 3:
            flat = flat.reshape(flat.shape[0], -1)
        return self.net(flat).reshape(*lead, self.output_dim)


class FeatureEncoder(nn.Module):
    """ObservationEncoder, then (with `use_lstm`) an LSTM over time.

    Without an LSTM any leading batch dims pass through. With one, obs of
    shape [B, *obs_shape] are one time step per sequence (outputs keep that
    layout: [B, cell]) and [B, T, *obs_shape] are sequences ([B, T, cell]); the
    previous action/reward features are appended to the LSTM input when
    `lstm_use_prev_action` / `lstm_use_prev_reward` are on.
    """

    def __init__(self, obs_space: gym.spaces.Box, action_space: gym.Space,
                 cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.obs_encoder = ObservationEncoder(obs_space, cfg)
        self.action_space = action_space
        self.use_lstm = bool(cfg["use_lstm"])
        self.use_prev_action = self.use_lstm and bool(cfg["lstm_use_prev_action"])
        self.use_prev_reward = self.use_lstm and bool(cfg["lstm_use_prev_reward"])
        self.output_dim: int = self.obs_encoder.output_dim
        if self.use_lstm:
            in_dim = self.obs_encoder.output_dim
            in_dim += prev_action_dim(action_space) if self.use_prev_action else 0
            in_dim += 1 if self.use_prev_reward else 0
            self.lstm = LSTMCore(
                in_dim, cfg["lstm_cell_size"],
                cfg["lstm_kernel_initializer"], cfg["lstm_kernel_initializer_kwargs"],
                cfg["lstm_bias_initializer"], cfg["lstm_bias_initializer_kwargs"],
            )
            self.output_dim = self.lstm.output_dim

    def initial_state(self) -> State:
        """Unbatched zero state ({} without an LSTM)."""
        return self.lstm.initial_state() if self.use_lstm else {}

    def forward(self, batch: Mapping[str, Any], obs: torch.Tensor,
                state: Optional[Mapping[str, torch.Tensor]] = None,
                ) -> Tuple[torch.Tensor, Optional[State]]:
        """Encode `obs` (taken from `batch` by the caller); returns (features, state_out).

        `batch` supplies PREV_ACTIONS / PREV_REWARDS when the config needs
        them; `state` is STATE_IN ({"h", "c"} of [B, cell]; None: zeros).
        """
        features = self.obs_encoder(obs)
        if not self.use_lstm:
            return features, None
        lead = self.obs_encoder.lead_shape(obs)
        if len(lead) not in (1, 2):
            raise ValueError(
                f"An LSTM module needs observations of shape [B, *obs_shape] or "
                f"[B, T, *obs_shape]; got {tuple(obs.shape)} for obs_shape "
                f"{self.obs_encoder.obs_shape}"
            )
        parts = [features]
        if self.use_prev_action:
            parts.append(encode_prev_actions(
                _require(batch, Columns.PREV_ACTIONS, "lstm_use_prev_action"),
                self.action_space, lead, features.dtype))
        if self.use_prev_reward:
            parts.append(encode_prev_rewards(
                _require(batch, Columns.PREV_REWARDS, "lstm_use_prev_reward"),
                lead, features.dtype))
        x = torch.cat(parts, dim=-1)
        has_time = len(lead) == 2
        if not has_time:
            x = x.unsqueeze(1)  # one time step per sequence
        out, state_out = self.lstm(x, state)
        return (out if has_time else out.squeeze(1)), state_out


def _require(batch: Mapping[str, Any], column: str, flag: str) -> torch.Tensor:
    if column not in batch:
        raise KeyError(
            f"The batch has no {column!r} column (Columns.{_column_attr(column)}), "
            f"which the model config's {flag}=True requires as LSTM input. Add it to "
            f"the batch or set {flag}=False."
        )
    return torch.as_tensor(batch[column])


def _column_attr(column: str) -> str:
    names: Dict[str, str] = {v: k for k, v in vars(Columns).items()
                             if k.isupper() and isinstance(v, str)}
    return names.get(column, column)
