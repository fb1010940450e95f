"""Learners: turn sampled trajectories into weight updates.

``TorchLearner`` owns the trainable ``MultiRLModule`` and its optimizers (one
per module, or one over all parameters when modules share parts);
``PPOTorchLearner`` and ``VPGTorchLearner`` add their losses.
"""
from learners.learner import Learner, NonFiniteLossError, TorchLearner
from learners.learner_group import LearnerGroup
from learners.ppo_learner import PPOTorchLearner
from learners.vpg_learner import VPGTorchLearner

__all__ = [
    "Learner",
    "LearnerGroup",
    "NonFiniteLossError",
    "PPOTorchLearner",
    "TorchLearner",
    "VPGTorchLearner",
]
