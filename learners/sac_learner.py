"""SAC's losses (RLlib's ``SACTorchLearner``, continuous actions) in one backward pass.

- critics: Huber error of ``Q_i(s, a)`` against
  ``r + gamma^k (1 - terminated) (min_i Q'_i(s', a') - alpha logp(a'|s'))``,
  ``a'`` sampled from the current actor, weighted by the replay weights;
- actor: ``mean(alpha logp(a~|s) - min_i Q_i(s, a~))`` with ``a~`` a
  reparameterised sample and its density from ``rsample_and_logp`` (exact at
  saturation); the critics are read with detached parameters, so this loss
  moves the actor only;
- entropy: ``-mean(log_alpha (logp(a~|s) + target_entropy))``, the target
  ``-dim(A)`` for ``target_entropy="auto"``.

RLlib steps four optimizers (actor at ``actor_lr`` 3e-5, each critic at
``critic_lr`` 3e-4, alpha at ``alpha_lr`` 3e-4, all Adam with eps 1e-7); here
one Adam per module with those four parameter groups, each loss reaching only
its own, so the steps are the same, and ``grad_clip`` clips each group on its
own as RLlib clips each optimizer.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn
from torch.func import functional_call

from marl.core.apis import QNetAPI, TargetNetworkAPI
from marl.core.columns import Columns
from marl.core.constants import SHARED_ENCODER_ID, ModuleID
from marl.distributions import TorchSquashedGaussian
from marl.models.default_sac_rl_module import QF_PREDS, QF_TWIN_PREDS

from learners.dqn_learner import DQNTorchLearner
from learners.replay_buffer import WEIGHTS
from learners.transitions import N_STEP


def detached_call(net: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``net(*inputs)`` with ``net``'s parameters detached: gradient reaches the inputs only (how
    the actors read the critics, so the actor loss never moves a critic)."""
    return functional_call(net, {k: v.detach() for k, v in net.named_parameters()}, inputs)


def _adam(groups: list) -> torch.optim.Optimizer:
    """Adam with RLlib's SAC epsilon (1e-7; torch's default is 1e-8)."""
    try:
        return torch.optim.Adam(groups, eps=1e-7, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(groups, eps=1e-7)


def target_entropy_of(config: Any, module: Any) -> float:
    value = getattr(config, "target_entropy", "auto")
    return -float(module.act_dim) if value in ("auto", None) else float(value)


class SACTorchLearner(DQNTorchLearner):
    """Twin-critic SAC with automatic entropy tuning; targets move by ``tau`` (the DQN rule)."""

    @classmethod
    def rl_module_required_apis(cls) -> List[type]:
        return [QNetAPI, TargetNetworkAPI]

    def configure_optimizers(self) -> None:
        """Per module (``configure_optimizers_for_module``), or, with a shared encoder, one
        Adam whose critic group also holds the encoder (it learns from the critics)."""
        if SHARED_ENCODER_ID not in self.module:
            return super().configure_optimizers()
        heads = [self.module[m] for m in self.module_ids_to_train]
        critics = [p for h in heads for name, p in h.named_parameters()
                   if p.requires_grad and name.split(".")[0] in ("qf", "qf_twin")]
        encoder = [p for p in self.module[SHARED_ENCODER_ID].parameters() if p.requires_grad]
        groups = [{"params": self._dedup_parameters([h.pi for h in heads]), "lr": self.config.actor_lr, "name": "actor"},
                  {"params": critics + encoder, "lr": self.config.critic_lr, "name": "critic"},
                  {"params": [h.log_alpha for h in heads], "lr": self.config.alpha_lr, "name": "alpha"}]
        self.register_optimizer("__all_modules__", "default_optimizer", _adam(groups))
        self._optimizer_modules["__all_modules__/default_optimizer"] = list(self.module.keys())

    def _forward_and_losses(self, minibatch: Dict[ModuleID, Dict[str, Any]]) -> tuple:
        if SHARED_ENCODER_ID not in self.module:
            return super()._forward_and_losses(minibatch)
        # On a shared encoder the loss encodes observations itself (with gradient for the
        # critics, detached for the actors), so the container's forward pass is skipped.
        return self._collecting_metrics(
            lambda: self.compute_losses(fwd_out={mid: {} for mid in minibatch}, batch=minibatch))

    def features(self, obs: Any) -> Any:
        """What the actor and critics read: the observation, or the shared encoder's embeddings."""
        if SHARED_ENCODER_ID not in self.module:
            return obs
        return self.module[SHARED_ENCODER_ID]._forward({Columns.OBS: obs})[Columns.EMBEDDINGS]

    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any) -> None:
        module = self.module[module_id]
        groups = [{"params": list(module.pi.parameters()), "lr": config.actor_lr, "name": "actor"}]
        for critic, name in ((module.qf, "critic"), (module.qf_twin, "critic_twin")):
            if critic is not None:  # RLlib steps (and clips) each critic with its own optimizer
                groups.append({"params": [p for p in critic.parameters() if p.requires_grad],
                               "lr": config.critic_lr, "name": name})
        groups.append({"params": [module.log_alpha], "lr": config.alpha_lr, "name": "alpha"})
        self.register_optimizer(module_id, "default_optimizer", _adam(groups))

    def compute_loss_for_module(self, module_id: ModuleID, config: Any, batch: Dict[str, Any],
                                fwd_out: Dict[str, Any]) -> torch.Tensor:
        module = self.module[module_id]
        log_alpha = module.log_alpha
        alpha = log_alpha.exp().detach()
        shared = SHARED_ENCODER_ID in self.module
        obs = self.features(batch[Columns.OBS])  # a shared encoder learns from the critics' loss only
        dist_inputs = module.action_dist_inputs(obs.detach()) if shared else fwd_out[Columns.ACTION_DIST_INPUTS]
        actions_new, logp_new = TorchSquashedGaussian.from_logits(dist_inputs).rsample_and_logp()

        q = module.compute_q_values({Columns.OBS: obs, Columns.ACTIONS: batch[Columns.ACTIONS]})
        with torch.no_grad():
            next_obs = self.features(batch[Columns.NEXT_OBS])
            next_dist = TorchSquashedGaussian.from_logits(module.action_dist_inputs(next_obs))
            actions_next, logp_next = next_dist.rsample_and_logp()
            target_q = module.forward_target({Columns.OBS: next_obs, Columns.ACTIONS: actions_next})
            q_next = target_q[QF_PREDS]
            if QF_TWIN_PREDS in target_q:
                q_next = torch.minimum(q_next, target_q[QF_TWIN_PREDS])
            discount = torch.as_tensor(config.gamma, dtype=q_next.dtype) ** batch[N_STEP].to(q_next.dtype)
            target = batch[Columns.REWARDS] + discount * (1.0 - batch[Columns.TERMINATEDS].to(q_next.dtype)) * (
                q_next - alpha * logp_next)
        weights = batch.get(WEIGHTS)
        weights = torch.ones_like(target) if weights is None else weights
        critic_loss = (weights * nn.functional.huber_loss(q[QF_PREDS], target, reduction="none")).mean()
        td_error = (q[QF_PREDS] - target).abs()
        if QF_TWIN_PREDS in q:
            critic_loss = critic_loss + (weights * nn.functional.huber_loss(
                q[QF_TWIN_PREDS], target, reduction="none")).mean()
            td_error = 0.5 * (td_error + (q[QF_TWIN_PREDS] - target).abs())

        # The actor's Q: the critics' current weights, detached, so only the actor moves.
        q_new = self._frozen_q(module, obs.detach(), actions_new)
        actor_loss = (alpha * logp_new - q_new).mean()
        alpha_loss = -(log_alpha * (logp_new.detach() + target_entropy_of(config, module))).mean()
        self.last_td_errors[module_id] = td_error.detach()
        self.register_metrics(module_id, {
            "qf_loss": critic_loss.detach(), "policy_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(),
            "alpha_value": alpha, "log_alpha_value": log_alpha.detach(), "logp_mean": logp_new.detach().mean(),
            "qf_mean": q[QF_PREDS].detach().mean(), "td_error_mean": td_error.detach().mean(),
        })
        return critic_loss + actor_loss + alpha_loss

    @staticmethod
    def _frozen_q(module: Any, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``min_i Q_i(s, a)`` with the critics' parameters detached (gradient to ``a`` only)."""
        obs, actions = torch.as_tensor(obs).float(), actions.reshape(-1, module.act_dim)
        q = detached_call(module.qf, obs, actions)
        if module.qf_twin is not None:
            q = torch.minimum(q, detached_call(module.qf_twin, obs, actions))
        return q
