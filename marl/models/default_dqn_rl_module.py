"""The default DQN module: Q-values per action (dueling optional), target copies, epsilon-greedy.

Why it is shaped this way:

- ``compute_q_values`` gives raw Q-values ``[B, n]``; action masks are applied
  by whoever takes a max or an argmax (``masked_q_values``), so a masked
  action is never chosen and never enters a target's max.
- The target networks are built in ``setup()`` (not lazily), so the env
  runners' copies and the learner's have the same parameters and a weight
  sync is a plain ``load_state_dict``.
- Exploration is epsilon-greedy as a categorical distribution: the
  exploration pass returns the log of ``(1 - eps) * onehot(argmax) + eps /
  n_allowed`` as ``ACTION_DIST_INPUTS``, so the env runners sample it like
  any categorical policy. ``epsilon`` is a buffer of the module: the
  algorithm sets it from its schedule on the learner's module and the weight
  sync carries it to every env runner (and into checkpoints).
- The inference pass returns the masked Q-values as logits: greedy = argmax.

Model config: ``DefaultModelConfig`` keys (``fcnet_*`` encoder, ``head_fcnet_*``
Q heads) plus ``dueling`` (default True: ``Q = V + A - mean(A)``), which
``DQNConfig`` passes in. With ``use_lstm=True`` the encoder is the default
LSTM encoder: every pass takes ``STATE_IN`` and returns ``STATE_OUT``, the
train pass takes sequences ``[B, T, ...]`` from a stored state (replayed
with burn-in, see ``learners.transitions.segment_sequences``); the LSTM's
previous-action/-reward inputs are not supported for DQN.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Tuple

import gymnasium as gym
import torch
from torch import nn

from marl.core.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from marl.core.columns import Columns
from marl.core.torch_rl_module import TorchRLModule
from marl.models.action_masking import apply_action_mask, split_observation_space
from marl.models.default_model_config import model_config_dict, resolve_default_model_config
from marl.models.encoders import FeatureEncoder
from marl.models.policy_head import build_head
from marl.models.action_masking import ACTION_MASK_KEY, OBSERVATION_KEY

#: Q-values of every action, ``[B, num_actions]``.
QF_PREDS = "qf_preds"
#: Keys of the model config that are DQN's own (not ``DefaultModelConfig``'s).
DQN_MODEL_KEYS = ("dueling",)


def masked_q_values(q: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Q-values with disallowed actions at ``finfo.min``: never the max, never the argmax."""
    return q if mask is None else apply_action_mask(q, mask)


class QHead(nn.Module):
    """Encoder features -> Q-values; dueling: ``V + A - mean(A)`` (RLlib's and Wang et al.'s)."""

    def __init__(self, in_dim: int, num_actions: int, cfg: Mapping[str, Any], dueling: bool) -> None:
        super().__init__()
        self.dueling = dueling
        self.advantages = build_head(in_dim, num_actions, cfg)
        self.value = build_head(in_dim, 1, cfg) if dueling else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        a = self.advantages(features)
        if self.value is None:
            return a
        return self.value(features) + a - a.mean(dim=-1, keepdim=True)


class DefaultDQNTorchRLModule(TorchRLModule, QNetAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """Q-network (MLP or CNN encoder, Q head) and its target copy, for Discrete actions."""

    def setup(self) -> None:
        cfg = dict(resolve_default_model_config(
            {k: v for k, v in model_config_dict(self.model_config).items() if k not in DQN_MODEL_KEYS}))
        self.dueling = bool(model_config_dict(self.model_config).get("dueling", True))
        if cfg["use_lstm"] and (cfg["lstm_use_prev_action"] or cfg["lstm_use_prev_reward"]):
            raise NotImplementedError(
                f"{type(self).__name__}: lstm_use_prev_action / lstm_use_prev_reward are not supported for "
                "DQN; the recurrent Q-network reads observations only")
        if not isinstance(self.action_space, gym.spaces.Discrete) or int(self.action_space.start) != 0:
            raise TypeError(f"{type(self).__name__} needs a Discrete action space starting at 0; got "
                            f"{self.action_space}")
        self._encoded_space, self._mask_space = split_observation_space(self.observation_space)
        self.num_actions = int(self.action_space.n)
        self.encoder = FeatureEncoder(self._encoded_space, self.action_space, cfg)
        self.qf = QHead(self.encoder.output_dim, self.num_actions, cfg, self.dueling)
        self.register_buffer("epsilon", torch.zeros(()))
        if not self.inference_only:
            self.make_target_networks()

    # --- TargetNetworkAPI ---
    def make_target_networks(self) -> None:
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_qf = copy.deepcopy(self.qf)
        for p in list(self.target_encoder.parameters()) + list(self.target_qf.parameters()):
            p.requires_grad_(False)

    def get_target_network_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.qf, self.target_qf)]

    def get_non_inference_attributes(self) -> List[str]:
        return ["target_encoder", "target_qf"]

    def forward_target(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._q(batch, self.target_encoder, self.target_qf)

    # --- QNetAPI ---
    def compute_q_values(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self._q(batch, self.encoder, self.qf)

    def _q(self, batch: Dict[str, Any], encoder: nn.Module, head: nn.Module) -> Dict[str, Any]:
        obs, _ = self.split_obs(batch)
        state_in = batch.get(Columns.STATE_IN) if encoder.use_lstm else None
        features, state_out = encoder(batch, obs, state_in)
        out = {QF_PREDS: head(features)}
        if state_out is not None:
            out[Columns.STATE_OUT] = state_out
        return out

    def get_initial_state(self) -> Dict[str, torch.Tensor]:
        return self.encoder.initial_state()

    def split_obs(self, batch: Mapping[str, Any]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The observation to encode and the action mask (or None)."""
        obs = batch[Columns.OBS]
        if self._mask_space is None:
            return torch.as_tensor(obs), None
        return torch.as_tensor(obs[OBSERVATION_KEY]), torch.as_tensor(obs[ACTION_MASK_KEY])

    # --- forward passes ---
    def _forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.compute_q_values(batch)

    def _forward_inference(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        with torch.no_grad():
            _, mask = self.split_obs(batch)
            out = self.compute_q_values(batch)
            return _with_state({Columns.ACTION_DIST_INPUTS: masked_q_values(out[QF_PREDS], mask)}, out)

    def _forward_exploration(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        with torch.no_grad():
            _, mask = self.split_obs(batch)
            out = self.compute_q_values(batch)
            q = masked_q_values(out[QF_PREDS], mask)
            allowed = torch.ones_like(q) if mask is None else (torch.as_tensor(mask) != 0).to(q.dtype)
            eps = self.epsilon.to(q.dtype)
            greedy = nn.functional.one_hot(q.argmax(dim=-1), self.num_actions).to(q.dtype)
            probs = (1.0 - eps) * greedy + eps * allowed / allowed.sum(dim=-1, keepdim=True)
            logits = torch.log(probs).clamp_min(torch.finfo(q.dtype).min)
            return _with_state({Columns.ACTION_DIST_INPUTS: logits}, out)

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._forward_inference(batch)


def _with_state(out: Dict[str, Any], q_out: Dict[str, Any]) -> Dict[str, Any]:
    if Columns.STATE_OUT in q_out:
        out[Columns.STATE_OUT] = q_out[Columns.STATE_OUT]
    return out


