"""PPO's loss (clipped surrogate, value loss, entropy, adaptive KL penalty)."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from marl.core.apis import ValueFunctionAPI
from marl.core.columns import Columns
from marl.core.constants import ModuleID

from learners.advantages import compute_gae
from learners.batching import chunk_into_sequences
from learners.learner import TorchLearner
from learners.value_estimates import flat_and_bootstrap_values


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real steps only (``mask`` marks them in padded sequences)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def standardize(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean()) / max(float(x.std()), 1e-4)).astype(np.float32)


def max_seq_len_of(module: Any, default: int = 20) -> int:
    return int(getattr(module, "model_config", {}).get("max_seq_len", default) or default)


def finish_train_batch(module: Any, sample: Dict[str, Any], extra: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Attach targets and, for recurrent modules, cut the batch into sequences."""
    batch = dict(sample)
    batch.update(extra)
    if Columns.STATE_IN in batch:
        return chunk_into_sequences(batch, max_seq_len_of(module))
    return {k: v for k, v in batch.items() if k not in ("bootstrap_obs", "bootstrap_state_in", Columns.SEQ_LENS)}


class PPOTorchLearner(TorchLearner):
    """Clipped-surrogate PPO with GAE computed per agent-trajectory segment."""

    @classmethod
    def rl_module_required_apis(cls) -> List[type]:
        return [ValueFunctionAPI]

    def build(self) -> None:
        super().build()
        if not hasattr(self, "kl_coeffs"):
            self.kl_coeffs: Dict[ModuleID, float] = {
                mid: float(self.config.kl_coeff) for mid in self.module.keys()
            }

    def build_train_batches(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, Dict[str, Any]]:
        cfg = self.config
        # Value-pass sequences start from recorded states, so any length is exact;
        # the modules' own max_seq_len keeps memory like the training pass.
        seq_len = max((max_seq_len_of(self.module[mid]) for mid in samples), default=20)
        values = flat_and_bootstrap_values(self.module, samples, max_seq_len=seq_len) if samples else {}
        batches = {}
        for mid, b in samples.items():
            vf, boot = values[mid]
            adv, targets = compute_gae(
                np.asarray(b[Columns.REWARDS], np.float64),
                vf.astype(np.float64),
                np.asarray(b[Columns.TERMINATEDS]),
                np.asarray(b[Columns.SEQ_LENS]),
                boot.astype(np.float64),
                gamma=cfg.gamma,
                lambda_=cfg.lambda_,
            )
            if cfg.normalize_advantages:
                adv = standardize(adv)
            batches[mid] = finish_train_batch(
                self.module[mid], b,
                {Columns.ADVANTAGES: adv, Columns.VALUE_TARGETS: targets, Columns.VF_PREDS: vf.astype(np.float32)},
            )
        return batches

    def compute_loss_for_module(
        self, module_id: ModuleID, config: Any, batch: Dict[str, Any], fwd_out: Dict[str, Any]
    ) -> torch.Tensor:
        mask = batch.get(Columns.LOSS_MASK)
        module = self.module[module_id]
        dist_cls = module.get_train_action_dist_cls()
        dist = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        old_dist = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])
        ratio = torch.exp(logp - batch[Columns.ACTION_LOGP])
        adv = batch[Columns.ADVANTAGES]
        surrogate = torch.minimum(
            ratio * adv, torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param) * adv
        )
        policy_loss = -masked_mean(surrogate, mask)

        if Columns.VF_PREDS in fwd_out:
            values = fwd_out[Columns.VF_PREDS]
        else:
            values = module.compute_values(batch, fwd_out.get(Columns.EMBEDDINGS))
        targets = batch[Columns.VALUE_TARGETS]
        vf_error = (values - targets) ** 2
        if config.vf_clip_param is not None:
            # PPO2-style value clipping: the new prediction may move at most
            # vf_clip_param away from the sampling-time one (a trust region
            # on values); unlike clamping the squared error it keeps gradients.
            old = batch[Columns.VF_PREDS]
            clipped = old + torch.clamp(values - old, -config.vf_clip_param, config.vf_clip_param)
            vf_error = torch.maximum(vf_error, (clipped - targets) ** 2)
        vf_loss = masked_mean(vf_error, mask)

        entropy = masked_mean(dist.entropy(), mask)
        kl = masked_mean(old_dist.kl(dist), mask)
        kl_coeff = self.kl_coeffs.get(module_id, config.kl_coeff)
        total = (
            policy_loss
            + config.vf_loss_coeff * vf_loss
            - config.entropy_coeff * entropy
            + (kl_coeff * kl if config.use_kl_loss else 0.0)
        )
        with torch.no_grad():
            clip_fraction = masked_mean(((ratio - 1).abs() > config.clip_param).float(), mask)
            explained_var = 1 - torch.var(batch[Columns.VALUE_TARGETS] - values) / torch.var(
                batch[Columns.VALUE_TARGETS]
            ).clamp_min(1e-8)
        self.register_metrics(
            module_id,
            {
                "policy_loss": policy_loss.detach(),
                "vf_loss": vf_loss.detach(),
                "entropy": entropy.detach(),
                "mean_kl_loss": kl.detach(),
                "total_loss": total.detach(),
                "clip_fraction": clip_fraction,
                "vf_explained_var": explained_var,
                "curr_kl_coeff": kl_coeff,
            },
        )
        return total

    def after_update(self, results: Dict[str, Any]) -> None:
        """Adapt each module's KL coefficient towards ``kl_target`` (RLlib's rule)."""
        if not self.config.use_kl_loss:
            return
        for mid, stats in results.items():
            if "mean_kl_loss" not in stats:
                continue
            kl = stats["mean_kl_loss"]
            if kl > 2.0 * self.config.kl_target:
                self.kl_coeffs[mid] *= 1.5
            elif kl < 0.5 * self.config.kl_target:
                self.kl_coeffs[mid] *= 0.5
            stats["curr_kl_coeff"] = self.kl_coeffs[mid]

    def get_learner_state(self) -> Dict[str, Any]:
        return {"kl_coeffs": dict(self.kl_coeffs)}

    def set_learner_state(self, state: Dict[str, Any]) -> None:
        self.kl_coeffs.update(state.get("kl_coeffs", {}))
