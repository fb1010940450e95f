"""Algorithm configs to and from JSON (``algorithm_config.json``), without pickle.

Every config value is stored in one of these forms::

    null, true, 1, 2.5, "x", [...]               plain JSON (tuples become lists)
    {"__set__": [...]}                             a set
    {"__dict__": {"key": ...}}                     a dict with str keys
    {"__items__": [[key, value], ...]}             a dict with other keys
    {"__space__": {...}}                           a gymnasium space (``spaces_json``)
    {"__dataclass__": "mod:Cls", "fields": {...}}  a dataclass of marl's own packages
                                                   (or a subclass of a marl spec/config)
    {"__callable__": "mod:name"}                   a module-level class or function
    {"__module__": "pkg.mod"}                      a Python module (e.g. a PettingZoo env)
    {"__unsaved__": "key", "repr": "..."}          a value with no import path

Loading rebuilds only that allow-list: dataclasses are the only objects
constructed from file data, callables are imported and never called, classes
in roles that get instantiated later (``module_class``, ``learner_class``, an
env class, ...) must subclass the right marl base, and the standard library
is refused. Values that have no import path (lambdas, closures, arbitrary
objects) are not saved: a config that has them loads only when the caller
passes a config (``Algorithm.from_checkpoint(path, config=...)``). The one
exception is a ``policy_mapping_fn`` lambda: it is saved as the table
agent -> module id it gave for the env's agents (:class:`RecordedPolicyMapping`).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gymnasium as gym
import numpy as np

from marl.core import checkpoint_io as io
from marl.core.spaces_json import space_from_json, space_to_json

logger = logging.getLogger(__name__)

CONFIG_FILE = "algorithm_config.json"


@dataclasses.dataclass
class RecordedPolicyMapping:
    """A ``policy_mapping_fn`` rebuilt from a checkpoint as a lookup table.

    A lambda or closure has no import path, so a checkpoint stores the module
    id it returned for each of the env's agents at save time (it must have
    returned the same str twice without an episode). Agents outside the
    table raise ``KeyError``; pass the original config to
    ``Algorithm.from_checkpoint(path, config=...)`` for mappings that depend
    on the episode.
    """

    table: Dict[Any, str]
    #: ``module:qualname`` of the function this table stands for.
    original: str = ""

    def __call__(self, agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
        try:
            return self.table[agent_id]
        except KeyError:
            raise KeyError(
                f"agent {agent_id!r} is not in the policy mapping recorded in the checkpoint "
                f"(from {self.original or 'a policy_mapping_fn without import path'}; known agents: "
                f"{sorted(self.table, key=repr)}); pass the original config: "
                "Algorithm.from_checkpoint(path, config=...)"
            ) from None


def record_policy_mapping(fn: Callable, agent_ids: Iterable[Any]) -> Optional[RecordedPolicyMapping]:
    """The table ``fn`` gives for ``agent_ids``, or None if it needs an episode or varies."""
    table = {}
    for agent in agent_ids:
        try:
            first, second = fn(agent, None), fn(agent, None)
        except Exception:  # it needs the episode (or fails): no table stands in for it
            return None
        if not isinstance(first, str) or first != second:
            return None
        table[agent] = first
    original = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return RecordedPolicyMapping(table=table, original=original) if table else None


# --------------------------------------------------------------------- allow-list
def _known_bases() -> Tuple[type, ...]:
    from marl.core.multi_rl_module import MultiRLModuleSpec
    from marl.core.rl_module import RLModuleSpec
    from marl.models.default_model_config import DefaultModelConfig

    return (RLModuleSpec, MultiRLModuleSpec, DefaultModelConfig)


def dataclass_allowed(cls: Any) -> bool:
    """Whether a checkpoint may construct ``cls`` from file data."""
    if not (inspect.isclass(cls) and dataclasses.is_dataclass(cls)):
        return False
    return cls.__module__.split(".", 1)[0] in io.MARL_PACKAGES or issubclass(cls, _known_bases())


def _expected_base(name: Optional[str]) -> Optional[Tuple[type, ...]]:
    """The base class a callable stored under ``name`` must have (it is instantiated later)."""
    if name == "module_class":
        from marl.core.rl_module import RLModule

        return (RLModule,)
    if name == "multi_rl_module_class":
        from marl.core.multi_rl_module import MultiRLModule

        return (MultiRLModule,)
    if name == "learner_class":
        from learners.learner import Learner

        return (Learner,)
    if name == "algo_class":
        from marl.algorithms.algorithm import Algorithm

        return (Algorithm,)
    return None


def _env_bases() -> Tuple[type, ...]:
    """Classes an env class from a checkpoint must subclass (it is called with env_config)."""
    bases: List[type] = [gym.Env]
    try:
        from pettingzoo import AECEnv, ParallelEnv

        bases += [AECEnv, ParallelEnv]
    except ImportError:  # pragma: no cover - pettingzoo is a dependency
        pass
    return tuple(bases)


def _storable_path(obj: Any) -> Optional[str]:
    """The import path a checkpoint can store ``obj`` under (what loading accepts), or None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    path = f"{module}:{qualname}"
    try:
        found = io.import_object(path)
    except io.CheckpointError:
        return None
    return path if found is obj else None


# ------------------------------------------------------------------------ encoding
class ConfigEncoder:
    """Encodes config values; what it cannot store is listed in ``unsaved``."""

    def __init__(self) -> None:
        self.unsaved: List[Dict[str, str]] = []

    def _unsaved(self, value: Any, key: str) -> Dict[str, str]:
        entry = {"key": key, "repr": repr(value)[:200]}
        self.unsaved.append(entry)
        return {"__unsaved__": key, "repr": entry["repr"]}

    def encode(self, value: Any, key: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (list, tuple)):
            return [self.encode(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (set, frozenset)):
            return {"__set__": [self.encode(v, f"{key}{{}}") for v in sorted(value, key=repr)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"__dict__": {k: self.encode(v, f"{key}[{k!r}]") for k, v in value.items()}}
            return {"__items__": [[self.encode(k, f"{key}<key>"), self.encode(v, f"{key}[{k!r}]")]
                                  for k, v in value.items()]}
        if isinstance(value, gym.Space):
            try:
                return {"__space__": space_to_json(value)}
            except TypeError:
                return self._unsaved(value, key)
        if isinstance(value, ModuleType):
            if io._refused_module(value.__name__) is None:
                return {"__module__": value.__name__}
            return self._unsaved(value, key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if dataclass_allowed(type(value)) and _storable_path(type(value)) is not None:
                return {
                    "__dataclass__": io.class_path(type(value)),
                    "fields": {f.name: self.encode(getattr(value, f.name), f"{key}.{f.name}")
                               for f in dataclasses.fields(value) if f.init},
                }
            return self._unsaved(value, key)
        if isinstance(value, type) or callable(value):
            path = _storable_path(value)
            if path is not None:
                return {"__callable__": path}
        return self._unsaved(value, key)


# ------------------------------------------------------------------------ decoding
_UNSAVED = object()


class ConfigDecoder:
    """Rebuilds encoded values from the allow-list; errors name ``source`` and the key."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.unsaved: List[Tuple[str, str]] = []

    def _fail(self, key: str, message: str) -> io.CheckpointError:
        return io.CheckpointError(f"checkpoint file {str(self.source)!r}, config value {key!r}: {message}")

    def decode(self, value: Any, key: str, name: Optional[str] = None) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            raise self._fail(key, f"unexpected JSON value {value!r}")
        tags = [k for k in value if k.startswith("__") and k.endswith("__")]
        if len(tags) != 1:
            raise self._fail(key, f"expected one tagged form, got keys {sorted(value)}")
        tag = tags[0]
        body = value[tag]
        if tag == "__set__" and isinstance(body, list):
            try:
                return set(self.decode(v, key) for v in body)
            except TypeError as e:
                raise self._fail(key, f"set of unhashable values: {e}") from e
        if tag == "__dict__" and isinstance(body, dict):
            return {k: self.decode(v, f"{key}[{k!r}]") for k, v in body.items()}
        if tag == "__items__" and isinstance(body, list):
            out = {}
            for pair in body:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise self._fail(key, f"malformed item {pair!r}")
                k = self.decode(pair[0], key)
                try:
                    out[tuple(k) if isinstance(k, list) else k] = self.decode(pair[1], f"{key}[{k!r}]")
                except TypeError as e:
                    raise self._fail(key, f"unhashable key {k!r}") from e
            return out
        if tag == "__space__":
            try:
                return space_from_json(body)
            except (ValueError, TypeError, KeyError) as e:
                raise self._fail(key, f"invalid space: {e}") from e
        if tag == "__dataclass__":
            return self._dataclass(body, value.get("fields"), key)
        if tag == "__callable__":
            return self._callable(body, key, name)
        if tag == "__module__" and isinstance(body, str):
            import importlib

            refused = io._refused_module(body) if all(p.isidentifier() for p in body.split(".")) else "invalid name"
            if refused:
                raise self._fail(key, f"refused module {body!r}: {refused}")
            try:
                return importlib.import_module(body)
            except ImportError as e:
                raise self._fail(key, f"cannot import module {body!r}: {e}") from e
        if tag == "__unsaved__":
            self.unsaved.append((str(body), str(value.get("repr", ""))))
            return _UNSAVED
        if tag == "__pickled__":
            raise self._fail(key, "refused: the value was pickled by an older marl, and pickles are never loaded")
        raise self._fail(key, f"unknown form {tag!r}")

    def _dataclass(self, path: Any, fields: Any, key: str) -> Any:
        cls = io.import_object(path, source=self.source, key=key)
        if not dataclass_allowed(cls):
            raise self._fail(
                key, f"refused {path!r}: only dataclasses of marl's packages ({', '.join(io.MARL_PACKAGES)}) "
                "or subclasses of its spec/config classes are rebuilt from a checkpoint"
            )
        if not isinstance(fields, dict):
            raise self._fail(key, f"{path!r} has no 'fields' object")
        init_fields = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(fields) - init_fields)
        if unknown:
            raise self._fail(key, f"{path!r} has no fields {unknown}; its fields: {sorted(init_fields)}")
        kwargs = {k: self.decode(v, f"{key}.{k}", k) for k, v in fields.items()}
        if any(v is _UNSAVED for v in kwargs.values()):
            return _UNSAVED
        try:
            return cls(**kwargs)
        except Exception as e:  # the dataclass's own validation: name the value
            raise self._fail(key, f"cannot rebuild {path!r}: {type(e).__name__}: {e}") from e

    def _callable(self, path: Any, key: str, name: Optional[str]) -> Any:
        obj = io.import_object(path, source=self.source, key=key, base=_expected_base(name))
        if name in ("env", "target") and inspect.isclass(obj) and not issubclass(obj, _env_bases()):
            raise self._fail(
                key, f"refused {path!r}: an env class must subclass gymnasium.Env or a PettingZoo env"
            )
        return obj


def decode(value: Any, source: Path, key: str = "value") -> Any:
    """Decode one encoded value (see the module docstring); raises on unsaved values."""
    decoder = ConfigDecoder(source)
    out = decoder.decode(value, key, key)
    if decoder.unsaved:
        raise _unsaved_error(source, decoder.unsaved)
    return out


def _unsaved_error(source: Path, unsaved: List[Tuple[str, str]]) -> io.CheckpointError:
    listed = "; ".join(f"{k} = {r}" for k, r in unsaved)
    return io.CheckpointError(
        f"checkpoint file {str(source)!r}: these config values were not saved because they have no "
        f"import path (lambdas, closures, objects): {listed}. Build the config again and pass it: "
        "Algorithm.from_checkpoint(path, config=...), or use module-level functions"
    )


# ----------------------------------------------------------------------- the file
def save_config(config: Any, directory: Path, *, agent_ids: Optional[Callable[[], List[Any]]] = None) -> None:
    """Write ``algorithm_config.json``; ``agent_ids()`` (called only when needed)
    lets a lambda ``policy_mapping_fn`` be saved as its agent -> module table."""
    encoder = ConfigEncoder()
    values = {}
    for key, value in config.to_dict().items():
        if key == "policy_mapping_fn" and callable(value) and agent_ids is not None \
                and not isinstance(value, RecordedPolicyMapping) and _storable_path(value) is None:
            value = record_policy_mapping(value, agent_ids()) or value
        values[key] = encoder.encode(value, key)
    algo_class = getattr(config, "algo_class", None)
    data = {
        "config_class": io.class_path(type(config)),
        "algo_class": _storable_path(algo_class) if algo_class is not None else None,
        "values": values,
        "unsaved": encoder.unsaved,
    }
    io.write_json(directory / CONFIG_FILE, data)


def load_config(directory: Path) -> Any:
    """Rebuild the config of ``algorithm_config.json`` (in an already verified checkpoint).

    Raises ``CheckpointError`` naming the file and key for anything outside
    the allow-list, for keys the config class does not have, and for values
    that were not saved.
    """
    from marl.algorithms.algorithm import Algorithm
    from marl.algorithms.algorithm_config import AlgorithmConfig

    source = Path(directory) / CONFIG_FILE
    data = io.read_json(source)
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        raise io.CheckpointError(f"checkpoint file {str(source)!r} has no 'values' object")
    config_cls = io.import_object(data.get("config_class"), source=source, key="config_class", base=AlgorithmConfig)
    config = config_cls()
    known = {k for k in vars(config) if not k.startswith("_")}
    unknown = sorted(set(data["values"]) - known)
    if unknown:
        raise io.CheckpointError(
            f"checkpoint file {str(source)!r} has config keys {unknown} that {config_cls.__name__} does not "
            "know (written by another marl version?); pass the config: Algorithm.from_checkpoint(path, config=...)"
        )
    decoder = ConfigDecoder(source)
    decoded = {key: decoder.decode(value, key, key) for key, value in data["values"].items()}
    if decoder.unsaved:
        raise _unsaved_error(source, decoder.unsaved)
    for key, value in decoded.items():
        setattr(config, key, value)
    if data.get("algo_class"):
        config.algo_class = io.import_object(data["algo_class"], source=source, key="algo_class", base=Algorithm)
    if isinstance(getattr(config, "policy_mapping_fn", None), RecordedPolicyMapping):
        logger.warning(
            "%s: policy_mapping_fn (%s) had no import path; using the agent -> module table recorded "
            "at save time: %s", source, config.policy_mapping_fn.original, config.policy_mapping_fn.table,
        )
    return config
