"""The fully connected stack used by the default encoders and heads."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from torch import nn

from marl.models.activations import ActivationSpec, get_activation
from marl.models.initializers import InitializerSpec, init_layer


def _check_sizes(hiddens: Sequence[int], what: str) -> list:
    if isinstance(hiddens, (str, bytes)) or not isinstance(hiddens, Sequence):
        raise ValueError(f"{what} must be a list of positive ints; got {hiddens!r}")
    sizes = list(hiddens)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(
                f"{what} must be a list of positive ints; got {hiddens!r} "
                f"(bad entry {size!r})"
            )
    return sizes


def build_mlp(
    in_dim: int,
    hiddens: Sequence[int],
    activation: ActivationSpec,
    kernel_initializer: InitializerSpec = None,
    kernel_initializer_kwargs: Optional[Mapping[str, Any]] = None,
    bias_initializer: InitializerSpec = None,
    bias_initializer_kwargs: Optional[Mapping[str, Any]] = None,
    output_dim: Optional[int] = None,
    output_activation: ActivationSpec = None,
    layernorm: bool = False,
) -> nn.Sequential:
    """Build `Linear -> activation` for each hidden size, then an optional output layer.

    Every hidden layer is followed by `activation` (RLlib's encoders also
    activate their last hidden layer); with `layernorm` a `LayerNorm`
    (eps 1e-3, as RLlib's `*_use_layernorm`) sits between them. With `output_dim` set a final Linear
    of that width follows, activated by `output_activation` (None: linear),
    which is how heads end in raw logits. The initializers apply to every
    Linear, the output layer included. The returned Sequential carries
    `.output_dim`, the width of what it returns; with no hidden layers and no
    output layer it is an identity with `output_dim == in_dim`.
    """
    sizes = _check_sizes(hiddens, "hiddens")
    layers: list = []
    width = int(in_dim)
    for size in sizes:
        linear = nn.Linear(width, size)
        init_layer(linear, kernel_initializer, kernel_initializer_kwargs,
                   bias_initializer, bias_initializer_kwargs)
        layers += [linear] + ([nn.LayerNorm(size, eps=1e-3)] if layernorm else []) + [get_activation(activation)]
        width = size
    if output_dim is not None:
        linear = nn.Linear(width, int(output_dim))
        init_layer(linear, kernel_initializer, kernel_initializer_kwargs,
                   bias_initializer, bias_initializer_kwargs)
        layers.append(linear)
        if output_activation is not None:
            layers.append(get_activation(output_activation))
        width = int(output_dim)
    mlp = nn.Sequential(*layers)
    mlp.output_dim = width
    return mlp


def mlp_from_config(in_dim: int, cfg: Mapping[str, Any], prefix: str = "fcnet",
                    output_dim: Optional[int] = None) -> nn.Sequential:
    """`build_mlp` from a resolved model config's `{prefix}_*` keys (`fcnet`, `head_fcnet`).

    One place that reads hiddens, activation, initializers and layernorm, so
    every default network honours all of them.
    """
    return build_mlp(
        in_dim, cfg[f"{prefix}_hiddens"], cfg[f"{prefix}_activation"],
        cfg[f"{prefix}_kernel_initializer"], cfg[f"{prefix}_kernel_initializer_kwargs"],
        cfg[f"{prefix}_bias_initializer"], cfg[f"{prefix}_bias_initializer_kwargs"],
        output_dim=output_dim, layernorm=bool(cfg.get(f"{prefix}_use_layernorm", False)),
    )
