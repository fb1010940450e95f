"""The torch flavour of ``RLModule``: what users subclass."""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from marl.core.apis import InferenceOnlyAPI
from marl.core.rl_module import RLModule


class TorchRLModule(RLModule, nn.Module):
    """An ``RLModule`` that is a ``torch.nn.Module``.

    Exploration and inference passes run under ``torch.no_grad()`` by default
    because their outputs never feed a loss; training passes keep gradients.
    ``forward()`` (what ``module(batch)`` calls) is the training pass, so the
    module composes with torch tooling such as DDP.
    """

    framework = "torch"

    def _init_framework(self) -> None:
        nn.Module.__init__(self)

    def _forward_inference(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch, **kwargs)

    def _forward_exploration(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch, **kwargs)

    def forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.forward_train(batch, **kwargs)

    # ------------------------------------------------------------------ state
    def _non_inference_prefixes(self) -> List[str]:
        if isinstance(self, InferenceOnlyAPI):
            return [f"{name}." for name in self.get_non_inference_attributes()]
        return []

    def get_state(self, inference_only: bool = False) -> Dict[str, torch.Tensor]:
        """Weights as a flat ``{name: tensor}`` dict (detached copies)."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if inference_only:
            prefixes = self._non_inference_prefixes()
            state = {k: v for k, v in state.items() if not k.startswith(tuple(prefixes))}
        return state

    def set_state(self, state: Dict[str, Any]) -> None:
        """Load weights strictly; errors name the parameter and both shapes.

        An inference-only module accepts a full module's state and skips the
        training-only parameters it never built.
        """
        own = self.state_dict()
        incoming = {k: torch.as_tensor(v) for k, v in state.items()}
        if self.inference_only:
            prefixes = tuple(self._non_inference_prefixes())
            if prefixes:
                incoming = {k: v for k, v in incoming.items() if not k.startswith(prefixes)}
        missing = sorted(set(own) - set(incoming))
        unexpected = sorted(set(incoming) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}: state does not match the module's parameters; "
                f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
        mismatched = [
            f"parameter {name!r} has shape {tuple(own[name].shape)} in the module but "
            f"{tuple(torch.as_tensor(incoming[name]).shape)} in the state being loaded"
            for name in own
            if tuple(torch.as_tensor(incoming[name]).shape) != tuple(own[name].shape)
        ]
        if mismatched:
            raise ValueError(
                f"{type(self).__name__}: " + "; ".join(mismatched[:4])
                + ("; ..." if len(mismatched) > 4 else "")
                + " (was it saved from a different model_config?)"
            )
        # The names and shapes were checked above, so this is ``load_state_dict(strict=True)``
        # without its per-module walk: env runners load weights before every sampling call.
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_(incoming[name])
