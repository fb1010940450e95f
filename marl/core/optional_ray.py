"""Ray is optional: the one place that imports it for the env runners and the learners."""
from __future__ import annotations

import sys
from typing import Any

#: What every Ray error message tells a user without Ray.
RAY_INSTALL_HINT = 'pip install -e ".[ray]" (or pip install "ray[default]")'


def import_ray(what: str = "this option") -> Any:
    """``ray``, or an ImportError naming ``what`` needed it and how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{what} needs Ray, which is not installed: {RAY_INSTALL_HINT}") from exc
    return ray


def ray_is_running() -> bool:
    """Whether this process called ``ray.init()``. A process that did has imported ray,
    so the answer needs no (slow) import."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())
