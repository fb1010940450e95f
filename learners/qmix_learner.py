"""VDN / QMIX: one TD loss on the team Q that a mixer module forms from the agents' Qs.

``Q_tot(s, a) = mixer(Q_1(o_1, a_1), ..., Q_n(o_n, a_n); s)`` against
``r + gamma^k (1 - terminated) mixer_target(Q'_1(o'_1, a*_1), ...; s')``,
where ``a*_i`` is agent i's best allowed next action under the online net
(double Q, as EPyMARL's ``double_q``) or the target net, and ``Q'`` the
agents' target nets. Agents that share a module are evaluated in one
forward call. The mixer is a non-policy module, so the single optimizer
steps it with the agents' networks, each parameter once.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from marl.core.columns import Columns
from marl.core.constants import ModuleID
from marl.models.default_dqn_rl_module import QF_PREDS, masked_q_values
from marl.models.mixers import MIXER_ID

from learners.dqn_learner import DQNTorchLearner, next_action_mask, sequence_td_loss, transition_td_loss
from learners.joint_transitions import JOINT, NEXT_STATE, STATE
from learners.transitions import N_STEP



def _cat(parts: List[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: _cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts, dim=0)


class QMIXTorchLearner(DQNTorchLearner):
    """Trains the agents' Q modules and the mixer on the joint TD loss."""

    #: ``{agent name: module id}`` in ``possible_agents`` order; set by the algorithm.
    agent_modules: Dict[str, ModuleID] = {}

    def batch_keys_to_train(self) -> List[str]:
        return [JOINT]

    def _agent_qs(self, obs: Dict[str, Any], target: bool = False,
                  state_in: Any = None) -> Dict[str, torch.Tensor]:
        """Q-values ``[B, (T,) n_actions]`` per agent, one forward call per module
        (recurrent modules unroll from each agent's ``state_in``)."""
        by_module: Dict[ModuleID, List[str]] = {}
        for agent, mid in self.agent_modules.items():
            by_module.setdefault(mid, []).append(agent)
        out: Dict[str, torch.Tensor] = {}
        for mid, agents in by_module.items():
            module = self.module[mid]
            batch = {Columns.OBS: _cat([obs[a] for a in agents])}
            if state_in is not None:
                batch[Columns.STATE_IN] = _cat([state_in[a] for a in agents])
            q = module.forward_target(batch)[QF_PREDS] if target else module.compute_q_values(batch)[QF_PREDS]
            for agent, part in zip(agents, torch.chunk(q, len(agents), dim=0)):
                out[agent] = part
        return out

    def _forward_and_losses(self, minibatch: Dict[str, Dict[str, Any]]) -> tuple:
        loss, sink = self._collecting_metrics(lambda: self._joint_loss(minibatch[JOINT]))
        return {MIXER_ID: loss}, sink

    def _joint_loss(self, batch: Dict[str, Any]) -> torch.Tensor:
        if Columns.LOSS_MASK in batch:
            return self._joint_sequence_loss(batch)
        cfg = self.config
        agents = list(self.agent_modules)
        mixer = self.module[MIXER_ID]
        qs = self._agent_qs(batch[Columns.OBS])
        chosen = torch.stack([qs[a].gather(-1, batch[Columns.ACTIONS][a].long().unsqueeze(-1)).squeeze(-1)
                              for a in agents], dim=-1)
        q_tot = mixer.mix(chosen, batch[STATE])
        with torch.no_grad():
            target_qs = self._agent_qs(batch[Columns.NEXT_OBS], target=True)
            online_qs = self._agent_qs(batch[Columns.NEXT_OBS]) if cfg.double_q else target_qs
            best = []
            for a in agents:
                mask = next_action_mask(batch[Columns.NEXT_OBS][a])
                action = masked_q_values(online_qs[a], mask).argmax(dim=-1, keepdim=True)
                best.append(target_qs[a].gather(-1, action).squeeze(-1))
            next_tot = mixer.mix_target(torch.stack(best, dim=-1), batch[NEXT_STATE])
            discount = torch.as_tensor(cfg.gamma, dtype=q_tot.dtype) ** batch[N_STEP].to(q_tot.dtype)
            target = batch[Columns.REWARDS] + discount * (1.0 - batch[Columns.TERMINATEDS].to(q_tot.dtype)) * next_tot
        loss, td_error = transition_td_loss(q_tot, target, batch, cfg)
        self.last_td_errors[JOINT] = td_error
        self.register_metrics(MIXER_ID, {
            "qf_loss": loss.detach(), "q_tot_mean": q_tot.mean().detach(), "target_mean": target.mean(),
            "agent_q_mean": chosen.mean().detach(), "td_error_mean": td_error.mean(),
        })
        return loss

    def _joint_sequence_loss(self, batch: Dict[str, Any]) -> torch.Tensor:
        """Recurrent agents: one unroll per agent over ``T + 1`` stored steps from its
        stored state, 1-step team targets, the first ``burn_in_len`` steps masked."""
        cfg = self.config
        agents = list(self.agent_modules)
        mixer = self.module[MIXER_ID]
        length = batch[Columns.REWARDS].shape[1]
        qs = self._agent_qs(batch[Columns.OBS], state_in=batch[Columns.STATE_IN])       # [B, T + 1, n]
        chosen = torch.stack([qs[a][:, :length].gather(-1, batch[Columns.ACTIONS][a].long().unsqueeze(-1))
                              .squeeze(-1) for a in agents], dim=-1)                 # [B, T, agents]
        states = batch[STATE]                                                          # [B, T + 1, D]
        b = chosen.shape[0]
        q_tot = mixer.mix(chosen.reshape(b * length, -1), states[:, :length].reshape(b * length, -1)).view(b, length)
        with torch.no_grad():
            target_qs = self._agent_qs(batch[Columns.OBS], target=True, state_in=batch[Columns.STATE_IN])
            best = []
            for a in agents:
                obs = batch[Columns.OBS][a]
                mask = next_action_mask({k: v[:, 1:] for k, v in obs.items()} if isinstance(obs, dict) else None)
                chooser = qs[a][:, 1:].detach() if cfg.double_q else target_qs[a][:, 1:]
                action = masked_q_values(chooser, mask).argmax(dim=-1, keepdim=True)
                best.append(target_qs[a][:, 1:].gather(-1, action).squeeze(-1))
            next_tot = mixer.mix_target(torch.stack(best, dim=-1).reshape(b * length, -1),
                                        states[:, 1:].reshape(b * length, -1)).view(b, length)
            target = batch[Columns.REWARDS] + cfg.gamma * (1.0 - batch[Columns.TERMINATEDS].to(q_tot.dtype)) * next_tot
        loss, td_per_sequence, stats = sequence_td_loss(q_tot, target, batch, cfg)
        self.last_td_errors[JOINT] = td_per_sequence
        stats["q_tot_mean"] = stats.pop("qf_mean")
        self.register_metrics(MIXER_ID, stats)
        return loss
