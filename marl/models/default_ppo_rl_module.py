"""The default PPO module: the shared policy branch plus a value branch."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from marl.core.apis import InferenceOnlyAPI, ValueFunctionAPI
from marl.core.columns import Columns
from marl.models.default_module_base import DefaultTorchRLModuleBase
from marl.models.encoders import FeatureEncoder
from marl.models.policy_head import build_head


class DefaultPPOTorchRLModule(DefaultTorchRLModuleBase, ValueFunctionAPI, InferenceOnlyAPI):
    """Actor-critic default module for PPO.

    Value branch: `vf` (an MLP head of `head_fcnet_hiddens` -> 1) reading the
    policy encoder's features when `vf_share_layers` (one encoder pass serves
    both), or `value_encoder` (same architecture as `encoder`) otherwise.
    With an LSTM and separate layers, the value LSTM starts every call from
    zeros: its state is not part of the module state, because env runners run
    inference-only modules that have no value branch to carry it.

    `inference_only=True` builds neither `vf` nor `value_encoder`;
    `compute_values` and `forward_train` then raise a RuntimeError.
    """

    def setup(self) -> None:
        super().setup()
        cfg = self.model_config
        if self.inference_only:
            return
        in_dim = self.encoder.output_dim
        if not cfg["vf_share_layers"]:
            self.value_encoder = FeatureEncoder(self._encoded_space, self.action_space, cfg)
            in_dim = self.value_encoder.output_dim
        self.vf = build_head(in_dim, 1, cfg)

    # --- InferenceOnlyAPI ---
    def get_non_inference_attributes(self) -> List[str]:
        """Attribute names of the value branch (dropped when inference_only)."""
        if self.model_config["vf_share_layers"]:
            return ["vf"]
        return ["value_encoder", "vf"]

    # --- ValueFunctionAPI ---
    def compute_values(self, batch: Dict[str, Any],
                       embeddings: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Values of shape [B] (or [B, T]); reuses `embeddings` (the value
        branch's input, as returned under `Columns.EMBEDDINGS`) when given."""
        self._require_value_branch("compute_values")
        if embeddings is None:
            embeddings = self._value_embeddings(batch)
        return self.vf(embeddings).squeeze(-1)

    def _value_embeddings(self, batch: Dict[str, Any]) -> torch.Tensor:
        obs, _ = self._split_obs(batch)
        if self.model_config["vf_share_layers"]:
            state_in = batch.get(Columns.STATE_IN) if self.encoder.use_lstm else None
            return self.encoder(batch, obs, state_in)[0]
        return self.value_encoder(batch, obs, None)[0]

    def _require_value_branch(self, what: str) -> None:
        if self.inference_only:
            raise RuntimeError(
                f"{type(self).__name__}.{what} needs the value branch, which a module "
                f"built with inference_only=True does not have; build it with "
                f"inference_only=False (as learners do)."
            )

    # --- forward ---
    def _forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        """Policy outputs + VF_PREDS ([B] or [B, T]) + EMBEDDINGS (the value input)."""
        self._require_value_branch("forward_train")
        out, features = self._policy_outputs(batch)
        if self.model_config["vf_share_layers"]:
            embeddings = features
        else:
            embeddings = self._value_embeddings(batch)
        out[Columns.EMBEDDINGS] = embeddings
        out[Columns.VF_PREDS] = self.vf(embeddings).squeeze(-1)
        return out
