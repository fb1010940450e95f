"""The default behaviour-cloning module: encoder + policy head, no value branch."""
from __future__ import annotations

from marl.models.default_module_base import DefaultTorchRLModuleBase


class DefaultBCTorchRLModule(DefaultTorchRLModuleBase):
    """Default module for BC (and any algorithm that needs only a policy).

    Built from a `DefaultModelConfig` (or dict): MLP / CNN encoder, optional
    LSTM, policy head. Every forward pass returns
    `Columns.ACTION_DIST_INPUTS` (+ `Columns.STATE_OUT` with an LSTM);
    `_forward_train` is `_forward` with gradients.
    """
