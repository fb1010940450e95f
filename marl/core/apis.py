"""Capability mix-ins that algorithms require of the modules they train.

Learners check for these with ``isinstance`` (see
``Learner.rl_module_required_apis()``), so a custom module states what it can
do by inheriting from them rather than by duck typing that fails mid-training.
"""
from __future__ import annotations

import abc
from typing import Any, Dict, List, Optional, Tuple

import torch


class ValueFunctionAPI(abc.ABC):
    """A module that predicts state values, as PPO's GAE and value loss need."""

    @abc.abstractmethod
    def compute_values(
        self, batch: Dict[str, Any], embeddings: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Return value estimates of shape ``[B]`` (or ``[B, T]`` for sequences).

        ``embeddings`` lets a module reuse an encoder pass it already made.
        """


class InferenceOnlyAPI(abc.ABC):
    """A module that can drop its training-only parts when ``inference_only``."""

    @abc.abstractmethod
    def get_non_inference_attributes(self) -> List[str]:
        """Attribute names (e.g. ``["vf", "value_encoder"]``) that inference-only
        copies do not build, so weight syncs can skip their parameters."""


class TargetNetworkAPI(abc.ABC):
    """A module with target networks (DQN/SAC-style algorithms)."""

    @abc.abstractmethod
    def make_target_networks(self) -> None:
        """Create the target copies of the networks that need them."""

    @abc.abstractmethod
    def get_target_network_pairs(self) -> List[Tuple[torch.nn.Module, torch.nn.Module]]:
        """Pairs of ``(main_net, target_net)`` that the learner syncs."""

    @abc.abstractmethod
    def forward_target(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        """Forward pass through the target networks."""


class QNetAPI(abc.ABC):
    """A module with Q-value heads (DQN-style algorithms)."""

    @abc.abstractmethod
    def compute_q_values(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """Return Q-values for every action of the batch's observations."""
