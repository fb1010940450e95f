"""``AlgorithmConfig``: the fluent builder every algorithm is configured with.

Each method sets a group of options and returns the config, RLlib-style. A
keyword a method does not know raises at once, naming the key and the valid
ones, so a typo never silently trains with a default.
"""
from __future__ import annotations

import copy
import difflib
import math
import numbers
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Union

import numpy as np

from marl.core.constants import DEFAULT_MODULE_ID

_UNSET = object()


class ConfigError(ValueError):
    """An algorithm config value is unknown or inconsistent."""


def _backend_name(value: Any) -> Any:
    """``"process"`` (API.md's spelling) is ``"processes"``."""
    return "processes" if value == "process" else value


def _unknown_key_error(method: str, key: str, valid: Collection[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"{method}() got an unknown key {key!r}{hint}; valid keys: {sorted(valid)}"
    )


def _bad_value(key: str, value: Any, expected: str, hint: str = "") -> ConfigError:
    return ConfigError(f"{key}={value!r}: expected {expected}" + (f" ({hint})" if hint else ""))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def check_int(key: str, value: Any, minimum: int, *, none: Optional[str] = None, hint: str = "") -> None:
    """``value`` must be an int >= ``minimum`` (or None, if ``none`` says what None means)."""
    if value is None and none is not None:
        return
    if not (_is_int(value) and value >= minimum):
        expected = f"an int >= {minimum}"
        raise _bad_value(key, value, f"None ({none}) or {expected}" if none is not None else expected, hint)


def check_number(
    key: str,
    value: Any,
    *,
    low: float,
    high: Optional[float] = None,
    low_open: bool = False,
    none: Optional[str] = None,
    allow_inf: bool = False,
    hint: str = "",
) -> None:
    """``value`` must be a real number in the range (bools and NaN never are).

    ``low_open`` excludes ``low``; ``allow_inf`` admits +inf (e.g. "no clipping");
    ``none`` (what None means) admits None.
    """
    if value is None and none is not None:
        return
    ok = _is_real(value) and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value <= high
    if ok and math.isinf(value) and not allow_inf:
        ok = False
    if ok:
        return
    if high is not None:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low == 0 and low_open:
        expected = "a positive number"
    else:
        expected = f"a number {'>' if low_open else '>='} {low:g}"
    if none is not None:
        expected = f"None ({none}) or {expected}"
    if isinstance(value, (list, tuple)) and not hint:
        hint = "RLlib's [[timestep, value], ...] schedules are not implemented in marl; pass one number"
    raise _bad_value(key, value, expected, hint)


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):  # numpy's bool is no subclass of bool
        raise _bad_value(key, value, "True or False")


def check_choice(key: str, value: Any, choices: Collection[Any]) -> None:
    if not any(value == c and type(value) is type(c) for c in choices):
        raise _bad_value(key, value, "one of " + ", ".join(repr(c) for c in choices))


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
        self.sample_timeout_s = 60.0
        self.nonfinite_env_values = "raise"
        self.overlap_sampling = False
        # multi-agent
        self.policies: Optional[Collection[str]] = None
        self.policy_mapping_fn: Optional[Callable] = None
        self.policies_to_train: Optional[Union[Collection[str], Callable]] = None
        self.add_agent_id = False
        self.pad_agent_spaces = False
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
        # marl's own: RLlib walks the first epoch in sampled order and reshuffles
        # from the second; True shuffles the first too (CleanRL).
        self.shuffle_first_epoch = False
        self.grad_clip: Optional[float] = None
        self.grad_clip_by = "global_norm"
        self.learner_class: Optional[type] = None
        self.normalize_advantages = True
        self.entropy_coeff = 0.0
        # learners
        self.num_learners = 0
        self.env_runner_backend = "auto"
        self.num_cpus_per_env_runner: float = 1
        self.num_cpus_per_learner: Union[str, float] = "auto"
        self.num_gpus_per_learner: float = 0
        self.shared_optimizer: Optional[bool] = None
        self.learner_backend = "auto"
        self.learner_device: Optional[str] = None
        # framework (RLlib's names and defaults)
        self.torch_compile_learner = False
        self.torch_compile_learner_what_to_compile = "forward_train"
        self.torch_compile_learner_dynamo_backend = "inductor"
        self.torch_compile_learner_dynamo_mode: Optional[str] = None
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
        """torch_compile_learner (default False), torch_compile_learner_what_to_compile
        ("forward_train", RLlib's default, or "complete_update"),
        torch_compile_learner_dynamo_backend ("inductor"), torch_compile_learner_dynamo_mode (None).

        ``"complete_update"`` compiles the forward pass and every module's loss
        as one graph (its backward compiled with it); clipping and the fused
        optimizer step stay eager. Each distinct minibatch shape compiles once
        (a smaller last minibatch adds one dynamic-shape graph), which costs
        seconds at the first update. Where nothing can be compiled (no C++
        compiler for inductor) training runs eagerly after a one-line warning.
        """
        if framework != "torch":
            raise ConfigError(f"framework {framework!r} is not supported; only 'torch' is")
        return self._set(
            "framework",
            {"torch_compile_learner", "torch_compile_learner_what_to_compile",
             "torch_compile_learner_dynamo_backend", "torch_compile_learner_dynamo_mode"},
            kwargs,
        )

    def environment(self, env: Any = _UNSET, *, env_config: Any = _UNSET, **kwargs: Any) -> "AlgorithmConfig":
        """The env: a gymnasium id, a PettingZoo module path or registry name, a class or a creator."""
        self._set("environment", {"env", "env_config"}, {"env": env, "env_config": env_config, **kwargs})
        if self.env_config is None:
            self.env_config = {}
        return self

    def env_runners(self, **kwargs: Any) -> "AlgorithmConfig":
        """num_env_runners, num_envs_per_env_runner, rollout_fragment_length, env_to_module_connector,
        explore, normalize_actions, clip_actions, sample_timeout_s, nonfinite_env_values.

        ``normalize_actions`` (RLlib's default True): a bounded float Box action
        space is seen by the module as [-1, 1] and rescaled to [low, high] on the
        way to the env. ``clip_actions`` (default False): clip to the bounds
        without rescaling (only consulted when normalize_actions is off).

        ``sample_timeout_s`` (RLlib's default 60.0; None: no limit): an env whose
        ``step()`` or ``reset()`` is still running after this long counts as
        hung; its episode is dropped and the env recreated (in a worker whose
        env hangs outside Python, the worker is restarted). Counted in
        ``env_runners/num_env_hangs``.

        ``nonfinite_env_values`` ("raise" by default, or "drop_episode"): what a
        NaN/inf observation or reward does; the error names env, agent and step.

        ``overlap_sampling`` (marl's own, default False; needs
        ``num_env_runners >= 1``): the worker processes sample the next batch
        while the learner trains on this one. The batch trained on in iteration
        k+1 is then sampled with the weights iteration k started from (one
        update behind the learner; PPO's ratio uses the recorded behaviour
        log-probabilities), and a checkpoint does not store the batch sampled
        ahead (``env_runner/state.json`` says the resume is not exact). The
        learner's torch threads are lowered to the cores the runners leave
        (``os.cpu_count() - num_env_runners``, at least 1); call
        ``torch.set_num_threads`` after ``build()`` to choose otherwise.

        ``backend`` (marl's own, default "auto"): where ``num_env_runners >= 1``
        runners live: "processes" (spawned on this machine) or "ray" (Ray actors
        with ``num_cpus_per_env_runner`` CPUs each, RLlib's default 1, on the
        cluster ``ray.init()`` connected to); "auto" is Ray when this process
        called ``ray.init()``, else processes. Both restart a dead runner and
        count it in ``env_runners/num_env_runner_restarts``.
        """
        if "backend" in kwargs:
            kwargs["env_runner_backend"] = _backend_name(kwargs.pop("backend"))
        return self._set(
            "env_runners",
            {"num_env_runners", "num_envs_per_env_runner", "rollout_fragment_length",
             "env_to_module_connector", "explore", "normalize_actions", "clip_actions",
             "sample_timeout_s", "nonfinite_env_values", "overlap_sampling",
             "env_runner_backend", "num_cpus_per_env_runner"},
            kwargs,
        )

    def multi_agent(self, **kwargs: Any) -> "AlgorithmConfig":
        """policies, policy_mapping_fn(agent_id, episode, **kw) -> module id, policies_to_train,
        add_agent_id, pad_agent_spaces (marl's own, both default False).

        ``add_agent_id=True`` appends a one-hot of the agent's index in
        ``possible_agents`` to its observation (EPyMARL's ``obs_agent_id``), so
        one shared policy can act differently per agent. ``pad_agent_spaces=True``
        lets agents with different spaces share a module: 1-D observations are
        zero-padded to the widest of the agents mapped to that module, Discrete
        actions widened to the largest with an action mask that the default
        modules honour (``envs.agent_spaces``). Either changes the policies'
        observation space, so a deployed policy needs the same wrapper
        (``algo.env_creator`` builds envs with it).
        """
        self._set("multi_agent", {"policies", "policy_mapping_fn", "policies_to_train",
                                  "add_agent_id", "pad_agent_spaces"}, kwargs)
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
            "shuffle_batch_per_epoch", "shuffle_first_epoch",
        }
        if "train_batch_size" in kwargs:  # RLlib's old name
            kwargs["train_batch_size_per_learner"] = kwargs.pop("train_batch_size")
        return self._set("training", common | set(self._algo_training_keys), kwargs)

    #: Whether ``num_learners > 0`` (data-parallel learners) is implemented for this algorithm.
    supports_multiple_learners = True

    def learners(self, **kwargs: Any) -> "AlgorithmConfig":
        """num_learners (RLlib's default 0: one learner in this process), num_cpus_per_learner
        ("auto": 1), num_gpus_per_learner (0), shared_optimizer (None auto, True, False), and
        marl's own ``backend`` ("auto", "processes" or "ray") and ``device`` (None: "cuda" when
        num_gpus_per_learner > 0, else "cpu").

        ``num_learners=K >= 1`` trains K data-parallel learners (``torch.distributed``,
        gloo on CPU, NCCL on GPU) in worker processes or Ray actors ("auto": Ray when
        ``ray.is_initialized()``); as in RLlib each trains on
        ``train_batch_size_per_learner`` rows, so an iteration samples K times that.
        Gradients are averaged over the learners once per minibatch, so K learners
        on K shards take the step one learner would take on the whole minibatch.
        """
        if "backend" in kwargs:
            kwargs["learner_backend"] = _backend_name(kwargs.pop("backend"))
        if "device" in kwargs:
            kwargs["learner_device"] = kwargs.pop("device")
        return self._set("learners", {"num_learners", "num_cpus_per_learner", "num_gpus_per_learner",
                                      "shared_optimizer", "learner_backend", "learner_device"}, kwargs)

    @property
    def total_train_batch_size(self) -> int:
        """Rows sampled per iteration: ``train_batch_size_per_learner * max(1, num_learners)`` (RLlib's)."""
        return int(self.train_batch_size_per_learner) * max(1, int(self.num_learners or 0))

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
            "training": self.training, "learners": self.learners, "framework": self.framework,
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

    def _validate_lr(self) -> None:
        check_number("lr", self.lr, low=0.0, low_open=True)

    def validate(self) -> None:
        """Check every value before anything is built; raises ``ConfigError``
        naming the key, the value seen and what is expected.

        Ranges follow RLlib's meaning of each key; values RLlib gives a meaning
        (``grad_clip=None``: no clipping, ``evaluation_interval=0``: no
        evaluation) are accepted. Subclasses add their algorithm's keys.
        """
        if self.env is None:
            raise ConfigError("no environment: call config.environment(env=...)")
        if not isinstance(self.env_config, Mapping):
            raise _bad_value("env_config", self.env_config, "a dict")
        # env runners
        check_int("num_env_runners", self.num_env_runners, 0, hint="0 samples in the main process")
        check_int("num_envs_per_env_runner", self.num_envs_per_env_runner, 1)
        fragment = self.rollout_fragment_length
        if fragment != "auto" and not (_is_int(fragment) and fragment >= 1):
            raise _bad_value("rollout_fragment_length", fragment, "'auto' or an int >= 1",
                             "'auto' splits the train batch evenly over the env runners and their envs")
        check_number("sample_timeout_s", self.sample_timeout_s, low=0.0, low_open=True,
                     none="no time limit", allow_inf=False)
        check_bool("overlap_sampling", self.overlap_sampling)
        if self.overlap_sampling and self.num_env_runners < 1:
            raise _bad_value("overlap_sampling", True, "False with num_env_runners=0",
                             "overlapping needs worker processes to sample while this one learns: "
                             "set num_env_runners >= 1")
        if self.nonfinite_env_values not in ("raise", "drop_episode"):
            raise _bad_value("nonfinite_env_values", self.nonfinite_env_values, "'raise' or 'drop_episode'")
        for key in ("explore", "normalize_actions", "clip_actions"):
            check_bool(key, getattr(self, key))
        if not self.explore:
            raise ConfigError(
                "explore=False: PPO and VPG learn on-policy from sampled actions and their "
                "log-probabilities; keep explore=True (evaluation() runs greedily by itself)"
            )
        if self.env_to_module_connector is not None and not callable(self.env_to_module_connector):
            raise _bad_value("env_to_module_connector", self.env_to_module_connector,
                             "None or a callable (env, spaces, device) -> connector")
        # multi-agent
        if self.policy_mapping_fn is not None and not callable(self.policy_mapping_fn):
            raise _bad_value("policy_mapping_fn", self.policy_mapping_fn,
                             "a callable (agent_id, episode, **kw) -> module id")
        if self.policies is not None and self.policy_mapping_fn is None and set(self.policies) != {DEFAULT_MODULE_ID}:
            raise ConfigError(
                f"policies {sorted(self.policies)} are set but no policy_mapping_fn: pass "
                "multi_agent(policy_mapping_fn=lambda agent_id, episode, **kw: ...) so every "
                "agent is mapped to one of them"
            )
        check_bool("add_agent_id", self.add_agent_id)
        check_bool("pad_agent_spaces", self.pad_agent_spaces)
        # training
        self._validate_lr()
        check_number("gamma", self.gamma, low=0.0, high=1.0)
        check_int("train_batch_size_per_learner", self.train_batch_size_per_learner, 1)
        check_int("minibatch_size", self.minibatch_size, 1, none="the whole batch")
        check_int("num_epochs", self.num_epochs, 1)
        check_bool("shuffle_batch_per_epoch", self.shuffle_batch_per_epoch)
        check_bool("shuffle_first_epoch", self.shuffle_first_epoch)
        check_number("grad_clip", self.grad_clip, low=0.0, low_open=True, none="no clipping", allow_inf=True,
                     hint="0 would freeze the weights and a negative value flip the gradients")
        check_choice("grad_clip_by", self.grad_clip_by, ("global_norm", "norm", "value"))
        if self.learner_class is not None and not isinstance(self.learner_class, type):
            raise _bad_value("learner_class", self.learner_class, "None or a Learner class")
        check_bool("normalize_advantages", self.normalize_advantages)
        check_number("entropy_coeff", self.entropy_coeff, low=0.0,
                     hint="a negative coefficient would push the policy to collapse"
                     if _is_real(self.entropy_coeff) else "")
        # learners
        check_int("num_learners", self.num_learners, 0, hint="0: one local learner")
        if self.num_learners and not self.supports_multiple_learners:
            raise ConfigError(
                f"num_learners={self.num_learners}: {type(self).__name__} trains in this process (its "
                "replay buffers and target updates live here); data-parallel learners are implemented "
                "for PPO, MAPPO and VPG. Use num_learners=0 (num_gpus_per_learner=1 for a GPU learner)")
        if self.num_cpus_per_learner != "auto":
            check_number("num_cpus_per_learner", self.num_cpus_per_learner, low=0.0, low_open=True,
                         hint="or 'auto' (1)")
        check_number("num_gpus_per_learner", self.num_gpus_per_learner, low=0.0)
        check_choice("learner_backend", self.learner_backend, ("auto", "processes", "ray"))
        check_choice("env_runner_backend", self.env_runner_backend, ("auto", "processes", "ray"))
        check_number("num_cpus_per_env_runner", self.num_cpus_per_env_runner, low=0.0, low_open=True)
        if self.learner_device is not None and not isinstance(self.learner_device, str):
            raise _bad_value("learner_device", self.learner_device, "None, 'cpu', 'cuda' or 'cuda:<index>'")
        if self.shared_optimizer is not None:
            check_bool("shared_optimizer", self.shared_optimizer)
        check_bool("torch_compile_learner", self.torch_compile_learner)
        check_choice("torch_compile_learner_what_to_compile", self.torch_compile_learner_what_to_compile,
                     ("forward_train", "complete_update"))
        if not isinstance(self.torch_compile_learner_dynamo_backend, str):
            raise _bad_value("torch_compile_learner_dynamo_backend", self.torch_compile_learner_dynamo_backend,
                             "a torch.compile backend name such as 'inductor'")
        if self.torch_compile_learner_dynamo_mode is not None:
            check_choice("torch_compile_learner_dynamo_mode", self.torch_compile_learner_dynamo_mode,
                         ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
        # evaluation
        check_int("evaluation_interval", self.evaluation_interval, 0, none="no evaluation",
                  hint="n evaluates after every n-th iteration; 0, as in RLlib, means no evaluation")
        if self.evaluation_duration == "auto":
            raise ConfigError("evaluation_duration='auto': expected an int >= 1 ('auto' needs RLlib's "
                              "evaluation_parallel_to_training, which marl does not implement)")
        check_int("evaluation_duration", self.evaluation_duration, 1,
                  hint="counted in evaluation_duration_unit")
        check_choice("evaluation_duration_unit", self.evaluation_duration_unit, ("episodes", "timesteps"))
        check_bool("evaluation_explore", self.evaluation_explore)
        if hasattr(self, "evaluation_num_env_runners"):
            check_int("evaluation_num_env_runners", self.evaluation_num_env_runners, 0)
        # reporting and debugging
        check_int("metrics_num_episodes_for_smoothing", self.metrics_num_episodes_for_smoothing, 1)
        check_int("seed", self.seed, 0, none="unseeded")
        if str(self.log_level).upper() not in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level={self.log_level!r}: expected DEBUG, INFO, WARN, ERROR or CRITICAL")

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
