"""Activation lookup by the names the default model config uses."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Union

from torch import nn

_ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "swish": nn.SiLU,  # swish and silu are the same function
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
}

ActivationSpec = Optional[Union[str, type]]


def get_activation(name: ActivationSpec) -> nn.Module:
    """Return a fresh activation module for a config name.

    Why a fresh instance: a module must appear once per place in an
    `nn.Sequential` so printing and hooks show the real layer order.
    Names are case-insensitive; "linear" or None gives `nn.Identity`. An
    `nn.Module` subclass is instantiated without arguments. Anything else
    raises a ValueError naming the value and the valid names.
    """
    if name is None:
        return nn.Identity()
    if isinstance(name, type) and issubclass(name, nn.Module):
        return name()
    if isinstance(name, str) and name.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[name.lower()]()
    raise ValueError(
        f"Unknown activation {name!r}; expected one of "
        f"{', '.join(sorted(_ACTIVATIONS))}, None, or an nn.Module subclass."
    )
