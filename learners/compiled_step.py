"""``torch.compile`` for the learner's minibatch step, with an eager fallback.

Why: on the small networks MARL uses, an eager update is bound by per-op
dispatch overhead, not arithmetic. Compiling the forward pass and the loss
into one graph (and AOTAutograd its backward) fuses dozens of small kernels.

RLlib's switches keep their meaning (``config.framework(...)``):

- ``torch_compile_learner`` (default False): compile at all.
- ``torch_compile_learner_what_to_compile``: ``"forward_train"`` (RLlib's
  default) compiles the container's ``forward_train``; ``"complete_update"``
  compiles ``forward_train`` and every module's loss as one graph, so the
  backward is one compiled graph too. Gradient clipping and the (fused)
  optimizer step stay eager in both: they are already one kernel each.
- ``torch_compile_learner_dynamo_backend`` (default ``"inductor"``) and
  ``torch_compile_learner_dynamo_mode`` (default None): passed to
  ``torch.compile``.

A machine that cannot compile (no C++ compiler for inductor, or a compile
that fails) trains eagerly after a one-line warning: compiling is an
optimisation, never a reason to lose a run.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger("marl")

WHAT_TO_COMPILE = ("forward_train", "complete_update")

#: The exceptions a failing compile raises on first call (inductor's
#: BackendCompilerFailed, a missing compiler, an unsupported op).
_COMPILE_FAILURES = (RuntimeError, OSError, AssertionError, NotImplementedError)


def missing_compiler_reason(backend: str) -> Optional[str]:
    """Why ``backend`` cannot compile on this machine, or None if it can.

    Inductor's CPU code generation needs a C++ compiler (``$CXX``, ``g++``,
    ``c++`` or ``clang++``); other backends are left to ``torch.compile``.
    """
    if backend != "inductor":
        return None
    candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if any(c and shutil.which(c) for c in candidates):
        return None
    return "no C++ compiler found ($CXX, g++, c++, clang++), which inductor needs on CPU"


class CompiledOrEager:
    """Calls a compiled version of ``fn``; on a failing compile, ``fn`` itself.

    The first call compiles (dynamo compiles lazily). If that raises one of
    the errors a broken toolchain raises, a warning names the reason and this
    and every later call run ``fn`` eagerly, so the caller's minibatch still
    happens, once (compiling runs before any weight or optimizer changes).
    """

    def __init__(self, fn: Callable, *, backend: str, mode: Optional[str], label: str) -> None:
        self.eager = fn
        self.label = label
        self.backend = backend
        reason = missing_compiler_reason(backend)
        self.compiled: Optional[Callable] = None
        self.fallback_reason: Optional[str] = reason
        if reason is None:
            self.compiled = torch.compile(fn, backend=backend, mode=mode)
        else:
            self._warn(reason)
        self._proven = False

    def _warn(self, reason: str) -> None:
        logger.warning("torch_compile_learner: training eagerly (%s could not be compiled: %s)",
                       self.label, reason)

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        if self._proven:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except _COMPILE_FAILURES as err:
            if not _is_compile_failure(err):
                raise
            compiled, self.compiled = self.compiled, None
            try:
                out = self.eager(*args, **kwargs)
            except BaseException:
                self.compiled = compiled  # the user's code fails eagerly too: not the compiler's fault
                raise
            self.fallback_reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            self._warn(self.fallback_reason)
            return out
        self._proven = True
        return out


def _is_compile_failure(err: BaseException) -> bool:
    """True for errors raised by dynamo/inductor themselves, not by the user's code."""
    module = type(err).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor")):
        return True
    return isinstance(err, OSError) or "compiler" in str(err).lower() and "inductor" in str(err).lower()
