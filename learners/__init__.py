"""Learners: turn sampled trajectories (or replayed transitions) into weight updates.

``TorchLearner`` owns the trainable ``MultiRLModule`` and its optimizers (one
per module, or one over all parameters when modules share parts or the
container holds non-policy modules); the algorithm learners add their losses:
PPO, MAPPO (centralised critic), VPG, DQN/IQL, VDN/QMIX (mixer), SAC/ISAC and
MASAC (centralised critic). ``ReplayBuffer`` / ``PrioritizedReplayBuffer`` serve
every off-policy learner.
"""
from learners.dqn_learner import DQNTorchLearner
from learners.learner import Learner, NonFiniteLossError, TorchLearner
from learners.learner_group import LearnerGroup
from learners.mappo_learner import MAPPOTorchLearner
from learners.masac_learner import MASACTorchLearner
from learners.ppo_learner import PPOTorchLearner
from learners.qmix_learner import QMIXTorchLearner
from learners.replay_buffer import PrioritizedReplayBuffer, ReplayBuffer
from learners.sac_learner import SACTorchLearner
from learners.vpg_learner import VPGTorchLearner

__all__ = [
    "DQNTorchLearner",
    "Learner",
    "LearnerGroup",
    "MAPPOTorchLearner",
    "MASACTorchLearner",
    "NonFiniteLossError",
    "PPOTorchLearner",
    "PrioritizedReplayBuffer",
    "QMIXTorchLearner",
    "ReplayBuffer",
    "SACTorchLearner",
    "TorchLearner",
    "VPGTorchLearner",
]
