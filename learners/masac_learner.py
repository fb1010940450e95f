"""MASAC: SAC's losses with centralised critics that see the global input and the joint action.

For every agent i, on joint rows (``learners.joint_transitions``):

- critic: Huber error of both ``Q_i(s, a_1..a_n)`` against
  ``r_i + gamma^k (1 - d_i) (min Q'_i(s', a'_1..a'_n) - alpha_i logp_i(a'_i))``,
  every ``a'_j`` sampled from agent j's current policy at its next observation;
- actor (MADDPG's choice): ``alpha_i logp_i(a~_i) - min Q_i(s, a_1..a~_i..a_n)``,
  agent i's replayed action swapped for a reparameterised sample, the others
  as replayed, the critics read with detached weights;
- entropy: per agent module, towards ``target_entropy`` (``-dim(A)`` when "auto").

One backward pass over one Adam with three parameter groups (every actor:
``actor_lr``; the critic module: ``critic_lr``; every ``log_alpha``:
``alpha_lr``), each loss reaching only its own group.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from marl.core.columns import AGENT_INDEX, GLOBAL_OBS, Columns
from marl.core.constants import ModuleID
from marl.distributions import TorchSquashedGaussian
from marl.models.default_sac_rl_module import QF_PREDS, QF_TWIN_PREDS
from marl.models.masac_critic import JOINT_ACTION, MASAC_CRITIC_ID

from learners.joint_transitions import AGENT_REWARDS, AGENT_TERMINATEDS, JOINT, NEXT_STATE, STATE
from learners.replay_buffer import WEIGHTS
from learners.sac_learner import SACTorchLearner, _adam, detached_call, target_entropy_of
from learners.transitions import N_STEP


class MASACTorchLearner(SACTorchLearner):
    """Per-agent SAC actors and one centralised twin critic, trained on joint rows."""

    #: ``{agent name: module id}`` in ``possible_agents`` order; set by the algorithm.
    agent_modules: Dict[str, ModuleID] = {}

    def batch_keys_to_train(self) -> List[str]:
        return [JOINT]

    def configure_optimizers(self) -> None:
        actors = list(self.module_ids_to_train)
        actor_params = self._dedup_parameters([self.module[m].pi for m in actors])
        alphas = [self.module[m].log_alpha for m in actors]
        critic = [p for p in self.module[MASAC_CRITIC_ID].parameters() if p.requires_grad]
        groups = [{"params": actor_params, "lr": self.config.actor_lr, "name": "actor"},
                  {"params": critic, "lr": self.config.critic_lr, "name": "critic"},
                  {"params": list({id(a): a for a in alphas}.values()), "lr": self.config.alpha_lr, "name": "alpha"}]
        self.register_optimizer("__all_modules__", "default_optimizer", _adam(groups))
        self._optimizer_modules["__all_modules__/default_optimizer"] = list(self.module.keys())

    def _forward_and_losses(self, minibatch: Dict[str, Dict[str, Any]]) -> tuple:
        loss, sink = self._collecting_metrics(lambda: self._joint_loss(minibatch[JOINT]))
        return {MASAC_CRITIC_ID: loss}, sink

    def _policy(self, agent: str, obs: Any) -> TorchSquashedGaussian:
        return TorchSquashedGaussian.from_logits(self.module[self.agent_modules[agent]].action_dist_inputs(obs))

    def _joint_loss(self, batch: Dict[str, Any]) -> torch.Tensor:
        cfg = self.config
        agents = list(self.agent_modules)
        critic = self.module[MASAC_CRITIC_ID]
        n, b = len(agents), batch[Columns.REWARDS].shape[0]
        act = lambda a: batch[Columns.ACTIONS][a].float().reshape(b, -1)  # noqa: E731
        replayed = torch.cat([act(a) for a in agents], dim=-1)
        index = torch.arange(n).repeat_interleave(b)

        def per_agent_inputs(state: torch.Tensor, joint: torch.Tensor) -> Dict[str, torch.Tensor]:
            """The critic's rows for every agent at once: ``[n * B, ...]``."""
            return {GLOBAL_OBS: state.repeat(n, 1), JOINT_ACTION: joint, AGENT_INDEX: index}

        alphas = torch.stack([self.module[self.agent_modules[a]].log_alpha.exp() for a in agents]).detach()
        with torch.no_grad():
            next_samples = [self._policy(a, batch[Columns.NEXT_OBS][a]).rsample_and_logp() for a in agents]
            joint_next = torch.cat([s[0].reshape(b, -1) for s in next_samples], dim=-1)
            target_q = critic.q(per_agent_inputs(batch[NEXT_STATE], joint_next.repeat(n, 1)), target=True)
            q_next = torch.minimum(target_q[QF_PREDS], target_q[QF_TWIN_PREDS]).view(n, b)
            logp_next = torch.stack([s[1] for s in next_samples])                         # [n, B]
            rewards = torch.stack([batch[AGENT_REWARDS][a] for a in agents]).float()
            dones = torch.stack([batch[AGENT_TERMINATEDS][a] for a in agents]).float()
            discount = torch.as_tensor(cfg.gamma) ** batch[N_STEP].float()
            target = rewards + discount * (1.0 - dones) * (q_next - alphas[:, None] * logp_next)
        q = critic.q(per_agent_inputs(batch[STATE], replayed.repeat(n, 1)))
        weights = batch.get(WEIGHTS)
        weights = torch.ones(b) if weights is None else weights
        critic_loss = sum((weights.repeat(n) * nn.functional.huber_loss(q[k], target.reshape(-1), reduction="none")
                           ).mean() for k in (QF_PREDS, QF_TWIN_PREDS))
        td_error = 0.5 * ((q[QF_PREDS] - target.reshape(-1)).abs() + (q[QF_TWIN_PREDS] - target.reshape(-1)).abs())

        # Actors: agent i's action resampled, the others as replayed; critics frozen.
        samples = [self._policy(a, batch[Columns.OBS][a]).rsample_and_logp() for a in agents]
        width = replayed.shape[1] // n
        joints = []
        for i, (action, _) in enumerate(samples):
            joint = replayed.clone()
            joint[:, i * width:(i + 1) * width] = action.reshape(b, -1)
            joints.append(joint)
        x = critic.critic_input(per_agent_inputs(batch[STATE], torch.cat(joints, dim=0)))
        q_new = torch.minimum(detached_call(critic.qf, x), detached_call(critic.qf_twin, x)).view(n, b)
        logp_new = torch.stack([s[1] for s in samples])
        actor_loss = (alphas[:, None] * logp_new - q_new).mean(dim=1).sum()
        alpha_loss = sum(
            -(self.module[self.agent_modules[a]].log_alpha
              * (logp_new[i].detach() + target_entropy_of(cfg, self.module[self.agent_modules[a]]))).mean()
            for i, a in enumerate(agents))
        self.last_td_errors[JOINT] = td_error.view(n, b).mean(dim=0).detach()
        self.register_metrics(MASAC_CRITIC_ID, {
            "qf_loss": critic_loss.detach(), "policy_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(),
            "alpha_mean": alphas.mean(), "logp_mean": logp_new.detach().mean(),
            "qf_mean": q[QF_PREDS].detach().mean(), "td_error_mean": td_error.detach().mean(),
        })
        return critic_loss + actor_loss + alpha_loss
