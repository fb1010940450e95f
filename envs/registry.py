"""The env registry: turn whatever a user passes to ``.environment(env, env_config)``
into a creator ``env_config -> ParallelEnv``.

RLlib users pass envs in many forms (gymnasium ids, PettingZoo modules, classes,
callables, names given to ``tune.register_env``); every form ends here as one
picklable `EnvCreator`, so env runners in other processes build their envs the
same way. Names are resolved (and mistakes reported) when the creator is made, not
later inside an env runner.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import re
import warnings
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Callable

import gymnasium as gym
import pettingzoo
from pettingzoo import ParallelEnv
from pettingzoo.env_registry.exceptions import PettingZooRegistryError

from envs.fast_parallel import FAST_PARALLEL_MODULE_PREFIXES, fast_parallel
from envs.to_parallel import to_parallel_env

#: The accepted forms of ``env``, with examples; every "unknown env" error lists them.
ACCEPTED_ENV_FORMS = """\
  - a gymnasium id: "CartPole-v1", "FrozenLake-v1", or "module:EnvId" such as "ale_py:ALE/Pong-v5"
  - the import path of a PettingZoo env module: "mpe2.simple_spread_v3",
    "pettingzoo.butterfly.pistonball_v6", "pettingzoo.classic.connect_four_v3"
    (or of a class / factory function: "my_package.my_envs.MyEnv")
  - a PettingZoo registry name "family/name-vN": "butterfly/pistonball-v6",
    "classic/connect_four-v3", "sisl/multiwalker-v9", "mpe/simple_spread-v3"
  - a name registered with envs.register_env(name, creator)
  - a class: a ParallelEnv / AECEnv / gymnasium.Env subclass, or any class taking `config`
    (e.g. MultiAgentCartPole)
  - a callable env_config -> env (e.g. envs.pistonball_preset or a SuperSuit pipeline)"""

#: ``family/name-vN``; PettingZoo's own ids also allow leaving out ``-vN``.
_REGISTRY_NAME = re.compile(r"^(?P<family>[A-Za-z0-9_.-]+)/(?P<name>\w+?)(?:-v(?P<version>\d+))?$")

#: MPE moved out of PettingZoo into the ``mpe2`` package, which has no registry entries.
_MPE_FAMILY = "mpe"
_MPE_PACKAGE = "mpe2"

#: A PettingZoo env module path: ``pettingzoo.<family>.<name>_v<N>`` or ``mpe2.<name>_v<N>``.
_MODULE_PATH = re.compile(
    rf"^(?:pettingzoo\.(?P<family>\w+)|{_MPE_PACKAGE})\.(?P<name>\w+?)_v(?P<version>\d+)$"
)
#: What a name is without its family/package prefix and version, for "did you mean".
_BARE_NAME = re.compile(r"^(?:.*[/.:])?(?P<bare>.+?)(?:[-_]v\d+)?$")

#: Names given to `register_env`, checked before every other string form.
_USER_ENVS: dict[str, Callable[..., Any]] = {}


class UnknownEnvError(ValueError):
    """An ``env`` string that names no environment in any accepted form."""


def register_env(name: str, creator: Callable[[dict[str, Any]], Any]) -> None:
    """Make ``name`` usable wherever an env is accepted (RLlib's ``tune.register_env``).

    ``creator(env_config)`` must return a ParallelEnv, AECEnv or gymnasium.Env. A
    registered name wins over gymnasium and PettingZoo ids of the same spelling.
    Registration is per process; creators made from the name carry the creator
    itself, so env runners in other processes do not need to register it again.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_env: name must be a non-empty str, got {name!r}.")
    if not callable(creator):
        raise TypeError(
            f"register_env({name!r}, ...): creator must be a callable env_config -> env, "
            f"got {type(creator).__name__}: {creator!r}."
        )
    if name in _USER_ENVS and _USER_ENVS[name] is not creator:
        warnings.warn(f"register_env: replacing the creator registered as {name!r}.", stacklevel=2)
    _USER_ENVS[name] = creator


@dataclass(frozen=True)
class EnvCreator:
    """A picklable ``env_config -> ParallelEnv`` built by `make_env_creator`.

    Calling it merges the call's ``env_config`` over the one given to
    `make_env_creator` and returns the env in the common interface.

    Attributes:
        kind: how ``target`` builds the env: ``"gym"`` (a gymnasium id),
            ``"pettingzoo_module"`` (a module import path), ``"pettingzoo_registry"``
            (``(env_type, id)`` in PettingZoo's registry), ``"class"`` or ``"callable"``.
        target: the id / module path / class / callable.
        env_config: the default config.
        description: what the user passed, for error messages.
    """

    kind: str
    target: Any
    env_config: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __call__(self, env_config: dict[str, Any] | None = None) -> ParallelEnv:
        if env_config is not None and not isinstance(env_config, dict):
            raise TypeError(
                f"The env creator for {self.description} expects an env_config dict, got "
                f"{type(env_config).__name__}: {env_config!r}."
            )
        config = {**self.env_config, **(env_config or {})}
        return to_parallel_env(self._build(config), source=f"The env creator for {self.description}")

    def _build(self, config: dict[str, Any]) -> Any:
        if self.kind == "gym":
            return gym.make(self.target, **config)
        if self.kind == "pettingzoo_module":
            env = _pettingzoo_module_factory(_import_module(self.target))(**config)
            if self.target.startswith(FAST_PARALLEL_MODULE_PREFIXES):
                env = fast_parallel(env)
            return env
        if self.kind == "pettingzoo_registry":
            env_type, env_id = self.target
            return pettingzoo.make(env_type, env_id, **config)
        if self.kind == "class":
            return _instantiate(self.target, config)
        if self.kind == "callable":
            return _call_creator(self.target, config, self.description)
        raise ValueError(
            f"EnvCreator kind {self.kind!r} is not one of 'gym', 'pettingzoo_module', "
            "'pettingzoo_registry', 'class', 'callable'."
        )


def make_env_creator(
    env: str | type | Callable[..., Any] | ModuleType,
    env_config: dict[str, Any] | None = None,
) -> EnvCreator:
    """Resolve ``env`` (any form in `ACCEPTED_ENV_FORMS`) into a creator ``env_config -> ParallelEnv``.

    The returned creator wraps what it builds: AECEnv -> `TurnBasedParallelEnv`,
    gymnasium.Env -> `SingleAgentParallelEnv`, ParallelEnv as is. ``env_config`` is
    the default config; a config passed to the creator is merged over it. For
    gymnasium ids it becomes ``gym.make`` kwargs, for PettingZoo modules and registry
    names the ``parallel_env`` / ``env`` kwargs.

    Raises:
        UnknownEnvError (a ValueError): a string that names no env; the message lists
            the accepted forms.
        TypeError: ``env`` of a type that is none of the forms (e.g. an env instance).
    """
    if env_config is not None and not isinstance(env_config, dict):
        raise TypeError(
            f"make_env_creator({env!r}): env_config must be a dict or None, got "
            f"{type(env_config).__name__}: {env_config!r}."
        )
    config = dict(env_config or {})
    if isinstance(env, EnvCreator):
        return EnvCreator(env.kind, env.target, {**env.env_config, **config}, env.description)
    if isinstance(env, str):
        return _resolve_string(env, config)
    if isinstance(env, ModuleType):
        _pettingzoo_module_factory(env)  # fail now if it is no env module
        return EnvCreator("pettingzoo_module", env.__name__, config, f"module {env.__name__}")
    if isinstance(env, type):
        return EnvCreator("class", env, config, f"class {env.__qualname__}")
    if callable(env):
        name = getattr(env, "__qualname__", None) or type(env).__qualname__
        return EnvCreator("callable", env, config, f"callable {name}")
    raise TypeError(
        f"Cannot make an env from an object of type {type(env).__module__}."
        f"{type(env).__qualname__} ({env!r:.100}). An env instance is not accepted: pass "
        f"something that builds one. Accepted forms:\n{ACCEPTED_ENV_FORMS}"
    )


def make_env(
    env: str | type | Callable[..., Any] | ModuleType,
    env_config: dict[str, Any] | None = None,
) -> ParallelEnv:
    """Build one env in the common interface: ``make_env_creator(env, env_config)()``."""
    return make_env_creator(env, env_config)()


# ---------------------------------------------------------------- resolution
def _resolve_string(name: str, config: dict[str, Any]) -> EnvCreator:
    """Try each string form in a fixed order; the first that knows ``name`` wins."""
    if name in _USER_ENVS:
        creator = make_env_creator(_USER_ENVS[name], config)
        return replace(creator, description=f"registered env {name!r} ({creator.description})")
    if ":" in name:
        return _resolve_gym_module_id(name, config)
    if _gym_has(name):
        return EnvCreator("gym", name, config, f"gymnasium env {name!r}")
    match = _REGISTRY_NAME.match(name)
    if match:
        creator = _resolve_registry_name(name, match, config)
        if creator is not None:
            return creator
    if "." in name and "/" not in name:
        creator = _resolve_import_path(name, config)
        if creator is not None:
            return creator
    raise _unknown(name)


def _resolve_gym_module_id(name: str, config: dict[str, Any]) -> EnvCreator:
    """``"module:EnvId"``: import the module (it registers its ids), then check the id."""
    module_name, _, env_id = name.partition(":")
    try:
        _import_module(module_name)
    except ImportError as error:
        raise UnknownEnvError(
            f"Unknown environment {name!r}: its module part {module_name!r} cannot be "
            f"imported ({error}). Accepted forms:\n{ACCEPTED_ENV_FORMS}"
        ) from error
    if not _gym_has(env_id):
        raise _unknown(name, detail=f"module {module_name!r} registers no gymnasium id {env_id!r}")
    return EnvCreator("gym", name, config, f"gymnasium env {name!r}")


def _resolve_registry_name(
    name: str, match: re.Match[str], config: dict[str, Any]
) -> EnvCreator | None:
    family, env_name, version = match.group("family", "name", "version")
    if family == _MPE_FAMILY:
        if version is None:
            raise _unknown(name, detail="MPE names need their version, e.g. 'mpe/simple_spread-v3'")
        module_name = f"{_MPE_PACKAGE}.{env_name}_v{version}"
        if _module_exists(module_name):
            return EnvCreator("pettingzoo_module", module_name, config, f"PettingZoo env {name!r}")
        _raise_if_misnamed(name, family, env_name, version)
        return None
    # Prefer the parallel entry point; turn-based games (classic) only have an AEC one.
    for env_type in ("parallel", "aec"):
        try:
            spec = pettingzoo.spec(env_type, name)
        except PettingZooRegistryError:
            continue
        return EnvCreator("pettingzoo_registry", (env_type, spec.id), config, f"PettingZoo env {name!r}")
    _raise_if_misnamed(name, family, env_name, version)
    return None


def _resolve_import_path(name: str, config: dict[str, Any]) -> EnvCreator | None:
    """A PettingZoo env module path, or the path of a class / factory in a module."""
    if _module_exists(name):
        module = _import_module(name)
        _pettingzoo_module_factory(module)  # fail now if it is no env module
        return EnvCreator("pettingzoo_module", name, config, f"module {name!r}")
    match = _MODULE_PATH.match(name)
    if match:
        _raise_if_misnamed(name, match["family"] or _MPE_FAMILY, match["name"], match["version"])
    module_name, _, attr = name.rpartition(".")
    if not _module_exists(module_name):
        return None
    target = getattr(_import_module(module_name), attr, None)
    if target is None:
        return None
    return make_env_creator(target, config)


def _pettingzoo_module_factory(module: ModuleType) -> Callable[..., Any]:
    """The module's ``parallel_env`` when it has one, else its (AEC) ``env``."""
    factory = getattr(module, "parallel_env", None) or getattr(module, "env", None)
    if not callable(factory):
        raise UnknownEnvError(
            f"Module {module.__name__!r} is not a PettingZoo env module: it has neither a "
            f"`parallel_env` nor an `env` function. Accepted forms:\n{ACCEPTED_ENV_FORMS}"
        )
    return factory


# ------------------------------------------------------------------ calling
def _instantiate(cls: type, config: dict[str, Any]) -> Any:
    """``cls(config=config)`` when the constructor takes ``config``, else ``cls(**config)``."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "config" in parameters:
        return cls(config=config)
    return cls(**config)


def _call_creator(fn: Callable[..., Any], config: dict[str, Any], description: str) -> Any:
    """``fn(env_config)``; keyword-only factories (``parallel_env(**kw)``) get ``**env_config``."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: use the documented form
        return fn(config)
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if positional:
        return fn(config)
    if any(p.kind in (p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in parameters):
        return fn(**config)
    if config:
        raise TypeError(
            f"The env creator {description} takes no arguments, so it cannot receive "
            f"env_config {config!r}; expected a callable env_config -> env."
        )
    return fn()


# ------------------------------------------------------------------ lookups
def _import_module(module_name: str) -> ModuleType:
    # PettingZoo env modules warn that the registry is the new way; the module path
    # is a form we support on purpose, so that warning is noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return importlib.import_module(module_name)


def _module_exists(module_name: str) -> bool:
    if not module_name:
        return False
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _gym_has(env_id: str) -> bool:
    try:
        gym.spec(env_id)
    except gym.error.Error:  # unregistered or malformed id
        return False
    return True


@functools.lru_cache(maxsize=1)
def _pettingzoo_catalogue() -> dict[tuple[str, str], dict[int, tuple[str, str]]]:
    """``(family, name) -> {version: (registry name, module path)}`` of every PettingZoo env,
    MPE's from the ``mpe2`` package."""
    catalogue: dict[tuple[str, str], dict[int, tuple[str, str]]] = {}
    for spec in pettingzoo.aec_registry.values():
        module = f"pettingzoo.{spec.namespace}.{spec.name}_v{spec.version}"
        catalogue.setdefault((spec.namespace, spec.name), {})[spec.version] = (spec.id, module)
    mpe = importlib.util.find_spec(_MPE_PACKAGE)
    for info in pkgutil.iter_modules(mpe.submodule_search_locations if mpe else []):
        match = _MODULE_PATH.match(f"{_MPE_PACKAGE}.{info.name}")
        if match:
            env_name, version = match["name"], int(match["version"])
            catalogue.setdefault((_MPE_FAMILY, env_name), {})[version] = (
                f"{_MPE_FAMILY}/{env_name}-v{version}", f"{_MPE_PACKAGE}.{info.name}")
    return catalogue


def _raise_if_misnamed(name: str, family: str, env_name: str, version: str | None) -> None:
    """``name`` asks for a known PettingZoo env at a version or path it does not have (the
    deprecated ``knights_archers_zombies_v10``, MPE's old ``pettingzoo.mpe`` path): say how
    to ask for the current one."""
    versions = _pettingzoo_catalogue().get((family, env_name))
    if not versions or version is None:
        return
    asked, newest = int(version), max(versions)
    if asked in versions:
        problem, current = f"{family}/{env_name}-v{asked} is not importable as {name!r}", asked
    else:
        package = _MPE_PACKAGE if family == _MPE_FAMILY else "pettingzoo"
        status = "deprecated" if asked < newest else "not available"
        problem = (f"version v{asked} of {family}/{env_name} is {status} in {package} "
                   f"{importlib.metadata.version(package)}; the current version is v{newest}")
        current = newest
    registry_name, module_path = versions[current]
    raise _unknown(name, detail=f"{problem}: ask for {registry_name!r} or {module_path!r}", suggest=False)


def _known_names() -> list[str]:
    pettingzoo_names = [n for versions in _pettingzoo_catalogue().values() for pair in versions.values() for n in pair]
    return [*_USER_ENVS, *gym.registry, *pettingzoo_names]


def _close_names(name: str, limit: int = 3) -> list[str]:
    """Known names close to ``name``: by spelling, else by bare name ("connect_four" ->
    "classic/connect_four-v3", "pettingzoo.classic.connect_four_v3")."""
    known = _known_names()
    close = difflib.get_close_matches(name, known, n=limit, cutoff=0.75)
    if close:
        return close
    by_bare: dict[str, list[str]] = {}
    for known_name in known:
        by_bare.setdefault(_bare_name(known_name), []).append(known_name)
    matches = difflib.get_close_matches(_bare_name(name), list(by_bare), n=limit, cutoff=0.8)
    return [known_name for bare in matches for known_name in by_bare[bare]][:limit]


def _bare_name(name: str) -> str:
    match = _BARE_NAME.match(name.lower())
    return match["bare"] if match else name.lower()


def _unknown(name: str, detail: str | None = None, suggest: bool = True) -> UnknownEnvError:
    close = _close_names(name) if suggest else []
    lines = [f"Unknown environment {name!r}" + (f" ({detail})" if detail else "") + "."]
    if name.startswith("ALE/"):
        lines.append(f'Atari ids need their module prefix: "ale_py:{name}".')
    if close:
        lines.append(f"Did you mean: {', '.join(repr(c) for c in close)}?")
    lines.append(f"`env` accepts:\n{ACCEPTED_ENV_FORMS}")
    return UnknownEnvError("\n".join(lines))
