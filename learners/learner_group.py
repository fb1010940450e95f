"""The learner group: one local learner, or several data-parallel ones.

``num_learners=0`` (RLlib's default): one learner in this process, on
``num_gpus_per_learner > 0 ? "cuda" : "cpu"``. ``num_learners=K >= 1``: K
learners in worker processes (``learner_backend="processes"``) or Ray actors
(``"ray"``; ``"auto"`` picks Ray when it is initialised), training data-parallel
with ``torch.distributed`` (``learners.distributed``). As in RLlib, each
learner trains on ``train_batch_size_per_learner`` rows with ``minibatch_size``
rows per step, so the algorithm samples ``K * train_batch_size_per_learner``
per iteration.

With remote learners this process still holds a learner (``group.learner``,
on the CPU): a copy of rank 0's full training state, taken after every
update, so checkpoints, ``algo.get_module()`` and the env runners' weights
read it as with a local learner. It is also the source of truth: a restore,
``set_state`` or a hand edit of its weights is pushed to every remote learner
before the next update, and an update interrupted by Ctrl-C (which the remote
learners still finish) is undone the same way.
"""
from __future__ import annotations

from typing import Any, Dict, Type

import torch

from marl.core.multi_rl_module import MultiRLModuleSpec
from marl.core.optional_ray import import_ray, ray_is_running

from learners.learner import TorchLearner
from learners.learner_worker import pack_state, to_cpu, unpack_state
from learners.remote_learners import ProcessLearners, RayLearners

LEARNER_BACKENDS = ("auto", "processes", "ray")


def learner_device(config: Any) -> str:
    """The local learner's device: ``config.learner_device`` when set, else CUDA when
    ``num_gpus_per_learner > 0``; asking for CUDA without it is an error naming the key."""
    device = getattr(config, "learner_device", None)
    if device is None:
        device = "cuda" if float(getattr(config, "num_gpus_per_learner", 0) or 0) > 0 else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"the learner should run on {device!r} (num_gpus_per_learner="
            f"{getattr(config, 'num_gpus_per_learner', 0)!r}, learner_device={getattr(config, 'learner_device', None)!r}) "
            "but torch.cuda.is_available() is False (a CPU build of torch, or no visible GPU); "
            "set num_gpus_per_learner=0")
    return str(device)


def resolve_learner_backend(backend: str) -> str:
    """``"processes"`` or ``"ray"`` for ``learner_backend`` (``"auto"``: Ray when initialised)."""
    if backend not in LEARNER_BACKENDS:
        raise ValueError(f"learner_backend={backend!r}; expected one of {LEARNER_BACKENDS}")
    if backend == "auto":
        return "ray" if ray_is_running() else "processes"
    if backend == "ray":
        import_ray("learner_backend='ray'")
    return backend


class LearnerGroup:
    """Holds the learner(s); ``learner`` is the local one users can inspect (see the module doc)."""

    def __init__(self, *, config: Any, learner_class: Type[TorchLearner], module_spec: MultiRLModuleSpec) -> None:
        self.num_learners = int(getattr(config, "num_learners", 0) or 0)
        self._remote: Any = None
        if self.num_learners == 0:
            self._learner = learner_class(config=config, module_spec=module_spec, device=learner_device(config))
            self._learner.build()
            return
        self._learner = learner_class(config=config, module_spec=module_spec)
        self._learner.build()
        self._remote = _start_remote_learners(config, learner_class, module_spec, self.num_learners)
        self._push_state()  # one set of starting weights for every learner

    @property
    def learner(self) -> TorchLearner:
        return self._learner

    @property
    def is_remote(self) -> bool:
        return self._remote is not None

    def update_from_samples(self, samples: Dict[str, Any]) -> Dict[str, Any]:
        if self._remote is None:
            return self._learner.update_from_samples(samples)
        if self._local_changed():
            self._push_state()
        try:
            results = self._remote.call_all("update_from_samples", samples)[0]
            self._pull_state()
        except KeyboardInterrupt:
            # The remote learners finish this update; the local copy (the state before it)
            # is pushed back before the next one, so the interrupted update never counts.
            self._pushed = None
            raise
        return results

    def get_weights(self) -> Dict[str, Any]:
        state = self._learner.module.get_state()
        return state if self._learner.device.type == "cpu" else to_cpu(state)

    def get_state(self) -> Dict[str, Any]:
        return self._learner.get_state()

    def set_state(self, state: Dict[str, Any]) -> None:
        self._learner.set_state(state)
        if self._remote is not None:
            self._push_state()

    def stop(self) -> None:
        if self._remote is not None:
            self._remote.stop()
            self._remote = None

    # ------------------------------------------------- local copy <-> remote
    def _push_state(self) -> None:
        self._remote.call_all("set_state", pack_state(self._learner.get_state()))
        self._remember_weights()

    def _pull_state(self) -> None:
        blob = self._remote.call_all("get_state")[0]
        self._learner.set_state(unpack_state(blob))
        self._remember_weights()

    def _remember_weights(self) -> None:
        self._pushed = {k: v.detach().clone() for k, v in self._learner.module.state_dict().items()}

    def _local_changed(self) -> bool:
        """Whether the local copy's weights differ from what the remote learners hold
        (a restore or a hand edit since the last update, or an interrupted update)."""
        if self._pushed is None:
            return True
        current = self._learner.module.state_dict()
        return current.keys() != self._pushed.keys() or any(
            not torch.equal(v, self._pushed[k]) for k, v in current.items())

    def push_local_state(self) -> None:
        """Give every remote learner the local learner's full state (weights, optimizer and
        learner state, RNG) now; the Algorithm calls it after a restore."""
        if self._remote is not None:
            self._push_state()


def _start_remote_learners(config: Any, learner_class: type, module_spec: Any, num_learners: int) -> Any:
    from learners.learner_worker import dumps_for_worker

    backend = resolve_learner_backend(getattr(config, "learner_backend", "auto"))
    gpus = float(getattr(config, "num_gpus_per_learner", 0) or 0)
    if not gpus and str(getattr(config, "learner_device", None) or "").startswith("cuda"):
        gpus = 1.0  # device="cuda" asks for a GPU per learner too
    cpus = getattr(config, "num_cpus_per_learner", "auto")
    cpus = 1 if cpus == "auto" else cpus
    payload = dumps_for_worker((learner_class, config, module_spec))
    timeout_s = float(getattr(config, "learner_timeout_s", 600.0))
    if backend == "ray":
        inits = [(payload, rank, num_learners, "cuda" if gpus > 0 else None, max(1, int(cpus)))
                 for rank in range(num_learners)]
        return RayLearners(inits, timeout_s=timeout_s, num_cpus=cpus, num_gpus=gpus)
    if gpus > 0:
        learner_device(config)  # raises when there is no GPU here
    count = max(1, torch.cuda.device_count()) if gpus > 0 else 1
    inits = [(payload, rank, num_learners, f"cuda:{rank % count}" if gpus > 0 else None, max(1, int(cpus)))
             for rank in range(num_learners)]
    return ProcessLearners(inits, timeout_s=timeout_s)
