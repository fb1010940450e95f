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

from torch import nn

from marl.core.columns import Columns
from marl.models.action_masking import split_observation_space
from marl.models.default_sac_rl_module import DefaultSACTorchRLModule
from marl.models.encoders import ObservationEncoder
from marl.models.mlp import mlp_from_config
from marl.models.q_networks import ConcatQNetwork
from marl.models.shared_encoder import shared_embeddings


class SharedEncoderSACHead(DefaultSACTorchRLModule):
    """Actor, twin critics and ``log_alpha`` on shared embeddings (``head_fcnet_*`` MLPs)."""

    def _input_dim(self, cfg: Mapping[str, Any]) -> int:
        encoded, _ = split_observation_space(self.observation_space)
        return int(ObservationEncoder(encoded, cfg).output_dim)

    def _build_actor(self, cfg: Mapping[str, Any]) -> nn.Sequential:
        return mlp_from_config(self.obs_dim, cfg, "head_fcnet", output_dim=2 * self.act_dim)

    def _build_critic(self, cfg: Mapping[str, Any]) -> nn.Module:
        return ConcatQNetwork(self.obs_dim + self.act_dim, cfg, "head_fcnet")

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.action_dist_inputs(shared_embeddings(batch, self))}
