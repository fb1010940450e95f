"""The default policy network without a value branch: an actor whose values live elsewhere.

MAPPO's policies are valued by the centralised critic, so a value head (or,
with ``vf_share_layers=False``, a whole value encoder) on each policy would
be built, run every minibatch and never trained. This module is the default
PPO module's policy branch alone: the same encoder, heads, LSTM and action
masking, and the same checkpoint layout minus ``vf`` / ``value_encoder``.
"""
from __future__ import annotations

from typing import Any, Dict

from marl.models.default_module_base import DefaultTorchRLModuleBase


class DefaultActorTorchRLModule(DefaultTorchRLModuleBase):
    """Policy outputs only, in every forward pass (``forward_train`` included)."""

    def _forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        out, _ = self._policy_outputs(batch)
        return out
