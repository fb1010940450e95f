"""Algorithm configs to and from JSON.

Plain values, spaces, dataclass configs and specs, and importable classes or
functions are stored as readable JSON. Only values that cannot be named by
an import path (lambdas, closures, objects) go to a side file written with
cloudpickle; a checkpoint whose config has none needs no pickle to load.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Dict, List

import gymnasium as gym

from marl.core import checkpoint_io as io
from marl.core.spaces_json import space_from_json, space_to_json

PICKLE_FILE = "algorithm_config.pkl"


def _importable_path(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is obj else None


class ConfigEncoder:
    def __init__(self) -> None:
        self.pickled: List[Any] = []

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [self.encode(v) for v in value]
        if isinstance(value, (set, frozenset)):
            return {"__set__": [self.encode(v) for v in sorted(value, key=repr)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"__dict__": {k: self.encode(v) for k, v in value.items()}}
            return {"__items__": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, gym.Space):
            return {"__space__": space_to_json(value)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            path = _importable_path(type(value))
            if path is not None:
                return {
                    "__dataclass__": path,
                    "fields": {f.name: self.encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init},
                }
        if isinstance(value, type) or callable(value):
            path = _importable_path(value)
            if path is not None:
                return {"__callable__": path}
        self.pickled.append(value)
        return {"__pickled__": len(self.pickled) - 1, "repr": repr(value)[:200]}


def decode(value: Any, pickled: List[Any] | None) -> Any:
    if isinstance(value, list):
        return [decode(v, pickled) for v in value]
    if not isinstance(value, dict):
        return value
    if "__set__" in value:
        return set(decode(v, pickled) for v in value["__set__"])
    if "__dict__" in value:
        return {k: decode(v, pickled) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {_hashable(decode(k, pickled)): decode(v, pickled) for k, v in value["__items__"]}
    if "__space__" in value:
        return space_from_json(value["__space__"])
    if "__dataclass__" in value:
        cls = io.import_class(value["__dataclass__"])
        return cls(**{k: decode(v, pickled) for k, v in value["fields"].items()})
    if "__callable__" in value:
        return io.import_class(value["__callable__"])
    if "__pickled__" in value:
        if pickled is None:
            raise io.CheckpointError(
                f"the config value {value.get('repr')!r} was stored in {PICKLE_FILE!r}, which is missing"
            )
        return pickled[value["__pickled__"]]
    return {k: decode(v, pickled) for k, v in value.items()}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def save_config(config: Any, directory: Path) -> None:
    encoder = ConfigEncoder()
    data = {
        "config_class": io.class_path(type(config)),
        "algo_class": _importable_path(config.algo_class) if config.algo_class else None,
        "values": {k: encoder.encode(v) for k, v in config.to_dict().items()},
    }
    io.write_json(directory / "algorithm_config.json", data)
    if encoder.pickled:
        import cloudpickle

        (directory / PICKLE_FILE).write_bytes(cloudpickle.dumps(encoder.pickled))


def load_config(directory: Path) -> Any:
    data = io.read_json(directory / "algorithm_config.json")
    pickled = None
    pkl = directory / PICKLE_FILE
    if pkl.exists():
        import cloudpickle

        try:
            pickled = cloudpickle.loads(pkl.read_bytes())
        except Exception as e:  # corrupt side file: say which
            raise io.CheckpointError(f"checkpoint file {str(pkl)!r} is corrupt: {e}") from e
    config = io.import_class(data["config_class"])()
    for key, value in data["values"].items():
        setattr(config, key, decode(value, pickled))
    if data.get("algo_class"):
        config.algo_class = io.import_class(data["algo_class"])
    return config
