"""PPO: clipped-surrogate policy optimisation (the default algorithm)."""
from __future__ import annotations

from marl.algorithms.algorithm import Algorithm
from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError


class PPOConfig(AlgorithmConfig):
    """PPO settings; ``training()`` adds the PPO keys below to the common ones."""

    _algo_training_keys = (
        "lambda_", "clip_param", "vf_clip_param", "vf_loss_coeff", "kl_coeff",
        "kl_target", "use_kl_loss", "use_gae",
    )

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or PPO)
        self.lambda_ = 0.95
        self.clip_param = 0.2
        self.vf_clip_param = 10.0
        self.vf_loss_coeff = 0.5
        self.kl_coeff = 0.2
        self.kl_target = 0.01
        self.use_kl_loss = True
        self.use_gae = True
        self.entropy_coeff = 0.0

    def get_default_learner_class(self) -> type:
        from learners.ppo_learner import PPOTorchLearner

        return PPOTorchLearner

    def validate(self) -> None:
        super().validate()
        if not self.use_gae:
            raise ConfigError("use_gae=False is not implemented; PPO here always uses GAE")
        if not (0.0 <= self.lambda_ <= 1.0):
            raise ConfigError(f"lambda_={self.lambda_!r}: expected a number in [0, 1]")
        if self.clip_param <= 0:
            raise ConfigError(f"clip_param={self.clip_param!r}: expected a positive number")


class PPO(Algorithm):
    config_class = PPOConfig
