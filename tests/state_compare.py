"""Exact comparison of nested training state (weights, optimizer states, RNGs), for tests."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """``a`` equals ``b`` leaf by leaf (tensors and arrays bit for bit); the message names the path."""
    if isinstance(a, (torch.Tensor, np.ndarray)):
        assert isinstance(b, (torch.Tensor, np.ndarray)), where
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
