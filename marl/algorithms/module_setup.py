"""From an algorithm config and an env to a complete ``MultiRLModuleSpec``.

The algorithm knows what users leave out: spaces come from the env (after
the env-to-module connectors), the module class defaults to the algorithm's,
a single spec is expanded to every policy, and every agent must map to a
policy module that exists. The default models also get observation-dependent
defaults here (`fit_default_model`): small boards an MLP, large images a warning.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import gymnasium as gym
import numpy as np

from marl.algorithms.algorithm_config import AlgorithmConfig, ConfigError
from marl.core.constants import DEFAULT_MODULE_ID, SHARED_ENCODER_ID, ModuleID
from marl.core.module_spaces import common_spaces, fill_spaces
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec
from marl.models.action_masking import split_observation_space
from marl.models.cnn import default_conv_filters
from marl.models.default_model_config import DefaultModelConfig, model_config_dict

#: Boards (3-D observations) whose sides are all at most this get `board_conv_filters`:
#: connect_four 6x7, tictactoe 3x3, chess 8x8, go 19x19, pursuit 7x7.
MAX_BOARD_SIDE = 32
#: Images with more pixels than the largest default CNN input (96x96) get a size warning.
LARGE_IMAGE_PIXELS = 96 * 96


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
        fit_default_model(spec, mid, config.train_batch_size_per_learner)
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
        fit_default_model(spec, mid, config.train_batch_size_per_learner)
    return MultiRLModuleSpec(
        multi_rl_module_class=container_class,
        rl_module_specs={**extra, **specs},
        model_config=config.model_config if not isinstance(user, MultiRLModuleSpec) else user.model_config,
        load_state_path=load_state_path,
        modules_to_load=modules_to_load,
    )


# ------------------------------------------------ observation-dependent defaults
def board_conv_filters(height: int, width: int, hiddens: Optional[List[int]] = None) -> List[List[Any]]:
    """An MLP over the flattened ``height x width`` board, written as conv filters.

    The first filter covers the whole board ("valid" padding, so its output is
    1x1: exactly a dense layer on the flattened board), the next ones are 1x1
    (dense layers); ``hiddens`` defaults to `DefaultModelConfig`'s
    ``fcnet_hiddens``. Why an MLP: in our connect_four self-play runs a 3x3
    conv stack won slightly more games per env step but each step took twice as
    long, so at equal wall time the two were level (README); the MLP's size does
    not grow with the board, and the default CNN has no filters for such sizes.
    """
    if not hiddens:
        hiddens = DefaultModelConfig().fcnet_hiddens
    first, *rest = hiddens
    return [[int(first), [int(height), int(width)], 1, "valid"], *[[int(h), 1, 1] for h in rest]]


def fit_default_model(spec: RLModuleSpec, module_id: ModuleID, train_batch_size: int) -> None:
    """Give the library's default models what an observation space needs.

    Image-like (3-D) observations: a board small enough for `MAX_BOARD_SIDE` gets
    `board_conv_filters` (sized by ``fcnet_hiddens``) unless ``conv_filters`` is set or the
    CNN has a default stack for its size (10x10); one with more than
    `LARGE_IMAGE_PIXELS` pixels warns with its size and where to downscale it
    (raw pistonball frames filled 13 GB per batch and never finished an
    iteration). Custom module classes are left alone: their model_config may mean
    something else.
    """
    if not getattr(spec.module_class, "__module__", "").startswith("marl.models."):
        return
    shape = _image_shape(spec.observation_space)
    if shape is None:
        return
    height, width, _ = shape
    model_config = model_config_dict(spec.model_config)
    if height * width > LARGE_IMAGE_PIXELS:
        warnings.warn(large_image_message(module_id, spec.observation_space, train_batch_size), stacklevel=3)
    elif (max(height, width) <= MAX_BOARD_SIDE and model_config.get("conv_filters") is None
          and not _has_default_cnn(height, width)):
        filters = board_conv_filters(height, width, model_config.get("fcnet_hiddens"))
        spec.model_config = {**model_config, "conv_filters": filters}


def large_image_message(module_id: ModuleID, observation_space: gym.Space, train_batch_size: int) -> str:
    """The warning for image observations too large to train on as they are."""
    box, _ = split_observation_space(observation_space)
    per_obs = int(np.prod(box.shape)) * box.dtype.itemsize
    shape = "x".join(str(d) for d in box.shape)
    return (
        f"module {module_id!r}: observations are {shape} {box.dtype} images ({_bytes(per_obs)} each), "
        f"so a train batch of {train_batch_size} env steps holds {_bytes(per_obs * train_batch_size)} "
        "of them per agent of this module, and the CNN runs on full-size frames. Downscale them "
        "first: `.environment(envs.pistonball_preset, env_config={...})` for pistonball, or "
        "envs.image_preset(env, size=84) in your env creator for other image envs (84x84 "
        "grayscale frames, 4 stacked)."
    )


def _image_shape(observation_space: Optional[gym.Space]) -> Optional[Tuple[int, int, int]]:
    """(H, W, C) of a 3-D Box observation (or of its masked "observation"), else None."""
    try:
        box, _ = split_observation_space(observation_space)
    except TypeError:  # spaces the default models reject anyway; they say why
        return None
    if len(box.shape) != 3:
        return None
    return tuple(int(d) for d in box.shape)  # type: ignore[return-value]


def _has_default_cnn(height: int, width: int) -> bool:
    try:
        default_conv_filters(height, width)
    except ValueError:
        return False
    return True


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
