"""SAC (and ISAC: SAC with the usual policy mapping) on DQN's off-policy loop and replay.

``SACConfig`` keeps RLlib 2.60's SAC names and defaults: ``twin_q``, ``tau``
5e-3 every update (``target_network_update_freq=0``), ``initial_alpha`` 1.0,
``target_entropy="auto"`` (``-dim(A)``), ``lr`` None (a number is refused:
the three optimizers below have their own), ``actor_lr`` 3e-5, ``critic_lr``
3e-4, ``alpha_lr`` 3e-4, ``train_batch_size_per_learner`` 256, ``n_step`` 1,
``num_steps_sampled_before_learning_starts`` 1500, prioritized replay of
capacity 1e6, ``min_sample_timesteps_per_iteration`` 100, ``min_time_s_per_iteration`` 1
(an iteration lasts at least a second, as in RLlib), ``grad_clip``
None. Sampling rounds, replay, ``training_intensity`` and target updates are
DQN's (``marl.algorithms.dqn``); DQN's exploration keys (``epsilon``,
``dueling``, ``double_q``) do not apply: SAC explores by sampling its policy.
Actions: the module acts in [-1, 1] and the env runners rescale to the env's
Box bounds (``normalize_actions``, RLlib's default True).
"""
from __future__ import annotations

from typing import Optional

from marl.algorithms.algorithm_config import _bad_value, check_bool, check_number
from marl.algorithms.dqn import DQN, DQNConfig
from marl.core.multi_rl_module import MultiRLModuleSpec

RLLIB_SAC_DEFAULTS = {
    "lr": None, "twin_q": True, "tau": 5e-3, "initial_alpha": 1.0, "target_entropy": "auto", "actor_lr": 3e-5,
    "critic_lr": 3e-4, "alpha_lr": 3e-4, "train_batch_size_per_learner": 256, "n_step": 1,
    "num_steps_sampled_before_learning_starts": 1500, "target_network_update_freq": 0, "grad_clip": None,
    "replay_buffer_config": {"type": "PrioritizedEpisodeReplayBuffer", "capacity": int(1e6), "alpha": 0.6,
                             "beta": 0.4},
    "training_intensity": None,
}


class SACConfig(DQNConfig):
    """SAC settings with RLlib's names, meanings and defaults (see the module docstring)."""

    _algo_training_keys = DQNConfig._algo_training_keys + (
        "twin_q", "initial_alpha", "target_entropy", "actor_lr", "critic_lr", "alpha_lr")

    def __init__(self, algo_class: Optional[type] = None) -> None:
        super().__init__(algo_class=algo_class or SAC)
        self.min_sample_timesteps_per_iteration = 100
        self.min_time_s_per_iteration = 1
        for key, value in RLLIB_SAC_DEFAULTS.items():
            setattr(self, key, dict(value) if isinstance(value, dict) else value)

    def get_default_learner_class(self) -> type:
        from learners.sac_learner import SACTorchLearner

        return SACTorchLearner

    def get_default_rl_module_class(self) -> type:
        from marl.models.default_sac_rl_module import DefaultSACTorchRLModule

        return DefaultSACTorchRLModule

    def _validate_lr(self) -> None:
        """RLlib's SAC takes ``lr=None`` and refuses a number: its three optimizers have their own."""
        if self.lr is not None:
            raise _bad_value("lr", self.lr, "None for SAC", "set actor_lr, critic_lr and alpha_lr instead")

    def validate(self) -> None:
        super().validate()
        check_bool("twin_q", self.twin_q)
        check_number("initial_alpha", self.initial_alpha, low=0.0, low_open=True)
        for key in ("actor_lr", "critic_lr", "alpha_lr"):
            check_number(key, getattr(self, key), low=0.0, low_open=True)
        if self.target_entropy != "auto":
            check_number("target_entropy", self.target_entropy, low=-1e9,
                         hint="'auto' is -dim(A), the usual choice")


class SAC(DQN):
    """DQN's loop with SAC's module and learner (targets move by ``tau`` every update)."""

    config_class = SACConfig

    def _complete_module_spec(self, spec: MultiRLModuleSpec) -> MultiRLModuleSpec:
        """Hand the default SAC modules ``twin_q`` and ``initial_alpha``."""
        from marl.models.default_model_config import model_config_dict
        from marl.models.default_sac_rl_module import DefaultSACTorchRLModule

        for sub in spec.rl_module_specs.values():
            if isinstance(sub.module_class, type) and issubclass(sub.module_class, DefaultSACTorchRLModule):
                sub.model_config = {**model_config_dict(sub.model_config), "twin_q": self.config.twin_q,
                                    "initial_alpha": self.config.initial_alpha}
        return spec
