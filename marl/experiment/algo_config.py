"""From a resolved `RunSpec` to the ``AlgorithmConfig`` it describes."""
from __future__ import annotations

from typing import Any, List, Tuple

from marl.experiment.cli import RunSpec, UsageError, load_callable, make_algorithm_config
from marl.experiment.policy_setups import PolicySetup, apply_policy_setup, env_agent_ids, make_policy_setup


def build_algorithm_config(spec: RunSpec) -> Tuple[Any, PolicySetup]:
    """The algorithm config of ``spec`` and its policy setup.

    Builds the env once to read its agent ids. Raises `UsageError` naming the
    argument when the env cannot be built or a value fails the config's
    validation (``--lr=-1`` -> ``argument --lr: lr=-1: expected a positive number``).
    """
    from marl.algorithms.algorithm_config import ConfigError

    try:
        agent_ids: List[Any] = env_agent_ids(spec.env, spec.env_config)
    except Exception as e:  # the registry's errors list the accepted env forms
        raise UsageError(f"argument --env: cannot build env {spec.env!r} with --env-config "
                         f"{spec.env_config}: {type(e).__name__}: {e}") from None
    mapping_fn = load_callable(spec.policy_mapping_fn) if spec.policy_mapping_fn else None
    try:
        setup = make_policy_setup(spec.policy_setup, agent_ids, mapping_fn, spec.policies)
    except ValueError as e:
        argument = "--policy-mapping-fn" if spec.policy_mapping_fn else "--policies"
        raise UsageError(f"argument {argument}: {e}") from None

    config = make_algorithm_config(spec.algo)
    config.environment(spec.env, env_config=dict(spec.env_config))
    config.env_runners(num_env_runners=spec.num_env_runners, num_envs_per_env_runner=spec.num_envs_per_env_runner)
    config.debugging(seed=spec.seed)
    if spec.eval_interval:
        config.evaluation(evaluation_interval=spec.eval_interval, evaluation_duration=spec.eval_episodes,
                          evaluation_explore=spec.eval_explore)
    apply_policy_setup(config, setup, spec.model_config)
    for key, value in spec.hyperparameters.items():
        try:
            config.update_from_dict({key: value})
        except ConfigError as e:
            raise UsageError(f"argument --{key}: {e}") from None
    try:
        config.validate()
    except ConfigError as e:
        raise UsageError(_name_argument(str(e), spec)) from None
    return config, setup


def _name_argument(message: str, spec: RunSpec) -> str:
    """Prefix a validation message with the argument it is about (``lr=-1: ...`` -> ``--lr``)."""
    key = message.split("=", 1)[0].strip()
    if key.isidentifier():
        option = f"--{key.replace('_', '-')}" if key in ("num_env_runners", "num_envs_per_env_runner") else f"--{key}"
        return f"argument {option}: {message}"
    return f"invalid configuration: {message}"


def algorithm_config_snapshot(config: Any) -> dict:
    """The config's plain values (numbers, strings, lists, dicts of those), for config.yaml."""

    def plain(value: Any) -> bool:
        if value is None or isinstance(value, (bool, int, float, str)):
            return True
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        return False

    out = {}
    for key, value in sorted(config.to_dict().items()):
        if isinstance(value, (set, frozenset)):
            value = sorted(value, key=str)
        if isinstance(value, tuple):
            value = list(value)
        if plain(value):
            out[key] = value
    return out
