"""Algorithms: configs and the driver that wires envs, env runners and learners."""
from marl.algorithms.algorithm import Algorithm
from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError
from marl.algorithms.dqn import DQN, DQNConfig
from marl.algorithms.mappo import MAPPO, MAPPOConfig
from marl.algorithms.masac import MASAC, MASACConfig
from marl.algorithms.ppo import PPO, PPOConfig
from marl.algorithms.qmix import QMIX, QMIXConfig
from marl.algorithms.sac import SAC, SACConfig
from marl.algorithms.vpg import VPG, VPGConfig

__all__ = ["Algorithm", "AlgorithmConfig", "ConfigError", "DQN", "DQNConfig", "MAPPO", "MASAC", "MASACConfig", "MAPPOConfig", "PPO", "PPOConfig", "QMIX", "QMIXConfig", "SAC", "SACConfig", "VPG",
           "VPGConfig"]
