"""PPO's loss (clipped surrogate, value loss, entropy, adaptive KL penalty)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from marl.core.apis import ValueFunctionAPI
from marl.core.columns import SEGMENT_COLUMNS, Columns
from marl.core.constants import ModuleID

from marl.distributions import TorchCategorical

from learners.advantages import bootstrap_step_advantages, compute_gae, segment_end_mask
from learners.batching import BOOTSTRAP_SLOT_AFTER, chunk_into_sequences
from learners.learner import TorchLearner
from learners.value_estimates import flat_and_bootstrap_values


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real steps only (``mask`` marks them in padded sequences)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def ppo_loss(
    *,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    value_targets: torch.Tensor,
    old_values: Optional[torch.Tensor],
    entropy: torch.Tensor,
    kl: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    clip_param: float,
    vf_clip_param: Optional[float],
    value_clip_param: Optional[float],
    vf_loss_coeff: float,
    entropy_coeff: float,
    kl_coeff: float | torch.Tensor,
) -> Dict[str, torch.Tensor]:
    """PPO's loss terms, exactly as RLlib's ``PPOTorchLearner`` forms them.

    Kept free of modules and configs so its semantics are pinned by unit
    tests against a hand computation:

    - surrogate ``min(r * A, clip(r, 1 - clip_param, 1 + clip_param) * A)``;
    - value loss: the squared error clamped to ``[0, vf_clip_param]`` (RLlib's
      meaning: it bounds each sample's value loss; ``None`` leaves it
      unbounded). With ``value_clip_param`` (marl's own key) the prediction
      is first held within that distance of the sampling-time prediction,
      PPO2-style (the larger of the clipped and unclipped errors);
    - ``total = mean(-surrogate + vf_loss_coeff * vf - entropy_coeff * H)
      + kl_coeff * mean(KL(old || new))`` (the KL term only when ``kl`` is given).

    Returns ``total_loss``, ``policy_loss``, ``vf_loss`` (clamped),
    ``vf_loss_unclipped``, ``entropy``, ``mean_kl_loss`` and the ``ratio``.
    """
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip_param, 1 + clip_param) * advantages)
    vf_error = (values - value_targets) ** 2
    if value_clip_param is not None and old_values is not None:
        clipped = old_values + torch.clamp(values - old_values, -value_clip_param, value_clip_param)
        vf_error = torch.maximum(vf_error, (clipped - value_targets) ** 2)
    vf_error_clamped = vf_error if vf_clip_param is None else torch.clamp(vf_error, 0.0, vf_clip_param)
    total = masked_mean(-surrogate + vf_loss_coeff * vf_error_clamped - entropy_coeff * entropy, mask)
    mean_kl = masked_mean(kl, mask) if kl is not None else torch.zeros((), device=logp.device)
    if kl is not None:
        total = total + kl_coeff * mean_kl
    return {
        "total_loss": total,
        "policy_loss": -masked_mean(surrogate, mask),
        "vf_loss": masked_mean(vf_error_clamped, mask),
        "vf_loss_unclipped": masked_mean(vf_error, mask),
        "entropy": masked_mean(entropy, mask),
        "mean_kl_loss": mean_kl,
        "ratio": ratio,
    }


def categorical_logp_entropy_kl(
    logits: torch.Tensor, old_logits: torch.Tensor, actions: torch.Tensor, with_kl: bool,
) -> tuple:
    """``(logp(actions), entropy, KL(old || new) or None)`` of categorical logits.

    The same operations ``torch.distributions.Categorical`` performs (logits
    normalised by logsumexp, probabilities by softmax, entropy on logits
    clamped at ``finfo.min`` so masked actions add 0, KL with RLlib's and
    torch's handling of zero probabilities), computed once and shared.
    """
    logp_all = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(logp_all, dim=-1)
    logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(torch.clamp(logp_all, min=torch.finfo(logp_all.dtype).min) * probs).sum(-1)
    if not with_kl:
        return logp, entropy, None
    old_logp_all = old_logits - old_logits.logsumexp(dim=-1, keepdim=True)
    old_probs = torch.softmax(old_logp_all, dim=-1)
    t = old_probs * (old_logp_all - logp_all)
    t = t.masked_fill(probs == 0, float("inf")).masked_fill(old_probs == 0, 0.0)
    return logp, entropy, t.sum(-1)


def standardize(x: np.ndarray, extra: Optional[np.ndarray] = None) -> np.ndarray:
    """``(x - mean) / max(std, 1e-4)``; statistics over ``x`` and, if given, ``extra`` rows too."""
    pool = x if extra is None else np.concatenate([np.asarray(x, np.float64), extra])
    return ((x - pool.mean()) / max(float(pool.std()), 1e-4)).astype(np.float32)


def max_seq_len_of(module: Any, default: int = 20) -> int:
    """The module's training sequence length (``RLModule.max_seq_len()``)."""
    method = getattr(module, "max_seq_len", None)
    return int(method()) if callable(method) else default


def finish_train_batch(module: Any, sample: Dict[str, Any], extra: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Attach targets and, for recurrent modules, cut the batch into sequences."""
    batch = dict(sample)
    batch.update(extra)
    if Columns.STATE_IN in batch:
        return chunk_into_sequences(batch, max_seq_len_of(module))
    return {k: v for k, v in batch.items() if k not in SEGMENT_COLUMNS}


class PPOTorchLearner(TorchLearner):
    """Clipped-surrogate PPO with GAE computed per agent-trajectory segment."""

    #: Modules whose train and exploration distributions are exactly
    #: ``TorchCategorical`` get log-probabilities, entropy and KL from
    #: :func:`categorical_logp_entropy_kl`: torch.distributions' own formulas,
    #: so the same numbers and gradients, without building two distribution
    #: objects per minibatch (about a tenth of the learner step on small nets).
    fast_categorical_loss: bool = True

    @classmethod
    def rl_module_required_apis(cls) -> List[type]:
        return [ValueFunctionAPI]

    def build(self) -> None:
        super().build()
        if not hasattr(self, "kl_coeffs"):
            self.kl_coeffs: Dict[ModuleID, float] = {
                mid: float(self.config.kl_coeff) for mid in self.module.keys()
            }
            # The loss reads the coefficients as tensors updated in place, so a
            # compiled loss sees each new value without recompiling for it.
            self._kl_coeff_tensors: Dict[ModuleID, torch.Tensor] = {
                mid: torch.tensor(value, dtype=torch.float32) for mid, value in self.kl_coeffs.items()
            }

    def _sync_kl_coeff_tensors(self) -> None:
        for mid, value in self.kl_coeffs.items():
            if mid in self._kl_coeff_tensors:
                self._kl_coeff_tensors[mid].fill_(value)
            else:
                self._kl_coeff_tensors[mid] = torch.tensor(value, dtype=torch.float32)

    def sample_values(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, tuple]:
        """``{module_id: (values [N], bootstrap values [S])}`` for GAE: each policy's own
        value function (MAPPO overrides this with its centralised critic)."""
        # Value-pass sequences start from recorded states, so any length is exact;
        # the modules' own max_seq_len keeps memory like the training pass.
        seq_len = max((max_seq_len_of(self.module[mid]) for mid in samples), default=20)
        return flat_and_bootstrap_values(self.module, samples, max_seq_len=seq_len) if samples else {}

    def train_values(self, module_id: ModuleID, batch: Dict[str, Any], fwd_out: Dict[str, Any]) -> torch.Tensor:
        """The value predictions the value loss trains (with gradient)."""
        if Columns.VF_PREDS in fwd_out:
            return fwd_out[Columns.VF_PREDS]
        return self.module[module_id].compute_values(batch, fwd_out.get(Columns.EMBEDDINGS))

    def build_train_batches(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, Dict[str, Any]]:
        cfg = self.config
        values = self.sample_values(samples)
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
                extra = None
                if getattr(cfg, "advantage_stats_include_bootstrap_steps", False):
                    extra = bootstrap_step_advantages(
                        vf.astype(np.float64), adv.astype(np.float64), np.asarray(b[Columns.SEQ_LENS]),
                        boot.astype(np.float64), cfg.gamma, cfg.lambda_)
                adv = standardize(adv, extra)
            batches[mid] = finish_train_batch(
                self.module[mid], b,
                {Columns.ADVANTAGES: adv, Columns.VALUE_TARGETS: targets, Columns.VF_PREDS: vf.astype(np.float32)},
            )
            if getattr(cfg, "minibatches_include_bootstrap_steps", False) and Columns.LOSS_MASK not in batches[mid]:
                batches[mid][BOOTSTRAP_SLOT_AFTER] = segment_end_mask(np.asarray(b[Columns.SEQ_LENS]), len(adv))
        return batches

    def compute_loss_for_module(
        self, module_id: ModuleID, config: Any, batch: Dict[str, Any], fwd_out: Dict[str, Any]
    ) -> torch.Tensor:
        mask = batch.get(Columns.LOSS_MASK)
        module = self.module[module_id]
        dist_cls = module.get_train_action_dist_cls()
        old_dist_cls = module.get_exploration_action_dist_cls()
        if self.fast_categorical_loss and dist_cls is TorchCategorical and old_dist_cls is TorchCategorical:
            logp, entropy, kl = categorical_logp_entropy_kl(
                fwd_out[Columns.ACTION_DIST_INPUTS], batch[Columns.ACTION_DIST_INPUTS], batch[Columns.ACTIONS],
                with_kl=config.use_kl_loss)
        else:
            dist = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
            old_dist = old_dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
            logp, entropy = dist.logp(batch[Columns.ACTIONS]), dist.entropy()
            kl = old_dist.kl(dist) if config.use_kl_loss else None
        values = self.train_values(module_id, batch, fwd_out)
        kl_coeff = self._kl_coeff_tensors[module_id]
        terms = ppo_loss(
            logp=logp,
            old_logp=batch[Columns.ACTION_LOGP],
            advantages=batch[Columns.ADVANTAGES],
            values=values,
            value_targets=batch[Columns.VALUE_TARGETS],
            old_values=batch.get(Columns.VF_PREDS),
            entropy=entropy,
            kl=kl,
            mask=mask,
            clip_param=config.clip_param,
            vf_clip_param=config.vf_clip_param,
            value_clip_param=getattr(config, "value_clip_param", None),
            vf_loss_coeff=config.vf_loss_coeff,
            entropy_coeff=config.entropy_coeff,
            kl_coeff=kl_coeff,
        )
        total = terms.pop("total_loss")
        with torch.no_grad():
            ratio = terms.pop("ratio")
            clip_fraction = masked_mean(((ratio - 1).abs() > config.clip_param).float(), mask)
            targets = batch[Columns.VALUE_TARGETS]
            explained_var = 1 - torch.var(targets - values) / torch.var(targets).clamp_min(1e-8)
        self.register_metrics(
            module_id,
            {
                **{k: v.detach() for k, v in terms.items()},
                "total_loss": total.detach(),
                "clip_fraction": clip_fraction,
                "vf_explained_var": explained_var,
                "curr_kl_coeff": kl_coeff,
            },
        )
        return total

    def after_update(self, results: Dict[str, Any]) -> None:
        """Adapt each module's KL coefficient towards ``kl_target`` (RLlib's rule).

        Like RLlib, the KL compared with the target is the one of the update's
        last minibatch (RLlib logs it with ``window=1`` and peeks at it), not
        the mean over the update.
        """
        if not self.config.use_kl_loss:
            return
        for mid, stats in results.items():
            last = self._last_minibatch_metrics.get(mid, {})
            if "mean_kl_loss" not in last:
                continue
            kl = last["mean_kl_loss"]
            if kl > 2.0 * self.config.kl_target:
                self.kl_coeffs[mid] *= 1.5
            elif kl < 0.5 * self.config.kl_target:
                self.kl_coeffs[mid] *= 0.5
            stats["curr_kl_coeff"] = self.kl_coeffs[mid]
        self._sync_kl_coeff_tensors()

    def get_learner_state(self) -> Dict[str, Any]:
        return {"kl_coeffs": dict(self.kl_coeffs)}

    def set_learner_state(self, state: Dict[str, Any]) -> None:
        self.kl_coeffs.update(state.get("kl_coeffs", {}))
        self._sync_kl_coeff_tensors()
