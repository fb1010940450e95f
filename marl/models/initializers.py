"""Weight/bias initializer lookup and application for the default models."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

InitializerSpec = Optional[Union[str, Callable[..., Any]]]


def _available() -> Dict[str, Callable[..., Any]]:
    """`torch.nn.init`'s in-place initializers keyed by lower-case name (no "_")."""
    return {
        name[:-1].lower(): getattr(nn.init, name)
        for name in dir(nn.init)
        if name.endswith("_") and not name.startswith("_")
        and callable(getattr(nn.init, name))
    }


def valid_initializer_names() -> List[str]:
    """The initializer names accepted by `get_initializer` (without the '_')."""
    return sorted(_available())


def get_initializer(spec: InitializerSpec) -> Optional[Callable[..., Any]]:
    """Resolve an initializer descriptor to an in-place function or None.

    Accepts what RLlib's config accepts for torch: a `torch.nn.init` function
    name with or without the trailing underscore, any case ("xavier_uniform_",
    "xavier_uniform", "Orthogonal"), a callable `fn(tensor, **kwargs)`, or
    None / "default" meaning torch's own layer initialization (returns None).
    An unknown name raises a ValueError listing the valid ones.
    """
    if spec is None:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key == "default":
            return None
        key = key[:-1] if key.endswith("_") else key
        table = _available()
        if key in table:
            return table[key]
    raise ValueError(
        f"Unknown initializer {spec!r}; expected None, a callable, or one of the "
        f"torch.nn.init names: {', '.join(valid_initializer_names())}."
    )


def apply_initializer(
    tensor: torch.Tensor,
    spec: InitializerSpec,
    kwargs: Optional[Mapping[str, Any]] = None,
    *,
    what: str = "tensor",
) -> None:
    """Initialize `tensor` in place with `spec(tensor, **kwargs)`; no-op for None.

    Runs under `torch.no_grad()` so it also works for a user callable that
    does not. Errors from torch (e.g. "orthogonal" on a 1-D bias) are re-raised
    as a ValueError naming the initializer, the tensor and its shape.
    """
    fn = get_initializer(spec)
    if fn is None:
        return
    try:
        with torch.no_grad():
            fn(tensor, **dict(kwargs or {}))
    except (ValueError, RuntimeError, TypeError) as err:
        raise ValueError(
            f"Initializer {spec!r} with kwargs {dict(kwargs or {})!r} failed on "
            f"{what} of shape {tuple(tensor.shape)}: {err}"
        ) from err


def init_layer(
    layer: nn.Module,
    kernel_initializer: InitializerSpec = None,
    kernel_initializer_kwargs: Optional[Mapping[str, Any]] = None,
    bias_initializer: InitializerSpec = None,
    bias_initializer_kwargs: Optional[Mapping[str, Any]] = None,
) -> None:
    """Apply kernel/bias initializers to a layer's `weight` and `bias`."""
    name = type(layer).__name__
    weight = getattr(layer, "weight", None)
    if weight is not None:
        apply_initializer(weight, kernel_initializer, kernel_initializer_kwargs,
                          what=f"{name}.weight")
    bias = getattr(layer, "bias", None)
    if bias is not None:
        apply_initializer(bias, bias_initializer, bias_initializer_kwargs,
                          what=f"{name}.bias")
