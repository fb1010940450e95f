"""Algorithms: configs and the driver that wires envs, env runners and learners."""
from marl.algorithms.algorithm import Algorithm
from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError
from marl.algorithms.mappo import MAPPO, MAPPOConfig
from marl.algorithms.ppo import PPO, PPOConfig
from marl.algorithms.vpg import VPG, VPGConfig

__all__ = ["Algorithm", "AlgorithmConfig", "ConfigError", "MAPPO", "MAPPOConfig", "PPO", "PPOConfig", "VPG",
           "VPGConfig"]
