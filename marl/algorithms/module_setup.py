"""From an algorithm config and an env to a complete ``MultiRLModuleSpec``.

The algorithm knows what users leave out: spaces come from the env (after
the env-to-module connectors), the module class defaults to the algorithm's,
a single spec is expanded to every policy, and every agent must map to a
policy module that exists.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import gymnasium as gym

from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError
from marl.core.constants import DEFAULT_MODULE_ID, SHARED_ENCODER_ID, ModuleID
from marl.core.module_spaces import common_spaces, fill_spaces
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec


def default_policy_mapping_fn(agent_id: Any, episode: Any = None, **kwargs: Any) -> ModuleID:
    """Every agent acts with the one default module (parameter sharing)."""
    return DEFAULT_MODULE_ID


def agent_id_as_module_id(agent_id: Any, episode: Any = None, **kwargs: Any) -> ModuleID:
    """One module per agent, named after it (``str(agent_id)``).

    Importable from the library so that checkpoints of per-agent and
    shared-encoder runs store it by import path and load anywhere.
    """
    return str(agent_id)


def _is_policy_spec(module_id: ModuleID, spec: RLModuleSpec) -> bool:
    if module_id == SHARED_ENCODER_ID:
        return False
    return getattr(spec.module_class, "is_policy", True) is not False


def resolve_policies(config: AlgorithmConfig) -> Tuple[set, Callable]:
    """The policy module ids and the mapping function the run will use."""
    spec = config.rl_module_spec
    policies = set(config.policies) if config.policies is not None else None
    if policies is None:
        if isinstance(spec, MultiRLModuleSpec) and isinstance(spec.rl_module_specs, dict):
            policies = {mid for mid, s in spec.rl_module_specs.items() if _is_policy_spec(mid, s)}
        else:
            policies = {DEFAULT_MODULE_ID}
    mapping_fn = config.policy_mapping_fn
    if mapping_fn is None:
        if policies != {DEFAULT_MODULE_ID}:
            raise ConfigError(
                f"policies {sorted(policies)} need a policy_mapping_fn: "
                "config.multi_agent(policy_mapping_fn=lambda agent_id, episode, **kw: ...)"
            )
        mapping_fn = default_policy_mapping_fn
    return policies, mapping_fn


def build_module_spec(
    config: AlgorithmConfig,
    policies: set,
    module_spaces: Dict[ModuleID, Tuple[gym.Space, gym.Space]],
) -> MultiRLModuleSpec:
    """Fill in the user's (possibly partial) spec for every policy module.

    Policies are built in sorted id order, so weight initialisation under a
    seed does not depend on set iteration order (``PYTHONHASHSEED``).
    """
    user = config.rl_module_spec
    default_class = config.get_default_rl_module_class()
    container_class = MultiRLModule
    load_state_path = modules_to_load = None
    extra: Dict[ModuleID, RLModuleSpec] = {}

    if user is None or isinstance(user, RLModuleSpec):
        base = user or RLModuleSpec()
        specs = {mid: base.copy() for mid in sorted(policies)}
    elif isinstance(user, MultiRLModuleSpec):
        container_class = user.multi_rl_module_class
        load_state_path, modules_to_load = user.load_state_path, user.modules_to_load
        if isinstance(user.rl_module_specs, RLModuleSpec):
            specs = {mid: user.rl_module_specs.copy() for mid in sorted(policies)}
        elif user.rl_module_specs is None:
            specs = {mid: RLModuleSpec() for mid in sorted(policies)}
        else:
            given = {mid: s.copy() for mid, s in user.rl_module_specs.items()}
            missing = sorted(policies - set(given))
            if missing:
                raise ConfigError(
                    f"policies {missing} have no RLModuleSpec in rl_module_specs "
                    f"(specs given for {sorted(given)})"
                )
            specs = {mid: given[mid] for mid in sorted(policies)}
            extra = {mid: s for mid, s in given.items() if mid not in policies}
        for s in list(specs.values()) + list(extra.values()):
            if s.observation_space is None:
                s.observation_space = user.observation_space
            if s.action_space is None:
                s.action_space = user.action_space
            if s.model_config is None:
                s.model_config = user.model_config
    else:
        raise ConfigError(
            "rl_module(rl_module_spec=...) takes an RLModuleSpec or a MultiRLModuleSpec, got "
            f"{type(user).__name__}"
        )

    fallback = common_spaces(module_spaces)
    for mid, spec in specs.items():
        if spec.module_class is None:
            spec.module_class = default_class
        if spec.model_config is None:
            spec.model_config = config.model_config
        try:
            fill_spaces(spec, mid, module_spaces)
        except ValueError as e:
            raise ConfigError(f"policy {str(e)[len('module '):]}") from None
    for mid, spec in extra.items():
        if spec.module_class is None:
            raise ConfigError(f"module {mid!r} (not a policy) needs an explicit module_class")
        if spec.observation_space is None:
            if fallback is None:
                raise ConfigError(
                    f"module {mid!r} (not a policy) has no observation_space and the agents' "
                    "spaces differ; set observation_space in its RLModuleSpec"
                )
            spec.observation_space = fallback[0]
        if spec.model_config is None:
            spec.model_config = config.model_config
    return MultiRLModuleSpec(
        multi_rl_module_class=container_class,
        rl_module_specs={**extra, **specs},
        model_config=config.model_config if not isinstance(user, MultiRLModuleSpec) else user.model_config,
        load_state_path=load_state_path,
        modules_to_load=modules_to_load,
    )
