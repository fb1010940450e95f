"""SAC heads on the ready-made shared encoder: ISAC whose agents share one encoder.

Each policy's ``SharedEncoderSACHead`` is a ``DefaultSACTorchRLModule`` whose
actor and critics read the shared encoder's embeddings (``EMBEDDINGS``, put
there by ``SharedEncoderMultiRLModule``) instead of observations, built from
the ``head_fcnet_*`` keys. SAC's learner trains the encoder through the
critics' loss only, and gives the actors the embeddings detached (the usual
choice for SAC on a shared encoder, as in SAC-AE), so one encoder serves
every agent's actor and critics.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from marl.core.columns import Columns
from marl.models.action_masking import split_observation_space
from marl.models.default_sac_rl_module import DefaultSACTorchRLModule
from marl.models.encoders import ObservationEncoder
from marl.models.shared_encoder import shared_embeddings


class SharedEncoderSACHead(DefaultSACTorchRLModule):
    """Actor, twin critics and ``log_alpha`` on shared embeddings (``head_fcnet_*`` MLPs)."""

    def _input_dim(self, cfg: Mapping[str, Any]) -> int:
        encoded, _ = split_observation_space(self.observation_space)
        return int(ObservationEncoder(encoded, cfg).output_dim)

    def _network_config(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(cfg)
        for key in ("hiddens", "activation", "kernel_initializer", "kernel_initializer_kwargs", "bias_initializer",
                    "bias_initializer_kwargs"):
            out[f"fcnet_{key}"] = cfg[f"head_fcnet_{key}"]
        return out

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.action_dist_inputs(shared_embeddings(batch, self))}
