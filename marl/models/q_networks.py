"""SAC's Q networks ``Q(s, a)``: RLlib's multi-stream critic, and a plain MLP on ``[s, a]``.

``MultiStreamQNetwork`` is the critic RLlib 2.60's default SAC module builds
for Box actions (``SACCatalog`` with a ``MultiStreamEncoder``), so an RLlib
user's ``DefaultModelConfig`` gives the same network here:

- an observation stream: the ``fcnet_*`` encoder (its initializers and
  layernorm), every layer activated;
- an action stream of the same widths and activation, with torch's default
  initialisation (RLlib passes it no initializers);
- a densely connected fusion net (``fusionnet_*``): layer 0 reads the
  concatenated embeddings (action stream first: RLlib sorts the stream
  names), layer i the previous layer's output and the embeddings again, and
  an output layer of the observation stream's width reads the last fusion
  output and the embeddings; every one of them ``fusionnet_activation``;
- a head (``head_fcnet_*``) ending in one linear output.

RLlib builds SAC's heads without the ``head_fcnet_*`` initializers; the
default SAC module does the same (it hands this network a config without
them: ``rllib_sac_head_config``).

``ConcatQNetwork`` is one MLP on the concatenated observation (or shared
embedding) and action; the shared-encoder SAC heads use it.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from marl.models.activations import get_activation
from marl.models.initializers import init_layer
from marl.models.mlp import build_mlp, mlp_from_config


class MultiStreamQNetwork(nn.Module):
    """RLlib's default continuous SAC critic: observation and action streams, dense fusion, head."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.obs_encoder = mlp_from_config(obs_dim, cfg, "fcnet")
        self.action_encoder = build_mlp(act_dim, cfg["fcnet_hiddens"], cfg["fcnet_activation"])
        embed = int(self.obs_encoder.output_dim + self.action_encoder.output_dim)
        sizes = list(cfg["fusionnet_hiddens"] or [])
        init = (cfg["fusionnet_kernel_initializer"], cfg["fusionnet_kernel_initializer_kwargs"],
                cfg["fusionnet_bias_initializer"], cfg["fusionnet_bias_initializer_kwargs"])
        self.fusion_layers = nn.ModuleList(
            nn.Linear(embed if i == 0 else sizes[i - 1] + embed, size) for i, size in enumerate(sizes))
        latent = int(self.obs_encoder.output_dim)
        self.output_layer = nn.Linear(sizes[-1] + embed if sizes else embed, latent)
        for layer in list(self.fusion_layers) + [self.output_layer]:
            init_layer(layer, *init)
        self.activation = get_activation(cfg["fusionnet_activation"])
        self.head = mlp_from_config(latent, cfg, "head_fcnet", output_dim=1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``Q(obs, actions)``, shape ``[B]``."""
        embeds = torch.cat([self.action_encoder(actions), self.obs_encoder(obs)], dim=-1)
        out = embeds
        if len(self.fusion_layers):
            out = self.activation(self.fusion_layers[0](embeds))
            for layer in self.fusion_layers[1:]:
                out = self.activation(layer(torch.cat([out, embeds], dim=-1)))
            out = torch.cat([out, embeds], dim=-1)
        return self.head(self.activation(self.output_layer(out))).squeeze(-1)


class ConcatQNetwork(nn.Sequential):
    """One MLP on ``[obs, action]`` (a Sequential, so its state-dict keys are the layers')."""

    def __init__(self, in_dim: int, cfg: Mapping[str, Any], prefix: str) -> None:
        super().__init__(*mlp_from_config(in_dim, cfg, prefix, output_dim=1))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([obs, actions], dim=-1)).squeeze(-1)
