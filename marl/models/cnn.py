"""The Conv2D stack used by the default image encoder, and its default filters."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from marl.models.activations import ActivationSpec, get_activation
from marl.models.initializers import InitializerSpec, init_layer

# Default stacks for square images, after RLlib's `get_filter_config`, with the
# padding spelled out so each one ends in a small spatial map (1x1, 4x4, 3x3)
# instead of a huge "same"-padded one.
_DEFAULT_FILTERS: Dict[int, List[List[Any]]] = {
    # CarRacing-sized: 96 -> 24 -> 12 -> 1
    96: [[16, [8, 8], 4, "same"], [32, [4, 4], 2, "same"], [256, [11, 11], 2, "valid"]],
    # Atari: 84 -> 21 -> 11 -> 1
    84: [[16, [8, 8], 4, "same"], [32, [4, 4], 2, "same"], [256, [11, 11], 1, "valid"]],
    # Dreamer-style: 64 -> 32 -> 16 -> 8 -> 4
    64: [[32, [4, 4], 2, "same"], [64, [4, 4], 2, "same"],
         [128, [4, 4], 2, "same"], [256, [4, 4], 2, "same"]],
    # Half-size Atari: 42 -> 21 -> 11 -> 1
    42: [[16, [4, 4], 2, "same"], [32, [4, 4], 2, "same"], [256, [11, 11], 1, "valid"]],
    # Test images: 10 -> 5 -> 3
    10: [[16, [5, 5], 2, "same"], [32, [5, 5], 2, "same"]],
}


def default_conv_filters(height: int, width: int) -> List[List[Any]]:
    """Return a copy of the default filter stack for a square `height`x`width` image.

    Why only fixed sizes: a stack that suits 84x84 Atari frames is wrong for
    other shapes, so rather than guess we ask the user to choose. Raises a
    ValueError naming the shape and the supported sizes otherwise.
    """
    if height == width and int(height) in _DEFAULT_FILTERS:
        return [list(layer) for layer in _DEFAULT_FILTERS[int(height)]]
    sizes = ", ".join(f"{s}x{s}" for s in sorted(_DEFAULT_FILTERS, reverse=True))
    raise ValueError(
        f"No default conv_filters for images of shape {height}x{width}; default "
        f"stacks exist only for {sizes}. Set `conv_filters` in the model config "
        f"(e.g. [[16, 4, 2], [32, 4, 2], [64, 4, 2]]) or resize the observations "
        f"to one of those sizes."
    )


def _pair(value: Any, what: str, spec: Any) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"conv filter {spec!r}: {what} must be an int or (int, int); got {value!r}")


def _parse_filter(spec: Any) -> Tuple[int, Tuple[int, int], Tuple[int, int], Any]:
    """Split one filter entry into (out_channels, kernel, stride, padding)."""
    if not isinstance(spec, (list, tuple)) or len(spec) not in (3, 4):
        raise ValueError(
            f"Each conv filter must be [out_channels, kernel, stride] or "
            f"[out_channels, kernel, stride, padding]; got {spec!r}"
        )
    out_channels = spec[0]
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels <= 0:
        raise ValueError(f"conv filter {spec!r}: out_channels must be a positive int")
    kernel = _pair(spec[1], "kernel", spec)
    stride = _pair(spec[2], "stride", spec)
    padding: Any = spec[3] if len(spec) == 4 else "same"
    if isinstance(padding, str):
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f"conv filter {spec!r}: padding must be 'same', 'valid', "
                             f"an int or (int, int); got {padding!r}")
        padding = padding.lower()
    else:
        padding = _pair(padding, "padding", spec)
    return out_channels, kernel, stride, padding


def _same_padding(size: Tuple[int, int], kernel: Tuple[int, int],
                  stride: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """TF-style "same": output = ceil(input / stride), extra pixel at the end.

    torch's own padding="same" only supports stride 1, which the default
    stacks do not use. Returns (left, right, top, bottom) for nn.ZeroPad2d.
    """
    pads = []
    for n, k, s in zip(size, kernel, stride):
        out = math.ceil(n / s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


class CNN(nn.Module):
    """Conv2D stack on channels-last images, flattened at the end.

    Takes [N, H, W, C] (as envs deliver images; any dtype, cast to the
    module's float dtype), returns [N, output_dim].
    """

    def __init__(self, input_shape_hwc: Sequence[int], layers: nn.Sequential) -> None:
        super().__init__()
        self.input_shape_hwc = tuple(int(d) for d in input_shape_hwc)
        self.layers = layers
        # Non-persistent: follows .to()/.double() so inputs are cast to the
        # weights' dtype, and never shows up in a state dict.
        self.register_buffer("_dtype_probe", torch.empty(0), persistent=False)
        with torch.no_grad():
            dry = torch.zeros(1, *self.input_shape_hwc)
            self.output_dim: int = int(self.forward(dry).shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._dtype_probe.dtype).permute(0, 3, 1, 2)
        return torch.flatten(self.layers(x), start_dim=1)


def build_cnn(
    input_shape_hwc: Sequence[int],
    conv_filters: Optional[Sequence[Any]],
    activation: ActivationSpec,
    kernel_initializer: InitializerSpec = None,
    kernel_initializer_kwargs: Optional[Mapping[str, Any]] = None,
    bias_initializer: InitializerSpec = None,
    bias_initializer_kwargs: Optional[Mapping[str, Any]] = None,
) -> CNN:
    """Build a channels-last CNN encoder that flattens its output.

    `conv_filters` entries are [out_channels, kernel, stride(, padding)]
    (padding defaults to "same", as in RLlib); None picks
    `default_conv_filters(H, W)`. Each Conv2d is followed by `activation`.
    The result's `.output_dim` comes from a dry run on a zero image, so it is
    exactly what the heads will see. A stack that shrinks the image below
    1x1 raises a ValueError naming the image shape and the filters.
    """
    if len(input_shape_hwc) != 3:
        raise ValueError(f"build_cnn needs an (H, W, C) input shape; got {tuple(input_shape_hwc)}")
    height, width, channels = (int(d) for d in input_shape_hwc)
    if conv_filters is None:
        try:
            conv_filters = default_conv_filters(height, width)
        except ValueError as err:
            raise ValueError(f"Image observations of shape {(height, width, channels)}: {err}") from None
    if len(conv_filters) == 0:
        raise ValueError("conv_filters is empty; give at least one [out, kernel, stride] layer")

    layers: list = []
    size = (height, width)
    in_channels = channels
    for spec in conv_filters:
        out_channels, kernel, stride, padding = _parse_filter(spec)
        if padding == "same":
            pad = _same_padding(size, kernel, stride)
            if any(pad):
                layers.append(nn.ZeroPad2d(pad))
            conv = nn.Conv2d(in_channels, out_channels, kernel, stride)
            size = (math.ceil(size[0] / stride[0]), math.ceil(size[1] / stride[1]))
        else:
            pad2 = (0, 0) if padding == "valid" else padding
            conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=pad2)
            size = tuple(  # type: ignore[assignment]
                (n + 2 * p - k) // s + 1 for n, p, k, s in zip(size, pad2, kernel, stride)
            )
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(
                f"conv_filters {list(conv_filters)!r} shrink the {height}x{width}x{channels} "
                f"image below 1x1 at layer {spec!r}; use smaller kernels/strides or "
                f"'same' padding."
            )
        init_layer(conv, kernel_initializer, kernel_initializer_kwargs,
                   bias_initializer, bias_initializer_kwargs)
        layers += [conv, get_activation(activation)]
        in_channels = out_channels
    return CNN((height, width, channels), nn.Sequential(*layers))
