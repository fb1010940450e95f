"""The default SAC module: a squashed-Gaussian actor, twin Q critics, their targets, log-alpha.

- Actor, as RLlib builds it: the ``fcnet_*`` encoder, then a ``head_fcnet_*``
  head (torch's default initialisation, as RLlib's SAC: ``rllib_sac_head_config``) -> mean and log-std per action dimension (log-std clamped to [-5, 2],
  RLlib's bounds for SAC), read as ``TorchSquashedGaussian`` on [-1, 1]; the
  env runners rescale [-1, 1] to the env's Box bounds (``normalize_actions``).
- Critics: ``Q(s, a)`` as RLlib 2.60's default SAC critic
  (``marl.models.q_networks.MultiStreamQNetwork``: observation and action
  streams, a ``fusionnet_*`` fusion net, a head), a twin (``twin_q``) and
  target copies of both, built in ``setup()``.
- ``log_alpha``: the entropy coefficient's log, a parameter of the module so
  that checkpoints and weight syncs carry it.

``compute_q_values(batch)`` gives ``QF_PREDS`` (and ``QF_TWIN_PREDS``) of
``batch[OBS]`` and ``batch[ACTIONS]``; ``forward_target`` the same with the
target critics. Model config: ``DefaultModelConfig`` keys plus ``twin_q``
(default True), ``initial_alpha`` (1.0) and ``own_critics`` (default True;
MASAC's actors set it False: their critic is a module of the container).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Dict, List, Mapping, Tuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from marl.core.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from marl.core.columns import Columns
from marl.core.torch_rl_module import TorchRLModule
from marl.distributions import TorchSquashedGaussian
from marl.models.default_model_config import model_config_dict, resolve_default_model_config
from marl.models.mlp import mlp_from_config
from marl.models.q_networks import MultiStreamQNetwork

#: The ``head_fcnet_*`` keys RLlib 2.60's SAC never passes to its heads (``SACCatalog`` builds the
#: actor's and the critics' heads with torch's default initialisation); marl's default SAC module
#: does the same, so that RLlib's tuned configs, which set them, start from the same weights.
RLLIB_SAC_IGNORED_HEAD_KEYS = ("head_fcnet_kernel_initializer", "head_fcnet_kernel_initializer_kwargs",
                               "head_fcnet_bias_initializer", "head_fcnet_bias_initializer_kwargs")

QF_PREDS = "qf_preds"
QF_TWIN_PREDS = "qf_twin_preds"
SAC_MODEL_KEYS = ("twin_q", "initial_alpha", "own_critics")
#: RLlib's MIN_LOG_NN_OUTPUT / MAX_LOG_NN_OUTPUT, which its squashed Gaussian clamps to.
LOG_STD_BOUNDS = (-5.0, 2.0)


class DefaultSACTorchRLModule(TorchRLModule, QNetAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """Actor, twin critics with targets and the entropy coefficient, for 1-D obs and Box actions."""

    def setup(self) -> None:
        given = model_config_dict(self.model_config)
        cfg = dict(resolve_default_model_config({k: v for k, v in given.items() if k not in SAC_MODEL_KEYS}))
        self.twin_q = bool(given.get("twin_q", True))
        if cfg["use_lstm"]:
            raise NotImplementedError(f"{type(self).__name__}: use_lstm=True is not supported; SAC's default "
                                      "actor and critics are feed-forward")
        if not isinstance(self.action_space, gym.spaces.Box):
            raise TypeError(f"{type(self).__name__} needs a Box action space (continuous actions); got "
                            f"{self.action_space}")
        self.obs_dim = self._input_dim(cfg)
        self.act_dim = int(np.prod(self.action_space.shape))
        if type(self)._build_actor is DefaultSACTorchRLModule._build_actor:
            warn_ignored_head_initializers(cfg, type(self).__name__)
        self.pi = self._build_actor(cfg)
        if self.inference_only:
            return
        self.log_alpha = nn.Parameter(torch.tensor(math.log(float(given.get("initial_alpha", 1.0)))))
        self.own_critics = bool(given.get("own_critics", True))
        self.qf = self._build_critic(cfg) if self.own_critics else None
        self.qf_twin = self._build_critic(cfg) if self.twin_q and self.own_critics else None
        self.make_target_networks()

    def _input_dim(self, cfg: Mapping[str, Any]) -> int:
        """Width of what the actor and critics read: the observation (a shared-encoder head: embeddings)."""
        if not (isinstance(self.observation_space, gym.spaces.Box) and len(self.observation_space.shape) == 1):
            raise TypeError(f"{type(self).__name__} needs a 1-D Box observation space; got {self.observation_space}")
        return int(self.observation_space.shape[0])

    def _build_actor(self, cfg: Mapping[str, Any]) -> nn.Sequential:
        """Encoder (``fcnet_*``) and head (``head_fcnet_*``, torch's default init) as one Sequential."""
        encoder = mlp_from_config(self.obs_dim, cfg, "fcnet")
        head = mlp_from_config(encoder.output_dim, rllib_sac_head_config(cfg), "head_fcnet",
                               output_dim=2 * self.act_dim)
        return nn.Sequential(*encoder, *head)

    def _build_critic(self, cfg: Mapping[str, Any]) -> nn.Module:
        """One ``Q(obs, action)`` network: RLlib's multi-stream critic (head: torch's default init)."""
        return MultiStreamQNetwork(self.obs_dim, self.act_dim, rllib_sac_head_config(cfg))

    # --- distributions ---
    def get_exploration_action_dist_cls(self) -> type:
        return TorchSquashedGaussian

    def get_inference_action_dist_cls(self) -> type:
        return TorchSquashedGaussian

    def get_train_action_dist_cls(self) -> type:
        return TorchSquashedGaussian

    def action_dist_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """``[mean, clamped log-std]`` of the squashed Gaussian, ``[B, 2 * act_dim]``."""
        out = self.pi(torch.as_tensor(obs).float())
        mean, log_std = out.chunk(2, dim=-1)
        return torch.cat([mean, log_std.clamp(*LOG_STD_BOUNDS)], dim=-1)

    # --- TargetNetworkAPI ---
    def make_target_networks(self) -> None:
        if self.qf is None:
            self.target_qf = self.target_qf_twin = None
            return
        self.target_qf = copy.deepcopy(self.qf)
        self.target_qf_twin = copy.deepcopy(self.qf_twin) if self.qf_twin is not None else None
        for net in (self.target_qf, self.target_qf_twin):
            if net is not None:
                for p in net.parameters():
                    p.requires_grad_(False)

    def get_target_network_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        if self.qf is None:
            return []
        pairs = [(self.qf, self.target_qf)]
        if self.qf_twin is not None:
            pairs.append((self.qf_twin, self.target_qf_twin))
        return pairs

    def get_non_inference_attributes(self) -> List[str]:
        return ["qf", "qf_twin", "target_qf", "target_qf_twin", "log_alpha"]

    def forward_target(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._q(batch, self.target_qf, self.target_qf_twin)

    # --- QNetAPI ---
    def compute_q_values(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self._q(batch, self.qf, self.qf_twin)

    def _q(self, batch: Dict[str, Any], qf: nn.Module, twin: Any) -> Dict[str, Any]:
        obs = torch.as_tensor(batch[Columns.OBS]).float()
        actions = torch.as_tensor(batch[Columns.ACTIONS]).float().reshape(-1, self.act_dim)
        out = {QF_PREDS: qf(obs, actions)}
        if twin is not None:
            out[QF_TWIN_PREDS] = twin(obs, actions)
        return out

    # --- forward passes ---
    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.action_dist_inputs(batch[Columns.OBS])}


def rllib_sac_head_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg`` without the head initializers RLlib's SAC ignores (``RLLIB_SAC_IGNORED_HEAD_KEYS``).

    RLlib's tuned SAC configs set ``head_fcnet_kernel_initializer="orthogonal_"``
    with gain 0.01, which RLlib never applies. Applied, it starts the actor's
    output and both Q heads about 60x smaller, and the tuned Pendulum SAC then
    needed 12.8k-17.2k env steps to -250 where RLlib needs 9k-11k; with
    RLlib's (default) initialisation marl needs 9.3k-9.9k. A config that sets
    them gets a warning saying they have no effect.
    """
    return {**cfg, **{k: None for k in RLLIB_SAC_IGNORED_HEAD_KEYS}}


def warn_ignored_head_initializers(cfg: Mapping[str, Any], module: str) -> None:
    """Say so when a config sets head initializers the default SAC module does not apply."""
    ignored = {k: cfg.get(k) for k in RLLIB_SAC_IGNORED_HEAD_KEYS if cfg.get(k) is not None}
    if ignored:
        warnings.warn(f"{module} does not apply {ignored}: as in RLlib, whose SAC builds its actor and critic "
                      "heads with torch's default initialisation, so RLlib's configs learn the same here. To "
                      "initialise SAC's heads, override _build_actor / _build_critic.", stacklevel=3)

