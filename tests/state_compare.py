"""Exact comparison of nested training state (weights, optimizer states, RNGs), for tests."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def assert_same(a: Any, b: Any, where: str = "state", *, strict_types: bool = False) -> None:
    """``a`` equals ``b`` leaf by leaf (tensors and arrays bit for bit); the message names the path.

    ``strict_types``: arrays must also share their dtype, other leaves their type, and
    dicts their key order (e.g. an env's results compared with a reference env's).
    """
    if isinstance(a, (torch.Tensor, np.ndarray)):
        assert isinstance(b, (torch.Tensor, np.ndarray)), where
        if strict_types:
            assert a.dtype == b.dtype, where
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), where
    elif isinstance(a, dict):
        assert (list(a) == list(b)) if strict_types else (a.keys() == b.keys()), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]", strict_types=strict_types)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", strict_types=strict_types)
    else:
        assert a == b, where
        if strict_types:
            assert type(a) is type(b), where
