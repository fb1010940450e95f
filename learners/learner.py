"""The Learner: turns sampled data into weight updates for a MultiRLModule.

One ``forward_train`` call on the whole container per minibatch (so a
container's own ``_forward``, e.g. through a shared encoder, is honoured),
one loss per module, one backward pass over their sum. Optimizers are either
one per module or one over the de-duplicated union of every parameter (the
single-optimizer mode that shared parts need, so they are stepped once).
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from marl.core.apis import ValueFunctionAPI
from marl.core.columns import Columns
from marl.core.constants import ModuleID
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec

from learners.batching import BOOTSTRAP_SLOT_AFTER, iter_minibatches, leading_dim, to_device, to_tensor
from learners.compiled_step import CompiledOrEager
from learners.distributed import DistributedContext

#: Name of the optimizer in single-optimizer mode.
SHARED_OPTIMIZER_NAME = "__all_modules__/default_optimizer"


def make_adam(params: Sequence[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for these parameters.

    The same update rule as the default (for-loop) implementation, in one
    kernel instead of a dozen small ops per parameter: on the default
    [64, 64] nets it cuts the optimizer step from ~136 to ~41 us on CPU. Falls
    back to the default implementation where fusing is not supported.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # e.g. a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr)


def unique_parameters(params: Iterable[torch.nn.Parameter]) -> List[torch.nn.Parameter]:
    """``params`` in order, each once (a parameter shared by modules or optimizers appears once)."""
    return list({id(p): p for p in params}.values())


class NonFiniteLossError(FloatingPointError):
    """A loss or a gradient became NaN/inf during ``TorchLearner.update()``.

    What the caller can rely on: it is raised before the optimizer step of
    the minibatch that produced the value (every module's loss and every
    gradient, after clipping, is checked before any ``optimizer.step()`` of
    that minibatch), and the whole update is then rolled back, so every
    module's weights, every optimizer's state, the learner's own state (e.g.
    PPO's KL coefficients) and its shuffling RNG are what they were before
    ``update()`` began, including the steps of earlier minibatches.

    ``module_ids`` lists the modules involved; ``terms`` maps each to the
    non-finite loss terms it registered (or, for a gradient, the parameters).
    """

    def __init__(self, message: str, *, module_ids: Sequence[ModuleID] = (),
                 terms: Optional[Dict[ModuleID, List[str]]] = None) -> None:
        super().__init__(message)
        self.module_ids = list(module_ids)
        self.terms = dict(terms or {})

    def __reduce__(self) -> tuple:
        # Keep module_ids and terms when the error crosses a process boundary (a remote learner).
        return (type(self), (str(self),), {"module_ids": self.module_ids, "terms": self.terms})


class Learner:
    """Framework-independent learner API; ``TorchLearner`` implements it."""

    @classmethod
    def rl_module_required_apis(cls) -> List[type]:
        """Mix-ins every trained module must implement for this algorithm."""
        return []

    def compute_loss_for_module(
        self, module_id: ModuleID, config: Any, batch: Dict[str, Any], fwd_out: Dict[str, Any]
    ) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_loss_for_module()"
        )


class TorchLearner(Learner):
    """Owns the trainable ``MultiRLModule`` and its optimizers."""

    def __init__(
        self,
        *,
        config: Any,
        module_spec: Optional[MultiRLModuleSpec] = None,
        module: Optional[MultiRLModule] = None,
        device: Optional[Any] = None,
    ) -> None:
        if module_spec is None and module is None:
            raise ValueError("a Learner needs a module_spec or a built module")
        self.config = config
        self._module_spec = module_spec
        self._module = module
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self._optimizer_modules: Dict[str, List[ModuleID]] = {}
        self._metrics: Dict[ModuleID, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
        self._last_minibatch_metrics: Dict[ModuleID, Dict[str, float]] = {}
        self._generator = torch.Generator()
        self._generator.manual_seed(int(getattr(config, "seed", None) or 0))
        self.shared_optimizer = False
        self._built = False
        #: Where ``register_metrics`` writes while a (possibly compiled) loss step
        #: runs: a dict made fresh per step, so compiled code never guards on
        #: the growing metric lists.
        self._metric_sink: Optional[Dict[ModuleID, Dict[str, Any]]] = None
        self._forward_train: Any = None
        self._loss_step: Any = None
        #: Where the module, its optimizers and the train batches live (``"cuda"`` for a
        #: GPU learner); samples arrive and weights leave as CPU arrays either way.
        self.device = torch.device(device if device is not None else "cpu")
        #: Set by ``join_process_group`` when this learner is one of several (DDP).
        self.distributed: Optional[DistributedContext] = None

    # ------------------------------------------------------------------ build
    @property
    def module(self) -> MultiRLModule:
        if self._module is None:
            raise RuntimeError("call Learner.build() before using the learner's module")
        return self._module

    def build(self) -> None:
        if self._built:
            return
        if self._module is None:
            self._module = self._module_spec.build()
        self._module.to(self.device)
        self.module.train()
        self.shared_optimizer = self._use_shared_optimizer()
        self.configure_optimizers()
        self._setup_compilation()
        self._built = True

    def _setup_compilation(self) -> None:
        """Choose eager or compiled ``forward_train`` / loss step (``config.framework(...)``)."""
        self._forward_train = self.module.forward_train
        self._loss_step = self._forward_and_losses
        if not getattr(self.config, "torch_compile_learner", False):
            return
        what = getattr(self.config, "torch_compile_learner_what_to_compile", "forward_train")
        options = dict(backend=getattr(self.config, "torch_compile_learner_dynamo_backend", "inductor"),
                       mode=getattr(self.config, "torch_compile_learner_dynamo_mode", None))
        if what == "complete_update":
            self._loss_step = CompiledOrEager(self._forward_and_losses, label="the loss step", **options)
        else:
            self._forward_train = CompiledOrEager(self.module.forward_train, label="forward_train", **options)

    def join_process_group(self, context: DistributedContext) -> None:
        """Train as one of ``context.world_size`` data-parallel learners (``learners.distributed``)."""
        self.distributed = context

    @property
    def is_compiled(self) -> bool:
        """Whether the update runs compiled code (False after a fallback to eager)."""
        return any(isinstance(f, CompiledOrEager) and f.is_compiled for f in (self._forward_train, self._loss_step))

    @property
    def module_ids_to_train(self) -> List[ModuleID]:
        """Policy modules that receive a loss (``policies_to_train``)."""
        chosen = getattr(self.config, "policies_to_train", None)
        ids = self.module.policy_module_ids
        if chosen is None:
            return list(ids)
        if callable(chosen):
            return [mid for mid in ids if chosen(mid, None)]
        unknown = set(chosen) - set(self.module.keys())
        if unknown:
            raise ValueError(
                f"policies_to_train names {sorted(unknown)}, which are not modules; "
                f"valid ids: {sorted(self.module.keys())}"
            )
        return [mid for mid in ids if mid in set(chosen)]

    def _modules_sharing_parameters(self) -> List[tuple]:
        owner: Dict[int, ModuleID] = {}
        shared = []
        for mid, sub in self.module.items():
            for p in sub.parameters():
                if id(p) in owner and owner[id(p)] != mid:
                    shared.append((owner[id(p)], mid))
                owner.setdefault(id(p), mid)
        return sorted(set(shared))

    def _use_shared_optimizer(self) -> bool:
        choice = getattr(self.config, "shared_optimizer", None)
        needs_shared = bool(self._modules_sharing_parameters()) or bool(
            self.module.non_policy_module_ids
        )
        if choice is None:
            return needs_shared
        return bool(choice)

    def configure_optimizers(self) -> None:
        """One optimizer over all parameters, or one per trained module."""
        if self.shared_optimizer:
            params = self._dedup_parameters(
                [self.module[m] for m in self.module_ids_to_train + self.module.non_policy_module_ids]
            )
            optimizer = make_adam(params, lr=self.config.lr)
            self.register_optimizer("__all_modules__", "default_optimizer", optimizer)
            self._optimizer_modules[SHARED_OPTIMIZER_NAME] = list(self.module.keys())
            return
        for module_id in self.module_ids_to_train:
            self.configure_optimizers_for_module(module_id, self.config)
        self._check_no_parameter_in_two_optimizers()

    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any) -> None:
        """Default: Adam over the module's own parameters (override to customise)."""
        params = [p for p in self.module[module_id].parameters() if p.requires_grad]
        if params:
            self.register_optimizer(module_id, "default_optimizer", make_adam(params, lr=config.lr))

    def register_optimizer(
        self, module_id: ModuleID, optimizer_name: str, optimizer: torch.optim.Optimizer
    ) -> None:
        name = f"{module_id}/{optimizer_name}"
        if name in self.optimizers:
            raise ValueError(f"optimizer {name!r} is already registered")
        self.optimizers[name] = optimizer
        self._optimizer_modules[name] = [module_id]

    @staticmethod
    def _dedup_parameters(modules: Iterable[torch.nn.Module]) -> List[torch.nn.Parameter]:
        """Trainable parameters, each once (frozen ones, e.g. target networks, are left out)."""
        return unique_parameters(p for m in modules for p in m.parameters() if p.requires_grad)

    def _check_no_parameter_in_two_optimizers(self) -> None:
        where: Dict[int, str] = {}
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in where and where[id(p)] != name:
                        raise ValueError(
                            f"a parameter is in two optimizers ({where[id(p)]!r} and {name!r}): "
                            "the modules share parameters, so per-module optimizers would step "
                            "it twice per update. Use the single-optimizer learner: "
                            "config.learners(shared_optimizer=True) (or leave it None, the "
                            "automatic choice)."
                        )
                    where[id(p)] = name

    # ----------------------------------------------------------------- update
    def register_metrics(self, module_id: ModuleID, values: Dict[str, Any]) -> None:
        """Record per-minibatch statistics; ``update()`` returns their means.

        Loss terms recorded here are also checked for NaN/inf before the
        optimizer step, so a diverging term is reported by name.
        """
        if self._metric_sink is not None:
            self._metric_sink.setdefault(module_id, {}).update(values)
            return
        for key, value in values.items():
            self._metrics[module_id][key].append(value)

    def batch_keys_to_train(self) -> List[str]:
        """The keys of ``update()``'s batch that are trained on: the trained policy
        modules' ids (a joint learner, e.g. QMIX, trains on one joint batch)."""
        return self.module_ids_to_train

    def compute_losses(
        self, *, fwd_out: Dict[ModuleID, Any], batch: Dict[ModuleID, Any]
    ) -> Dict[ModuleID, torch.Tensor]:
        return {
            mid: self.compute_loss_for_module(mid, self.config, batch[mid], fwd_out[mid])
            for mid in batch
        }

    def update(
        self,
        batch: Dict[ModuleID, Dict[str, Any]],
        *,
        minibatch_size: Optional[int] = None,
        num_epochs: int = 1,
    ) -> Dict[str, Any]:
        """Run ``num_epochs`` over minibatches in RLlib's order (``iter_minibatches``);
        return per-module metrics.

        All or nothing: if anything raises part-way (a ``NonFiniteLossError``,
        a ``KeyboardInterrupt``, ...), the learner is put back to its state
        before the call, so weights, optimizer states and the shuffling RNG
        never hold half an update. The price is one copy of the weights and
        optimizer states per call.
        """
        self.build()
        keys = set(self.batch_keys_to_train())
        batch = {mid: to_device(to_tensor(b), self.device) for mid, b in batch.items() if mid in keys}
        slots_after = {mid: b.pop(BOOTSTRAP_SLOT_AFTER) for mid, b in batch.items() if BOOTSTRAP_SLOT_AFTER in b}
        self._metrics.clear()
        sizes = {}
        for mid, b in batch.items():
            n = leading_dim({k: v for k, v in b.items() if k != Columns.SEQ_LENS})
            if mid in slots_after:  # the whole batch, as RLlib counts it: with its bootstrap slots
                n += int(slots_after[mid].sum())
            mb = minibatch_size or n
            if Columns.LOSS_MASK in b:  # sequences: minibatch size counts time steps
                mb = max(1, mb // b[Columns.LOSS_MASK].shape[1])
            sizes[mid] = mb
        num_steps = 0
        shuffle = bool(getattr(self.config, "shuffle_batch_per_epoch", True)) and num_epochs > 1
        shuffle_first = bool(getattr(self.config, "shuffle_first_epoch", False))
        before = self.training_state_copy()
        try:
            for minibatch in iter_minibatches(batch, sizes, num_epochs, self._generator, shuffle=shuffle,
                                              shuffle_first_epoch=shuffle_first, slots_after=slots_after):
                self._update_minibatch(minibatch)
                num_steps += 1
            results: Dict[str, Any] = {}
            last_values: Dict[ModuleID, Dict[str, float]] = {}
            for mid, stats in self._metrics.items():
                results[mid] = {k: float(np.mean([float(v) for v in vs])) for k, vs in stats.items()}
                last_values[mid] = {k: float(vs[-1]) for k, vs in stats.items() if vs}
            for mid, b in batch.items():
                results.setdefault(mid, {})["num_module_steps_trained"] = int(
                    b[Columns.LOSS_MASK].sum() if Columns.LOSS_MASK in b else leading_dim(b[Columns.ACTIONS])
                )
            if self.distributed is not None:  # every learner adapts its state from the same numbers
                results = self.distributed.average_metrics(results)
                last_values = self.distributed.average_metrics(last_values)
            self._last_minibatch_metrics = last_values
            self.after_update(results)
        except NonFiniteLossError as err:
            self.restore_training_state(before)
            undone = f"its {num_steps} earlier gradient step(s) undone" if num_steps else "no step had been taken"
            raise NonFiniteLossError(
                f"{err} Found at gradient step {num_steps + 1} of this update, before its optimizer "
                f"step; the update was rolled back ({undone}): every module's weights and every "
                "optimizer's state are as they were before the update.",
                module_ids=err.module_ids, terms=err.terms,
            ) from None
        except BaseException:
            self.restore_training_state(before)
            raise
        results["__all_modules__"] = {"num_gradient_steps": num_steps}
        return results

    def training_state_copy(self) -> Dict[str, Any]:
        """A copy of everything ``update()`` changes: weights, optimizer states, learner
        state, shuffling RNG (for rolling back an update or a failed restore)."""
        with torch.no_grad():
            weights = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return {
            "weights": weights,
            "optimizers": {name: _optimizer_state_copy(opt) for name, opt in self.optimizers.items()},
            "learner": copy.deepcopy(self.get_learner_state()),
            "generator": self._generator.get_state(),
        }

    def restore_training_state(self, state: Dict[str, Any]) -> None:
        with torch.no_grad():
            self.module.load_state_dict(state["weights"])  # copies in place: optimizers keep their params
        for name, opt_state in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt_state)
        self.set_learner_state(state["learner"])
        self._generator.set_state(state["generator"])

    def _update_minibatch(self, minibatch: Dict[ModuleID, Dict[str, Any]]) -> None:
        """One gradient step. Every check runs before the first ``optimizer.step()``:
        the losses, then the gradients (via each optimizer's global gradient norm,
        which is finite only if every gradient is: one number instead of a check
        per parameter, so the guarantee costs nothing on the hot path)."""
        losses, step_metrics = self._loss_step(minibatch)
        for mid, values in step_metrics.items():
            for key, value in values.items():
                self._metrics[mid][key].append(value)
        total = sum(losses.values())
        loss_is_finite = math.isfinite(float(total.detach()))
        if not loss_is_finite and self.distributed is None:
            self._check_losses_finite(losses)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        if loss_is_finite or self.distributed is None:  # a learner of several sends zeros and a flag instead
            total.backward()
        if self.distributed is not None:
            self._average_gradients(losses, loss_is_finite)
        norms = {}
        for name, opt in self.optimizers.items():
            # Each parameter group is clipped on its own, as RLlib clips each of its optimizers
            # (SAC's actor, critics and alpha are groups of one optimizer here).
            group_norms = [self._clip_gradients([p for p in g["params"] if p.grad is not None])
                           for g in opt.param_groups]
            norms[name] = group_norms[0] if len(group_norms) == 1 else math.sqrt(sum(n * n for n in group_norms))
        if not all(math.isfinite(n) for n in norms.values()):
            self._check_gradients_finite(losses, "")
        for name, opt in self.optimizers.items():
            for mid in self._optimizer_modules[name]:
                if mid in minibatch:
                    self._metrics[mid]["gradients_global_norm"].append(norms[name])
            opt.step()

    def _average_gradients(self, losses: Dict[ModuleID, torch.Tensor], loss_is_finite: bool) -> None:
        """DDP's step: gradients averaged over the learners, once per minibatch. Raises on
        every learner together when any learner's loss is NaN/inf (no learner is left
        waiting in a collective that the others abandoned)."""
        all_finite = self.distributed.average_gradients(self._dedup_optimizer_params(), loss_is_finite)
        if not loss_is_finite:
            self._check_losses_finite(losses)
        if not all_finite:
            raise NonFiniteLossError(
                f"the loss of another learner (of {self.distributed.world_size}) was non-finite at this "
                "minibatch; see its error for the module and the terms", module_ids=[], terms={})

    def _dedup_optimizer_params(self) -> List[torch.nn.Parameter]:
        """Every optimized parameter once, in a fixed order (the same on every learner)."""
        return unique_parameters(p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"])

    def _forward_and_losses(self, minibatch: Dict[ModuleID, Dict[str, Any]]) -> tuple:
        """``(losses, metrics)`` of one minibatch: the part ``complete_update`` compiles.

        Metrics registered meanwhile are returned rather than appended, so
        the function has no effect a compiled graph would have to guard on.
        """
        return self._collecting_metrics(
            lambda: self.compute_losses(fwd_out=self._forward_train(minibatch), batch=minibatch))

    def _collecting_metrics(self, compute: Any) -> tuple:
        """``(compute(), metrics it registered)``, the metrics kept in a fresh dict."""
        self._metric_sink = sink = {}
        try:
            result = compute()
        finally:
            self._metric_sink = None
        return result, sink

    def _check_losses_finite(self, losses: Dict[ModuleID, torch.Tensor]) -> None:
        """Raise naming every module whose loss is NaN/inf and the terms that are."""
        problems, terms_by_module = [], {}
        for mid, loss in losses.items():
            if bool(torch.isfinite(loss).all()):
                continue
            terms = {k: v[-1] for k, v in self._metrics[mid].items() if v}
            bad = [k for k, v in terms.items() if not math.isfinite(float(v))] or ["total_loss"]
            terms_by_module[mid] = bad
            problems.append(f"module {mid!r}: the loss is {float(loss.detach().sum())} (non-finite terms: {bad})")
        if problems:
            raise NonFiniteLossError("; ".join(problems) + ".", module_ids=list(terms_by_module),
                                     terms=terms_by_module)

    def _check_gradients_finite(self, losses: Dict[ModuleID, torch.Tensor], when: str) -> None:
        """Raise naming the modules and parameters whose gradient is NaN/inf."""
        grads = [p.grad for opt in self.optimizers.values() for g in opt.param_groups
                 for p in g["params"] if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            return
        owner: Dict[int, tuple] = {}
        for mid, sub in self.module.items():
            for pname, p in sub.named_parameters():
                owner.setdefault(id(p), (mid, pname))
        bad: Dict[ModuleID, List[str]] = defaultdict(list)
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                for p in g["params"]:
                    if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                        mid, pname = owner.get(id(p), ("<container>", "?"))
                        bad[mid].append(pname)
        loss_values = {mid: float(loss.detach().sum()) for mid, loss in losses.items()}
        described = "; ".join(f"module {mid!r}: non-finite gradient{when} of {names}" for mid, names in bad.items())
        raise NonFiniteLossError(
            f"{described} while every loss is finite ({loss_values}): a loss term has a NaN/inf "
            "gradient at a finite value (e.g. sqrt or log at 0).",
            module_ids=list(bad), terms=dict(bad),
        )

    def _clip_gradients(self, params: Sequence[torch.nn.Parameter]) -> float:
        """Clip as ``grad_clip`` / ``grad_clip_by`` say; return the global gradient norm
        before clipping. A non-finite norm leaves the gradients untouched, so the
        caller can still name the parameters whose gradients are NaN/inf."""
        clip = getattr(self.config, "grad_clip", None)
        by = getattr(self.config, "grad_clip_by", "global_norm")
        if not params:
            return 0.0
        if clip is None or by == "global_norm":
            total = torch.nn.utils.get_total_norm([p.grad for p in params])
            norm = float(total)
            if clip is not None and math.isfinite(norm):
                torch.nn.utils.clip_grads_with_norm_(params, clip, total)
            return norm
        if by == "norm":
            norms = [float(torch.nn.utils.get_total_norm([p.grad])) for p in params]
            norm = float(np.sqrt(np.sum(np.square(norms))))
            if math.isfinite(norm):
                for p in params:
                    torch.nn.utils.clip_grad_norm_([p], clip)
            return norm
        if by == "value":  # reports the norm after clipping
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
            if math.isfinite(norm):
                torch.nn.utils.clip_grad_value_(params, clip)
                norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
            return norm
        raise ValueError(f"grad_clip_by={by!r}; expected 'global_norm', 'norm' or 'value'")

    def after_update(self, results: Dict[str, Any]) -> None:
        """Hook for per-update bookkeeping (e.g. PPO's adaptive KL coefficient).

        ``results`` holds per-module means over the update's minibatches;
        ``self._last_minibatch_metrics`` the values of its last minibatch.
        """

    # -------------------------------------------- algorithm-specific preparation
    def build_train_batches(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, Dict[str, Any]]:
        """Turn env-runner samples into loss inputs (advantages, targets)."""
        return samples

    def update_from_samples(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[str, Any]:
        self.build()
        self.check_module_apis()
        trained = set(self.module_ids_to_train)
        samples = {mid: b for mid, b in samples.items() if mid in trained and len(b[Columns.SEQ_LENS])}
        batches = self.build_train_batches(samples)
        if self.distributed is not None:  # targets over the whole batch, then this learner's rows
            # Empty bootstrap slots would differ in number between shards, and so
            # would the learners' step counts: sharded minibatches hold real rows.
            batches = {mid: {k: v for k, v in b.items() if k != BOOTSTRAP_SLOT_AFTER} for mid, b in batches.items()}
            batches = self.distributed.shard(batches)
        return self.update(
            batches,
            minibatch_size=getattr(self.config, "minibatch_size", None),
            num_epochs=getattr(self.config, "num_epochs", 1),
        )

    def check_module_apis(self, apis: Optional[Sequence[type]] = None) -> None:
        """Raise naming the module and the missing mix-in the algorithm needs
        (``apis``, default ``rl_module_required_apis()``)."""
        for mid in self.module_ids_to_train:
            for api in self.rl_module_required_apis() if apis is None else apis:
                if not isinstance(self.module[mid], api):
                    raise TypeError(
                        f"module {mid!r} ({type(self.module[mid]).__name__}) does not implement "
                        f"{api.__name__}, which {type(self).__name__} needs"
                        + self._missing_api_hint(api)
                    )

    def _missing_api_hint(self, api: type) -> str:
        if api is ValueFunctionAPI:
            return (
                ": add compute_values() (subclass ValueFunctionAPI) to the module, or train "
                "modules without a value function with VPGConfig"
            )
        return ""

    # ------------------------------------------------------------------ state
    def get_state(self) -> Dict[str, Any]:
        """Module weights, optimizer states and learner-specific state."""
        return {
            "rl_module": self.module.get_state(),
            "optimizer": {name: copy.deepcopy(opt.state_dict()) for name, opt in self.optimizers.items()},
            "learner": self.get_learner_state(),
            "generator": self._generator.get_state(),
        }

    def set_state(self, state: Dict[str, Any]) -> None:
        self.build()
        if "rl_module" in state:
            self.module.set_state(state["rl_module"])
        for name, opt_state in state.get("optimizer", {}).items():
            if name not in self.optimizers:
                raise KeyError(
                    f"optimizer {name!r} in the state does not exist in this learner "
                    f"(optimizers: {sorted(self.optimizers)})"
                )
            self.optimizers[name].load_state_dict(opt_state)
        if "learner" in state:
            self.set_learner_state(state["learner"])
        if "generator" in state:
            self._generator.set_state(state["generator"])

    def get_learner_state(self) -> Dict[str, Any]:
        return {}

    def set_learner_state(self, state: Dict[str, Any]) -> None:
        pass


def _optimizer_state_copy(optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """``optimizer.state_dict()`` with its tensors cloned: what ``load_state_dict`` puts back.

    Off-policy algorithms take this copy before every update (the update's
    rollback point), so it avoids ``copy.deepcopy`` and its memo walk: the
    state dict's only mutable leaves are the per-parameter state tensors and
    the group dicts, and both are copied here.
    """
    state = optimizer.state_dict()
    with torch.no_grad():
        per_param = {index: {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                             for k, v in entry.items()}
                     for index, entry in state["state"].items()}
        groups = [{k: v.clone() if isinstance(v, torch.Tensor) else list(v) if isinstance(v, list) else v
                   for k, v in group.items()} for group in state["param_groups"]]
    return {"state": per_param, "param_groups": groups}
