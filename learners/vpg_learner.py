"""Vanilla policy gradient (REINFORCE with returns-to-go).

Needs no value function, so the guide's shared-encoder VPG modules train as
written. Returns are standardised per batch, a variance-reducing baseline
that needs no extra network.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

from marl.core.columns import Columns
from marl.core.constants import ModuleID

from learners.advantages import compute_returns_to_go
from learners.learner import TorchLearner
from learners.ppo_learner import finish_train_batch, masked_mean, standardize


class VPGTorchLearner(TorchLearner):
    def build_train_batches(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, Dict[str, Any]]:
        batches = {}
        for mid, b in samples.items():
            returns = compute_returns_to_go(
                np.asarray(b[Columns.REWARDS], np.float64),
                np.asarray(b[Columns.TERMINATEDS]),
                np.asarray(b[Columns.SEQ_LENS]),
                None,
                gamma=self.config.gamma,
            )
            adv = standardize(returns) if self.config.normalize_advantages else returns
            batches[mid] = finish_train_batch(
                self.module[mid], b, {Columns.ADVANTAGES: adv, Columns.VALUE_TARGETS: returns}
            )
        return batches

    def compute_loss_for_module(
        self, module_id: ModuleID, config: Any, batch: Dict[str, Any], fwd_out: Dict[str, Any]
    ) -> torch.Tensor:
        mask = batch.get(Columns.LOSS_MASK)
        dist = self.module[module_id].get_train_action_dist_cls().from_logits(
            fwd_out[Columns.ACTION_DIST_INPUTS]
        )
        logp = dist.logp(batch[Columns.ACTIONS])
        policy_loss = -masked_mean(logp * batch[Columns.ADVANTAGES], mask)
        entropy = masked_mean(dist.entropy(), mask)
        total = policy_loss - config.entropy_coeff * entropy
        self.register_metrics(
            module_id,
            {"policy_loss": policy_loss.detach(), "entropy": entropy.detach(), "total_loss": total.detach()},
        )
        return total
