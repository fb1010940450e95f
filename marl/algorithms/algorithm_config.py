"""``AlgorithmConfig``: the fluent builder every algorithm is configured with.

Each method sets a group of options and returns the config, RLlib-style. A
keyword a method does not know raises at once, naming the key and the valid
ones, so a typo never silently trains with a default.
"""
from __future__ import annotations

import copy
import difflib
from typing import Any, Callable, Collection, Dict, Optional, Union

from marl.core.constants import DEFAULT_MODULE_ID

_UNSET = object()


class ConfigError(ValueError):
    """An algorithm config value is unknown or inconsistent."""


def _unknown_key_error(method: str, key: str, valid: Collection[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"{method}() got an unknown key {key!r}{hint}; valid keys: {sorted(valid)}"
    )


class AlgorithmConfig:
    """Settings of an experiment: env, env runners, modules, training, learners."""

    #: The algorithm class ``build()`` creates (set by subclasses).
    algo_class: Optional[type] = None

    #: Keys ``training()`` accepts beyond the common ones (subclasses extend).
    _algo_training_keys: tuple = ()

    def __init__(self, algo_class: Optional[type] = None) -> None:
        if algo_class is not None:
            self.algo_class = algo_class
        # environment
        self.env: Any = None
        self.env_config: Dict[str, Any] = {}
        # env runners
        self.num_env_runners = 0
        self.num_envs_per_env_runner = 1
        self.rollout_fragment_length: Union[int, str] = "auto"
        self.env_to_module_connector: Optional[Callable] = None
        self.explore = True
        # RLlib's action handling: module actions of a bounded Box live in [-1, 1].
        self.normalize_actions = True
        self.clip_actions = False
        # multi-agent
        self.policies: Optional[Collection[str]] = None
        self.policy_mapping_fn: Optional[Callable] = None
        self.policies_to_train: Optional[Union[Collection[str], Callable]] = None
        # rl module
        self.rl_module_spec: Any = None
        self.model_config: Any = None
        # training (common)
        # RLlib's AlgorithmConfig defaults (algorithms override them as RLlib's do).
        self.lr = 1e-3
        self.gamma = 0.99
        self.train_batch_size_per_learner = 4000
        self.minibatch_size: Optional[int] = None
        self.num_epochs = 1
        self.shuffle_batch_per_epoch = False
        self.grad_clip: Optional[float] = None
        self.grad_clip_by = "global_norm"
        self.learner_class: Optional[type] = None
        self.normalize_advantages = True
        self.entropy_coeff = 0.0
        # learners
        self.num_learners = 0
        self.shared_optimizer: Optional[bool] = None
        # evaluation
        self.evaluation_interval: Optional[int] = None
        self.evaluation_duration = 10
        self.evaluation_duration_unit = "episodes"
        self.evaluation_explore = False
        # reporting
        self.metrics_num_episodes_for_smoothing = 100
        # debugging
        self.seed: Optional[int] = None
        self.log_level = "WARN"

    # ---------------------------------------------------------------- helpers
    def _set(self, method: str, allowed: Collection[str], values: Dict[str, Any]) -> "AlgorithmConfig":
        for key, value in values.items():
            if key not in allowed:
                raise _unknown_key_error(method, key, allowed)
            if value is not _UNSET:
                setattr(self, key, value)
        return self

    def copy(self) -> "AlgorithmConfig":
        return copy.copy(self)

    # ----------------------------------------------------------- config groups
    def api_stack(
        self, enable_rl_module_and_learner: bool = True, enable_env_runner_and_connector_v2: bool = True
    ) -> "AlgorithmConfig":
        """Accepted for RLlib compatibility: only the new API stack exists here."""
        if not (enable_rl_module_and_learner and enable_env_runner_and_connector_v2):
            raise ConfigError(
                "only RLlib's new API stack (RLModule + Learner + EnvRunner) is implemented; "
                "api_stack(...) flags must be True"
            )
        return self

    def framework(self, framework: str = "torch", **kwargs: Any) -> "AlgorithmConfig":
        if framework != "torch":
            raise ConfigError(f"framework {framework!r} is not supported; only 'torch' is")
        return self

    def environment(self, env: Any = _UNSET, *, env_config: Any = _UNSET, **kwargs: Any) -> "AlgorithmConfig":
        """The env: a gymnasium id, a PettingZoo module path or registry name, a class or a creator."""
        self._set("environment", {"env", "env_config"}, {"env": env, "env_config": env_config, **kwargs})
        if self.env_config is None:
            self.env_config = {}
        return self

    def env_runners(self, **kwargs: Any) -> "AlgorithmConfig":
        """num_env_runners, num_envs_per_env_runner, rollout_fragment_length, env_to_module_connector,
        explore, normalize_actions, clip_actions.

        ``normalize_actions`` (RLlib's default True): a bounded float Box action
        space is seen by the module as [-1, 1] and rescaled to [low, high] on the
        way to the env. ``clip_actions`` (default False): clip to the bounds
        without rescaling (only consulted when normalize_actions is off).
        """
        return self._set(
            "env_runners",
            {"num_env_runners", "num_envs_per_env_runner", "rollout_fragment_length",
             "env_to_module_connector", "explore", "normalize_actions", "clip_actions"},
            kwargs,
        )

    def multi_agent(self, **kwargs: Any) -> "AlgorithmConfig":
        """policies, policy_mapping_fn(agent_id, episode, **kw) -> module id, policies_to_train."""
        self._set("multi_agent", {"policies", "policy_mapping_fn", "policies_to_train"}, kwargs)
        if isinstance(self.policies, dict):
            self.policies = set(self.policies)
        return self

    def rl_module(self, **kwargs: Any) -> "AlgorithmConfig":
        """rl_module_spec (RLModuleSpec or MultiRLModuleSpec) and model_config."""
        return self._set("rl_module", {"rl_module_spec", "model_config"}, kwargs)

    def training(self, **kwargs: Any) -> "AlgorithmConfig":
        common = {
            "lr", "gamma", "train_batch_size_per_learner", "minibatch_size", "num_epochs",
            "grad_clip", "grad_clip_by", "learner_class", "normalize_advantages", "entropy_coeff",
            "shuffle_batch_per_epoch",
        }
        if "train_batch_size" in kwargs:  # RLlib's old name
            kwargs["train_batch_size_per_learner"] = kwargs.pop("train_batch_size")
        return self._set("training", common | set(self._algo_training_keys), kwargs)

    def learners(self, **kwargs: Any) -> "AlgorithmConfig":
        """num_learners (0: local), shared_optimizer (None auto, True, False)."""
        return self._set("learners", {"num_learners", "shared_optimizer"}, kwargs)

    def evaluation(self, **kwargs: Any) -> "AlgorithmConfig":
        return self._set(
            "evaluation",
            {"evaluation_interval", "evaluation_duration", "evaluation_duration_unit", "evaluation_explore"},
            kwargs,
        )

    def reporting(self, **kwargs: Any) -> "AlgorithmConfig":
        """metrics_num_episodes_for_smoothing (RLlib's default 100).

        As in RLlib 2.60, ``env_runners/episode_return_mean`` and its siblings
        average the episodes completed in the current iteration, at most this
        many of the latest (split evenly over the env runners); marl's
        ``env_runners/smoothed_*`` keys average the latest this-many episodes
        across iterations.
        """
        return self._set("reporting", {"metrics_num_episodes_for_smoothing"}, kwargs)

    def debugging(self, **kwargs: Any) -> "AlgorithmConfig":
        return self._set("debugging", {"seed", "log_level"}, kwargs)

    def update_from_dict(self, values: Dict[str, Any]) -> "AlgorithmConfig":
        """Set flat ``{key: value}`` pairs (what command lines and sweeps pass)."""
        groups = {
            "environment": self.environment, "env_runners": self.env_runners,
            "multi_agent": self.multi_agent, "rl_module": self.rl_module,
            "training": self.training, "learners": self.learners,
            "evaluation": self.evaluation, "reporting": self.reporting, "debugging": self.debugging,
        }
        for key, value in values.items():
            for method in groups.values():
                try:
                    method(**{key: value})
                    break
                except ConfigError:
                    continue
            else:
                raise _unknown_key_error("update_from_dict", key, self.known_keys())
        return self

    def known_keys(self) -> list:
        return sorted(k for k in vars(self) if not k.startswith("_"))

    # -------------------------------------------------------------- validation
    def get_default_learner_class(self) -> type:
        raise NotImplementedError(f"{type(self).__name__} defines no default learner")

    def get_default_rl_module_class(self) -> type:
        from marl.models import DefaultPPOTorchRLModule

        return DefaultPPOTorchRLModule

    def get_learner_class(self) -> type:
        return self.learner_class or self.get_default_learner_class()

    def validate(self) -> None:
        """Check the config as a whole; raises ``ConfigError`` naming the problem."""
        if self.env is None:
            raise ConfigError("no environment: call config.environment(env=...)")
        for key in ("num_env_runners", "num_envs_per_env_runner", "train_batch_size_per_learner", "num_epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < (0 if key == "num_env_runners" else 1):
                raise ConfigError(f"{key}={value!r}: expected a positive integer")
        if self.minibatch_size is not None and (not isinstance(self.minibatch_size, int) or self.minibatch_size < 1):
            raise ConfigError(f"minibatch_size={self.minibatch_size!r}: expected a positive integer or None")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r}: expected a positive number")
        if not (0.0 <= self.gamma <= 1.0):
            raise ConfigError(f"gamma={self.gamma!r}: expected a number in [0, 1]")
        if self.grad_clip_by not in ("global_norm", "norm", "value"):
            raise ConfigError(f"grad_clip_by={self.grad_clip_by!r}: expected 'global_norm', 'norm' or 'value'")
        if self.policies is not None and self.policy_mapping_fn is None and set(self.policies) != {DEFAULT_MODULE_ID}:
            raise ConfigError(
                f"policies {sorted(self.policies)} are set but no policy_mapping_fn: pass "
                "multi_agent(policy_mapping_fn=lambda agent_id, episode, **kw: ...) so every "
                "agent is mapped to one of them"
            )
        if not self.explore:
            raise ConfigError(
                "explore=False: PPO and VPG learn on-policy from sampled actions and their "
                "log-probabilities; keep explore=True (evaluation() runs greedily by itself)"
            )
        window = self.metrics_num_episodes_for_smoothing
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"metrics_num_episodes_for_smoothing={window!r}: expected a positive integer")
        if str(self.log_level).upper() not in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level={self.log_level!r}: expected DEBUG, INFO, WARN, ERROR or CRITICAL")
        if self.evaluation_duration_unit not in ("episodes", "timesteps"):
            raise ConfigError(
                f"evaluation_duration_unit={self.evaluation_duration_unit!r}: expected 'episodes' or 'timesteps'"
            )

    def build(self, **kwargs: Any):
        """Validate and build the algorithm (``build_algo`` is an alias)."""
        if self.algo_class is None:
            raise ConfigError(
                f"{type(self).__name__} has no algorithm class; use PPOConfig(), VPGConfig(), ..."
            )
        self.validate()
        return self.algo_class(config=self, **kwargs)

    build_algo = build

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
