"""DQN's TD loss (double Q, n-step, action masks, prioritized weights) and target syncs.

The loss is RLlib's ``DQNTorchLearner`` (``num_atoms=1``) term for term:
``y = r + gamma^k (1 - terminated) Q_target(s', a*)`` with ``a*`` the
argmax of the online net at ``s'`` (``double_q``) or of the target net, the
Huber (or squared) error of ``Q(s, a)`` against ``y`` weighted by the replay
buffer's importance weights. Masked actions are excluded from every argmax.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List

import torch
from torch import nn

from marl.core.apis import QNetAPI, TargetNetworkAPI
from marl.core.columns import Columns
from marl.core.constants import ModuleID
from marl.models.action_masking import ACTION_MASK_KEY
from marl.models.default_dqn_rl_module import QF_PREDS, masked_q_values

from learners.learner import TorchLearner
from learners.replay_buffer import WEIGHTS
from learners.transitions import N_STEP


def next_action_mask(next_obs: Any) -> Any:
    """The action mask of the next observation (None without masks)."""
    if isinstance(next_obs, dict) and ACTION_MASK_KEY in next_obs:
        return next_obs[ACTION_MASK_KEY]
    return None


def td_targets(*, rewards: torch.Tensor, terminateds: torch.Tensor, n_step: torch.Tensor, gamma: float,
               q_target_next: torch.Tensor, q_online_next: Any, next_mask: Any, double_q: bool) -> torch.Tensor:
    """``r + gamma^k (1 - terminated) Q_target(s', a*)``; pure, so tests pin it by hand."""
    chooser = q_online_next if double_q else q_target_next
    best = masked_q_values(chooser, next_mask).argmax(dim=-1, keepdim=True)
    q_next = q_target_next.gather(-1, best).squeeze(-1)
    discount = torch.as_tensor(gamma, dtype=q_next.dtype) ** n_step.to(q_next.dtype)
    return rewards + discount * (1.0 - terminateds.to(q_next.dtype)) * q_next


def update_target_network(main: nn.Module, target: nn.Module, tau: float) -> None:
    """``target <- tau * main + (1 - tau) * target`` (``tau=1``: a copy)."""
    with torch.no_grad():
        for t, m in zip(target.parameters(), main.parameters()):
            if tau >= 1.0:
                t.copy_(m)
            else:
                t.mul_(1.0 - tau).add_(m, alpha=tau)


def transition_td_loss(prediction: torch.Tensor, target: torch.Tensor, batch: Dict[str, Any],
                       config: Any) -> tuple:
    """``(loss, |TD| per row)``: Huber or squared error, scaled by the replay importance weights."""
    loss_fn = nn.functional.huber_loss if config.td_error_loss_fn == "huber" else nn.functional.mse_loss
    per_row = loss_fn(prediction, target, reduction="none")
    weights = batch.get(WEIGHTS)
    loss = (per_row * weights).mean() if weights is not None else per_row.mean()
    return loss, (prediction - target).abs().detach()


def sequence_td_loss(prediction: torch.Tensor, target: torch.Tensor, batch: Dict[str, Any],
                     config: Any) -> tuple:
    """``(loss, |TD| per sequence, metrics)`` of ``[B, T]`` predictions on stored sequences.

    Steps outside ``LOSS_MASK`` and the first ``burn_in_len`` steps (RLlib's
    rule) are left out; the replay buffer's importance weights scale each
    sequence; the loss is the mean over the steps that count.
    """
    valid = batch[Columns.LOSS_MASK].clone().bool()
    valid[:, : int(getattr(config, "burn_in_len", 0) or 0)] = False
    loss_fn = nn.functional.huber_loss if config.td_error_loss_fn == "huber" else nn.functional.mse_loss
    per_step = loss_fn(prediction, target, reduction="none") * valid
    weights = batch.get(WEIGHTS)
    if weights is not None:
        per_step = per_step * weights.unsqueeze(-1)
    count = valid.sum().clamp_min(1)
    loss = per_step.sum() / count
    td = ((prediction - target).abs() * valid).detach()
    stats = {"qf_loss": loss.detach(), "qf_mean": (prediction.detach() * valid).sum() / count,
             "td_error_mean": td.sum() / count}
    return loss, td.sum(-1) / valid.sum(-1).clamp_min(1), stats


class DQNTorchLearner(TorchLearner):
    """One TD loss per Q-module; target networks synced by the algorithm's step count."""

    @classmethod
    def rl_module_required_apis(cls) -> List[type]:
        return [QNetAPI, TargetNetworkAPI]

    def build(self) -> None:
        super().build()
        if not hasattr(self, "last_target_update"):
            self.last_target_update: Dict[ModuleID, int] = defaultdict(int)
            self.num_target_updates: Dict[ModuleID, int] = defaultdict(int)
            #: Per-row |TD error| of the latest update, for replay priorities.
            self.last_td_errors: Dict[ModuleID, torch.Tensor] = {}

    def compute_loss_for_module(self, module_id: ModuleID, config: Any, batch: Dict[str, Any],
                                fwd_out: Dict[str, Any]) -> torch.Tensor:
        if Columns.LOSS_MASK in batch:
            return self._sequence_loss(module_id, config, batch, fwd_out)
        module = self.module[module_id]
        q = fwd_out[QF_PREDS]
        q_selected = q.gather(-1, batch[Columns.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            next_batch = {Columns.OBS: batch[Columns.NEXT_OBS]}
            q_target_next = module.forward_target(next_batch)[QF_PREDS]
            q_online_next = module.compute_q_values(next_batch)[QF_PREDS] if config.double_q else None
            target = td_targets(
                rewards=batch[Columns.REWARDS], terminateds=batch[Columns.TERMINATEDS], n_step=batch[N_STEP],
                gamma=config.gamma, q_target_next=q_target_next, q_online_next=q_online_next,
                next_mask=next_action_mask(batch[Columns.NEXT_OBS]), double_q=config.double_q)
        loss, td_error = transition_td_loss(q_selected, target, batch, config)
        self.last_td_errors[module_id] = td_error
        self.register_metrics(module_id, {
            "qf_loss": loss.detach(), "qf_mean": q_selected.mean().detach(),
            "qf_max": q_selected.max().detach(), "qf_min": q_selected.min().detach(),
            "td_error_mean": td_error.mean(),
        })
        return loss

    def _sequence_loss(self, module_id: ModuleID, config: Any, batch: Dict[str, Any],
                       fwd_out: Dict[str, Any]) -> torch.Tensor:
        """Recurrent 1-step TD over stored sequences (``segment_sequences``): one unroll
        from the stored state gives ``Q(s_t)`` and ``Q(s_{t+1})``; the first
        ``burn_in_len`` steps only warm the state up (RLlib's loss-mask rule)."""
        module = self.module[module_id]
        q_all = fwd_out[QF_PREDS]                                   # [B, T + 1, n]
        length = batch[Columns.ACTIONS].shape[1]
        q_selected = q_all[:, :length].gather(-1, batch[Columns.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
        next_obs = {k: v[:, 1:] for k, v in batch[Columns.OBS].items()} if isinstance(batch[Columns.OBS], dict) \
            else batch[Columns.OBS][:, 1:]
        with torch.no_grad():
            q_target_next = module.forward_target(batch)[QF_PREDS][:, 1:]
            target = td_targets(
                rewards=batch[Columns.REWARDS], terminateds=batch[Columns.TERMINATEDS],
                n_step=torch.ones_like(batch[Columns.REWARDS]), gamma=config.gamma,
                q_target_next=q_target_next, q_online_next=q_all[:, 1:].detach(),
                next_mask=next_action_mask(next_obs), double_q=config.double_q)
        loss, td_per_sequence, stats = sequence_td_loss(q_selected, target, batch, config)
        self.last_td_errors[module_id] = td_per_sequence
        self.register_metrics(module_id, stats)
        return loss

    def update_target_networks(self, timestep: int) -> Dict[ModuleID, bool]:
        """Sync each module's targets when ``target_network_update_freq`` steps passed (RLlib's rule)."""
        synced = {}
        for mid, module in self.module.items():
            if not isinstance(module, TargetNetworkAPI):
                continue
            if timestep - self.last_target_update[mid] >= self.config.target_network_update_freq:
                for main, target in module.get_target_network_pairs():
                    update_target_network(main, target, self.config.tau)
                self.last_target_update[mid] = int(timestep)
                self.num_target_updates[mid] += 1
                synced[mid] = True
        return synced

    def get_learner_state(self) -> Dict[str, Any]:
        return {"last_target_update": dict(self.last_target_update),
                "num_target_updates": dict(self.num_target_updates)}

    def set_learner_state(self, state: Dict[str, Any]) -> None:
        self.last_target_update.clear()
        self.last_target_update.update({k: int(v) for k, v in state.get("last_target_update", {}).items()})
        self.num_target_updates.clear()
        self.num_target_updates.update({k: int(v) for k, v in state.get("num_target_updates", {}).items()})
