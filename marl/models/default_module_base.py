"""What every default RLModule shares: config resolution, encoder, policy head.

`DefaultPPOTorchRLModule` and `DefaultBCTorchRLModule` both derive from
`DefaultTorchRLModuleBase`; PPO only adds the value branch.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from marl.core.columns import Columns
from marl.core.torch_rl_module import TorchRLModule
from marl.models.action_masking import (
    ACTION_MASK_KEY,
    OBSERVATION_KEY,
    apply_action_mask,
    split_observation_space,
)
from marl.models.default_model_config import resolve_default_model_config
from marl.models.encoders import FeatureEncoder
from marl.models.policy_head import PolicyHead, check_action_space


class DefaultTorchRLModuleBase(TorchRLModule):
    """Encoder (MLP / CNN, optional LSTM) + policy head, built from the model config.

    Attributes after `setup()`: `model_config` (the full canonical dict),
    `encoder` (`FeatureEncoder`), `pi` (`PolicyHead`). Outputs of `_forward`:
    `Columns.ACTION_DIST_INPUTS` ([*batch_dims, required_input_dim]) and, with
    an LSTM, `Columns.STATE_OUT` ({"h", "c"} of [B, lstm_cell_size]).
    """

    def setup(self) -> None:
        self.model_config = resolve_default_model_config(self.model_config)
        cfg = self.model_config
        if self.observation_space is None or self.action_space is None:
            raise ValueError(f"{type(self).__name__} needs observation_space and action_space; "
                             f"got {self.observation_space} and {self.action_space}")
        self._encoded_space, self._mask_space = split_observation_space(self.observation_space)
        check_action_space(self.action_space)
        self.encoder = FeatureEncoder(self._encoded_space, self.action_space, cfg)
        self.pi = PolicyHead(self.encoder.output_dim, self.action_space, cfg)
        if self._mask_space is not None:
            self._check_mask_space()

    def _check_mask_space(self) -> None:
        shape = tuple(self._mask_space.shape)
        if self.pi.is_gaussian:
            raise TypeError(f"An action_mask observation needs discrete actions; the action "
                            f"space is {self.action_space}")
        if shape != (self.pi.output_dim,):
            raise ValueError(f"The action_mask space {self._mask_space} must have shape "
                             f"({self.pi.output_dim},): one entry per logit of "
                             f"{self.action_space}")

    # --- state ---
    def get_initial_state(self) -> Dict[str, torch.Tensor]:
        """{"h", "c"} zeros of shape [lstm_cell_size] with an LSTM, else {}."""
        return self.encoder.initial_state()

    # --- forward pieces shared by the subclasses ---
    def _split_obs(self, batch: Mapping[str, Any]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The observation tensor to encode, and the action mask (or None)."""
        obs = batch[Columns.OBS]
        if self._mask_space is None:
            return torch.as_tensor(obs), None
        if not isinstance(obs, Mapping) or OBSERVATION_KEY not in obs or ACTION_MASK_KEY not in obs:
            raise KeyError(f"Observations must be dicts with keys {OBSERVATION_KEY!r} and "
                           f"{ACTION_MASK_KEY!r} for the observation space "
                           f"{self.observation_space}; got {type(obs).__name__}")
        return torch.as_tensor(obs[OBSERVATION_KEY]), torch.as_tensor(obs[ACTION_MASK_KEY])

    def _policy_outputs(self, batch: Mapping[str, Any]
                        ) -> Tuple[Dict[str, Any], torch.Tensor]:
        """Run encoder and policy head once; return (outputs, encoder features)."""
        obs, mask = self._split_obs(batch)
        state_in = batch.get(Columns.STATE_IN) if self.encoder.use_lstm else None
        features, state_out = self.encoder(batch, obs, state_in)
        logits = self.pi(features)
        if mask is not None:
            logits = apply_action_mask(logits, mask)
        out: Dict[str, Any] = {Columns.ACTION_DIST_INPUTS: logits}
        if state_out is not None:
            out[Columns.STATE_OUT] = state_out
        return out, features

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._policy_outputs(batch)[0]
