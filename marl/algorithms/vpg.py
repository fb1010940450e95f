"""VPG: vanilla policy gradient, for modules without a value function."""
from __future__ import annotations

from marl.algorithms.algorithm import Algorithm
from marl.algorithms.algorithm_config import AlgorithmConfig


class VPGConfig(AlgorithmConfig):
    """REINFORCE with standardised returns-to-go; one epoch per batch by default."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or VPG)
        self.num_epochs = 1
        self.minibatch_size = None
        self.lr = 1e-3
        self.grad_clip = 0.5

    def get_default_learner_class(self) -> type:
        from learners.vpg_learner import VPGTorchLearner

        return VPGTorchLearner


class VPG(Algorithm):
    config_class = VPGConfig
