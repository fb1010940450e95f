"""The configuration of the default models, and its resolution to a plain dict.

`DefaultModelConfig` mirrors RLlib's dataclass of the same name field for
field (names and defaults), so configs written for RLlib's default models work
unchanged. Inside an RLModule the config is always a plain dict
(`dataclasses.asdict(cfg)`), so the default modules call
`resolve_default_model_config` to fill in defaults, map the guide's
`post_fcnet_*` aliases and reject typos before building anything.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import InitVar, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

#: One Conv2D layer: [out_channels, kernel, stride] or [out_channels, kernel,
#: stride, padding]; kernel/stride an int or (int, int); padding an int,
#: (int, int), "same" or "valid".
ConvFilterSpec = List[List[Any]]
Initializer = Optional[Union[str, Callable]]

#: The guide's names for the head settings (ERRATA 3) -> the canonical field.
POST_FCNET_ALIASES: Dict[str, str] = {
    "post_fcnet_hiddens": "head_fcnet_hiddens",
    "post_fcnet_activation": "head_fcnet_activation",
    "post_fcnet_kernel_initializer": "head_fcnet_kernel_initializer",
    "post_fcnet_kernel_initializer_kwargs": "head_fcnet_kernel_initializer_kwargs",
    "post_fcnet_bias_initializer": "head_fcnet_bias_initializer",
    "post_fcnet_bias_initializer_kwargs": "head_fcnet_bias_initializer_kwargs",
}

# Marks an alias that was not given (None is a legal value for most aliases).
_UNSET: Any = object()


@dataclass
class DefaultModelConfig:
    """Architecture settings of the default RLModules (MLP / CNN / LSTM nets).

    Only use this for the default modules; custom modules take plain dicts.
    `dataclasses.asdict(cfg)` yields exactly the canonical keys: the guide's
    `post_fcnet_*` names are init-only aliases, copied into `head_fcnet_*`
    at construction, and readable (and writable) afterwards as properties.
    """

    # --- MLP encoder (1-D observations) ---
    #: Layer sizes of the encoder MLP. The policy/value heads are sized by
    #: `head_fcnet_hiddens` (alias `post_fcnet_hiddens`).
    fcnet_hiddens: List[int] = field(default_factory=lambda: [256, 256])
    #: 'tanh', 'relu', 'swish'/'silu', 'elu', 'gelu' or 'linear'/None.
    fcnet_activation: str = "tanh"
    #: A `torch.nn.init` function name ("xavier_uniform_", "orthogonal"), a
    #: callable `fn(tensor, **kwargs)`, or None for torch's default.
    fcnet_kernel_initializer: Initializer = None
    fcnet_kernel_initializer_kwargs: Optional[dict] = None
    fcnet_bias_initializer: Initializer = None
    fcnet_bias_initializer_kwargs: Optional[dict] = None
    #: A LayerNorm (eps 1e-3) after each encoder layer, before its activation.
    fcnet_use_layernorm: bool = False

    # --- CNN encoder (3-D, HxWxC observations) ---
    #: None: pick a default stack from the image size (see
    #: `marl.models.cnn.default_conv_filters`).
    conv_filters: Optional[ConvFilterSpec] = None
    conv_activation: str = "relu"
    conv_kernel_initializer: Initializer = None
    conv_kernel_initializer_kwargs: Optional[dict] = None
    conv_bias_initializer: Initializer = None
    conv_bias_initializer_kwargs: Optional[dict] = None

    # --- Policy and value heads ---
    #: Hidden layers of each head; [] means a single linear output layer.
    head_fcnet_hiddens: List[int] = field(default_factory=list)
    head_fcnet_activation: str = "relu"
    head_fcnet_kernel_initializer: Initializer = None
    head_fcnet_kernel_initializer_kwargs: Optional[dict] = None
    head_fcnet_bias_initializer: Initializer = None
    head_fcnet_bias_initializer_kwargs: Optional[dict] = None
    #: A LayerNorm (eps 1e-3) after each hidden head layer, before its activation.
    head_fcnet_use_layernorm: bool = False

    # --- Fusion of several input streams (SAC's Q networks on observation and action) ---
    #: Densely connected layers after the streams' embeddings are concatenated:
    #: layer i reads the previous layer's output and the concatenated embeddings.
    fusionnet_hiddens: List[int] = field(default_factory=lambda: [256, 256])
    fusionnet_activation: str = "tanh"
    fusionnet_kernel_initializer: Initializer = None
    fusionnet_kernel_initializer_kwargs: Optional[dict] = None
    fusionnet_bias_initializer: Initializer = None
    fusionnet_bias_initializer_kwargs: Optional[dict] = None

    # --- Continuous actions ---
    #: Box actions: learn a state-independent log_std parameter instead of
    #: having the head output it.
    free_log_std: bool = False
    #: log_std is clamped to [-clip, clip] so exp(log_std) stays finite.
    log_std_clip_param: float = 20.0

    # --- Value function ---
    #: True: the value head reads the policy's encoder output. False: the
    #: value branch has its own encoder of the same architecture.
    vf_share_layers: bool = True

    # --- LSTM wrapping ---
    use_lstm: bool = False
    #: Length of the training sequences (used by whoever cuts episodes into
    #: sequences; the module itself accepts any T).
    max_seq_len: int = 20
    lstm_cell_size: int = 256
    lstm_use_prev_action: bool = False
    lstm_use_prev_reward: bool = False
    lstm_kernel_initializer: Initializer = None
    lstm_kernel_initializer_kwargs: Optional[dict] = None
    lstm_bias_initializer: Initializer = None
    lstm_bias_initializer_kwargs: Optional[dict] = None

    # --- The guide's aliases of head_fcnet_* (init-only, not in asdict) ---
    post_fcnet_hiddens: InitVar[Any] = _UNSET
    post_fcnet_activation: InitVar[Any] = _UNSET
    post_fcnet_kernel_initializer: InitVar[Any] = _UNSET
    post_fcnet_kernel_initializer_kwargs: InitVar[Any] = _UNSET
    post_fcnet_bias_initializer: InitVar[Any] = _UNSET
    post_fcnet_bias_initializer_kwargs: InitVar[Any] = _UNSET

    def __post_init__(self, *aliases: Any) -> None:
        defaults = _canonical_defaults()
        for alias, value in zip(POST_FCNET_ALIASES, aliases):
            if value is _UNSET:
                continue
            canonical = POST_FCNET_ALIASES[alias]
            current = getattr(self, canonical)
            # Only an explicitly changed canonical value can conflict.
            if current != defaults[canonical] and current != value:
                raise ValueError(
                    f"DefaultModelConfig got both {canonical}={current!r} and its "
                    f"alias {alias}={value!r}; set only one of them."
                )
            setattr(self, canonical, value)

    def to_dict(self) -> Dict[str, Any]:
        """The canonical dict (same as `dataclasses.asdict(self)`)."""
        return dataclasses.asdict(self)


def _alias_property(canonical: str) -> property:
    def fget(self: DefaultModelConfig) -> Any:
        return getattr(self, canonical)

    def fset(self: DefaultModelConfig, value: Any) -> None:
        setattr(self, canonical, value)

    return property(fget, fset, doc=f"Alias of `{canonical}` (the guide's name).")


# The dataclass decorator has captured the InitVar defaults for `__init__`; the
# class attributes can now become read/write aliases of the canonical fields.
for _alias, _canonical in POST_FCNET_ALIASES.items():
    setattr(DefaultModelConfig, _alias, _alias_property(_canonical))
del _alias, _canonical


def _canonical_defaults() -> Dict[str, Any]:
    """Every canonical field with its default value (fresh lists each call)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(DefaultModelConfig):
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = f.default
    return out


def canonical_keys() -> List[str]:
    """The keys of a resolved default model config, in declaration order."""
    return [f.name for f in dataclasses.fields(DefaultModelConfig)]


def resolve_default_model_config(
    config: Union[Mapping[str, Any], DefaultModelConfig, None],
) -> Dict[str, Any]:
    """Return the full canonical config dict of a default model.

    Why: modules receive `model_config` as a plain (often partial) dict; the
    builders need every key, and a typo ("fcnet_hidden") must fail loudly
    instead of silently building the default network.

    Defaults fill in missing keys, `post_fcnet_*` aliases map to
    `head_fcnet_*` (an alias and its canonical key with different values is a
    ValueError), and an unknown key raises a ValueError that names it, suggests
    the closest valid key and lists the valid ones. The result is a deep copy:
    mutating it never changes the caller's config.
    """
    if config is None:
        return _canonical_defaults()
    if isinstance(config, DefaultModelConfig):
        return copy.deepcopy(dataclasses.asdict(config))
    if not isinstance(config, Mapping):
        raise TypeError(
            f"model_config must be a dict, a DefaultModelConfig or None; got "
            f"{type(config).__name__}: {config!r}"
        )

    valid = canonical_keys()
    known = set(valid) | set(POST_FCNET_ALIASES)
    unknown = [k for k in config if k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown default model config key {key!r}.{hint} Valid keys: "
            f"{', '.join(valid)} (and the aliases {', '.join(POST_FCNET_ALIASES)})."
        )

    resolved = _canonical_defaults()
    for key, value in config.items():
        if key in POST_FCNET_ALIASES:
            canonical = POST_FCNET_ALIASES[key]
            if canonical in config and config[canonical] != value:
                raise ValueError(
                    f"model_config sets both {canonical}={config[canonical]!r} "
                    f"and its alias {key}={value!r}; set only one of them."
                )
            resolved[canonical] = copy.deepcopy(value)
        else:
            resolved[key] = copy.deepcopy(value)
    return resolved


def model_config_dict(config: Union[Mapping[str, Any], DefaultModelConfig, None]) -> Dict[str, Any]:
    """A model config as a plain (unresolved) dict, so algorithm-specific keys can be
    added to or read from it before ``resolve_default_model_config`` checks the rest."""
    if config is None:
        return {}
    if isinstance(config, DefaultModelConfig):
        return dataclasses.asdict(config)
    return dict(config)
