"""PPO: clipped-surrogate policy optimisation (the default algorithm)."""
from __future__ import annotations

from marl.algorithms.algorithm import Algorithm
from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError, check_bool, check_number


#: RLlib 2.60's PPOConfig training defaults (new API stack).
RLLIB_PPO_TRAINING_DEFAULTS = {
    "lr": 5e-5, "gamma": 0.99, "train_batch_size_per_learner": 4000, "num_epochs": 30, "minibatch_size": 128,
    "shuffle_batch_per_epoch": True, "lambda_": 1.0, "use_kl_loss": True, "kl_coeff": 0.2, "kl_target": 0.01,
    "vf_loss_coeff": 1.0, "entropy_coeff": 0.0, "clip_param": 0.3, "vf_clip_param": 10.0, "grad_clip": None,
    "grad_clip_by": "global_norm",
}

#: marl's own PPO keys (not RLlib's), off by default. ``value_clip_param``:
#: PPO2-style clipping of value predictions. ``advantage_stats_include_bootstrap_steps``:
#: standardise advantages with statistics that also cover the artificial
#: bootstrap step RLlib appends to every segment
#: (``learners.advantages.bootstrap_step_advantages``); off, RLlib's update is
#: matched up to that; on, to float precision (scripts/parity_update.py).
#: ``minibatches_include_bootstrap_steps`` (on): RLlib's train batch holds that
#: artificial step too, masked out of the loss but taking a row of its
#: minibatch, so an epoch of ``minibatch_size`` rows has RLlib's number of
#: gradient steps (about 5% more than real steps alone while CartPole episodes
#: are short); off, minibatches hold ``minibatch_size`` real steps.
MARL_PPO_TRAINING_DEFAULTS = {"value_clip_param": None, "advantage_stats_include_bootstrap_steps": False,
                              "minibatches_include_bootstrap_steps": True}


class PPOConfig(AlgorithmConfig):
    """PPO settings, with RLlib's names, meanings and defaults.

    Every key below is RLlib's (2.60, new API stack) and starts at RLlib's
    value, so an RLlib user's config trains the same here. ``vf_clip_param``
    clamps the squared value error, as RLlib does (bounding the value loss,
    which with shared layers keeps big returns from drowning the policy
    gradient). ``value_clip_param`` (marl's own, off by default) is the
    PPO2/CleanRL trust region on value predictions instead. Other defaults
    are offered as named presets: ``PPOConfig().preset("cleanrl")``.
    """

    _algo_training_keys = (
        "lambda_", "clip_param", "vf_clip_param", "vf_loss_coeff", "kl_coeff",
        "kl_target", "use_kl_loss", "use_gae", "use_critic", "value_clip_param",
        "advantage_stats_include_bootstrap_steps", "minibatches_include_bootstrap_steps",
    )

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or PPO)
        self.rollout_fragment_length = "auto"
        self.use_critic = True
        self.use_gae = True
        self.value_clip_param: float | None = None
        for key, value in {**RLLIB_PPO_TRAINING_DEFAULTS, **MARL_PPO_TRAINING_DEFAULTS}.items():
            setattr(self, key, value)

    #: Named alternatives to RLlib's defaults; ``preset(name)`` applies one.
    PRESETS = {
        # RLlib's own defaults (what PPOConfig() starts with).
        "rllib": {
            "training": {**RLLIB_PPO_TRAINING_DEFAULTS, **MARL_PPO_TRAINING_DEFAULTS, "shuffle_first_epoch": False},
            "env_runners": {"num_envs_per_env_runner": 1},
            "model_config": None,
        },
        # CleanRL's ppo.py: separate 64x64 tanh actor and critic, GAE 0.95,
        # 4 epochs over 4 minibatches of a 4 x 128-step batch, PPO2 value
        # clipping, entropy bonus, gradient-norm clipping, no KL term.
        # CleanRL's value loss is 0.5 * vf_coef * error^2 with vf_coef 0.5,
        # hence vf_loss_coeff 0.25. Not reproduced: orthogonal init, Adam
        # eps=1e-5 and learning-rate annealing.
        "cleanrl": {
            "training": {
                "lr": 2.5e-4, "gamma": 0.99, "lambda_": 0.95, "train_batch_size_per_learner": 512,
                "minibatch_size": 128, "num_epochs": 4, "clip_param": 0.2, "value_clip_param": 0.2,
                "vf_clip_param": None, "vf_loss_coeff": 0.25, "entropy_coeff": 0.01, "grad_clip": 0.5,
                "use_kl_loss": False, "minibatches_include_bootstrap_steps": False, "shuffle_first_epoch": True,
            },
            "env_runners": {"num_envs_per_env_runner": 4},
            "model_config": {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "vf_share_layers": False},
        },
    }

    def preset(self, name: str) -> "PPOConfig":
        """Apply a named set of defaults (``"rllib"``, ``"cleanrl"``); later calls override it.

        The preset's ``model_config`` replaces the config's model config, so
        set your own ``rl_module(model_config=...)`` after the preset.
        """
        if name not in self.PRESETS:
            raise ConfigError(f"unknown PPO preset {name!r}; valid presets: {sorted(self.PRESETS)}")
        values = self.PRESETS[name]
        self.training(**values.get("training", {}))
        self.env_runners(**values.get("env_runners", {}))
        if "model_config" in values:
            from marl.models import DefaultModelConfig

            model = values["model_config"]
            self.rl_module(model_config=None if model is None else DefaultModelConfig(**model))
        return self

    def get_default_learner_class(self) -> type:
        from learners.ppo_learner import PPOTorchLearner

        return PPOTorchLearner

    def validate(self) -> None:
        """Common checks, then PPO's keys with RLlib's meaning (``kl_coeff=0.0``:
        no KL penalty; ``vf_clip_param=None`` or ``inf``: no clamping)."""
        super().validate()
        for key in ("use_gae", "use_critic", "use_kl_loss", "advantage_stats_include_bootstrap_steps",
                    "minibatches_include_bootstrap_steps"):
            check_bool(key, getattr(self, key))
        if not self.use_gae:
            raise ConfigError("use_gae=False is not implemented; PPO here always uses GAE")
        if not self.use_critic:
            raise ConfigError("use_critic=False is not implemented; PPO here always trains a value function")
        check_number("lambda_", self.lambda_, low=0.0, high=1.0)
        check_number("clip_param", self.clip_param, low=0.0, low_open=True, allow_inf=True,
                     hint="0 would stop the policy from changing")
        for key in ("vf_clip_param", "value_clip_param"):
            check_number(key, getattr(self, key), low=0.0, low_open=True, none="no clipping", allow_inf=True)
        check_number("vf_loss_coeff", self.vf_loss_coeff, low=0.0,
                     hint="a negative coefficient would make the value function worse")
        check_number("kl_coeff", self.kl_coeff, low=0.0, hint="0.0 turns the KL penalty off")
        check_number("kl_target", self.kl_target, low=0.0, low_open=True,
                     hint="with 0 the adaptive KL coefficient would grow without bound")


class PPO(Algorithm):
    config_class = PPOConfig
