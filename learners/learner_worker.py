"""One of several data-parallel learners: the object that lives in a worker
process or a Ray actor and is driven by the ``LearnerGroup``.

It builds its own learner from the same spec, joins the ``torch.distributed``
process group, and answers four calls: train on samples, report its full
training state, take one, and say where rank 0 can be reached (Ray). States
cross the process boundary as ``torch.save`` bytes of CPU tensors, read back
with ``torch.load(weights_only=True)``, so nothing but tensors and plain
containers is ever unpickled from them.
"""
from __future__ import annotations

import io
import pickle
import socket
from typing import Any, Dict, Optional

import torch

from learners.distributed import DistributedContext


def pack_state(state: Dict[str, Any]) -> bytes:
    """A learner state as bytes (tensors moved to the CPU first: a GPU learner's state
    loads anywhere)."""
    buffer = io.BytesIO()
    torch.save(to_cpu(state), buffer)
    return buffer.getvalue()


def unpack_state(blob: bytes) -> Dict[str, Any]:
    return torch.load(io.BytesIO(blob), weights_only=True)


def to_cpu(state: Any) -> Any:
    """Tensors anywhere in dicts/lists/tuples (an optimizer's state_dict) moved to the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(v) for v in state)
    return state


def dumps_for_worker(init: Any) -> bytes:
    """``(learner_class, config, module_spec)`` serialised for the learner workers
    (cloudpickle, so a config holding lambdas still travels); a TypeError names what cannot."""
    try:
        import cloudpickle as pickler
    except ImportError:  # pragma: no cover - cloudpickle is a dependency
        pickler = pickle
    try:
        return pickler.dumps(init)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise TypeError(
            f"num_learners > 0: the learner class, config and module spec must be picklable to reach "
            f"the learner workers, but serialising them failed: {exc}") from exc


def free_tcp_address() -> str:
    """``tcp://<this host's address>:<a free port>`` for the process group's rendezvous."""
    host = socket.gethostbyname(socket.gethostname())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return f"tcp://{host}:{port}"


class LearnerWorker:
    """A learner of rank ``rank`` in a group of ``world_size`` (see the module docstring).

    ``payload`` is ``cloudpickle`` (or pickle) of ``(learner_class, config, module_spec)``
    made by the driver from its own objects, never read from a file.
    """

    def __init__(self, payload: bytes, rank: int, world_size: int, device: Optional[str] = None,
                 num_threads: int = 1) -> None:
        torch.set_num_threads(max(1, int(num_threads)))
        learner_class, config, module_spec = pickle.loads(payload)
        self.rank, self.world_size = rank, world_size
        if device == "cuda" and torch.cuda.is_available():  # Ray shows each actor only its own GPUs
            device = f"cuda:{torch.cuda.current_device()}"
        self.learner = learner_class(config=config, module_spec=module_spec, device=device)
        self.learner.build()

    def address(self) -> str:
        return free_tcp_address()

    def join(self, init_method: str, timeout_s: float) -> int:
        backend = "nccl" if self.learner.device.type == "cuda" else "gloo"
        context = DistributedContext.join(rank=self.rank, world_size=self.world_size,
                                          init_method=init_method, backend=backend, timeout_s=timeout_s)
        self.learner.join_process_group(context)
        return self.rank

    def update_from_samples(self, samples: Dict[str, Any]) -> Dict[str, Any]:
        return self.learner.update_from_samples(samples)

    def get_state(self) -> bytes:
        return pack_state(self.learner.get_state())

    def set_state(self, blob: bytes) -> None:
        self.learner.set_state(unpack_state(blob))

    def stop(self) -> None:
        if self.learner.distributed is not None:
            self.learner.distributed.close()
