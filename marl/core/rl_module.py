"""The framework-independent RLModule contract and its spec.

An ``RLModule`` is built from four constructor arguments and never has its
constructor overridden: subclasses put their layers in ``setup()``. This keeps
every module rebuildable from a spec or a checkpoint's metadata alone.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Type

import gymnasium as gym

from marl.core import checkpoint_io as io
from marl.core.columns import Columns
from marl.core.constants import DEFAULT_MODULE_ID
from marl.core.spaces_json import space_from_json, space_to_json


def model_config_to_dict(model_config: Any) -> Dict[str, Any]:
    """Modules always see a plain dict; dataclass configs are converted."""
    if model_config is None:
        return {}
    if isinstance(model_config, dict):
        return dict(model_config)
    if hasattr(model_config, "to_dict"):
        return dict(model_config.to_dict())
    if dataclasses.is_dataclass(model_config):
        return dataclasses.asdict(model_config)
    raise TypeError(
        f"model_config must be a dict or a DefaultModelConfig, got {type(model_config).__name__}"
    )


class RLModule:
    """Base of all modules. See ``TorchRLModule`` for the class users subclass."""

    framework: Optional[str] = None
    #: Whether the module acts for agents (a shared encoder does not).
    is_policy: bool = True

    def __init__(
        self,
        observation_space: Optional[gym.Space] = None,
        action_space: Optional[gym.Space] = None,
        inference_only: bool = False,
        model_config: Any = None,
    ) -> None:
        self._init_framework()
        self.observation_space = observation_space
        self.action_space = action_space
        self.inference_only = bool(inference_only)
        self.model_config = model_config_to_dict(model_config)
        self.setup()

    def _init_framework(self) -> None:
        """Hook for the framework base class (``torch.nn.Module.__init__``)."""

    def setup(self) -> None:
        """Build sub-networks here; spaces and ``model_config`` are already set."""

    # ------------------------------------------------------------------ forward
    def forward_inference(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        """Greedy/evaluation pass: returns actions or action-distribution inputs."""
        self._check_input_batch(batch)
        return self._forward_inference(batch, **kwargs)

    def forward_exploration(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        """Sampling pass used while collecting training data."""
        self._check_input_batch(batch)
        return self._forward_exploration(batch, **kwargs)

    def forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        """Training pass: whatever the loss needs, with gradients."""
        if self.inference_only:
            raise RuntimeError(
                f"{type(self).__name__} was built with inference_only=True and cannot "
                "run forward_train; build it with inference_only=False to train it"
            )
        self._check_input_batch(batch)
        return self._forward_train(batch, **kwargs)

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        raise NotImplementedError(
            f"{type(self).__name__} implements neither _forward() nor the "
            "phase-specific _forward_inference/_forward_exploration/_forward_train"
        )

    def _forward_inference(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._forward(batch, **kwargs)

    def _forward_exploration(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._forward(batch, **kwargs)

    def _forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self._forward(batch, **kwargs)

    def _check_input_batch(self, batch: Dict[str, Any]) -> None:
        """Reject observations whose shape does not fit the observation space."""
        if not isinstance(batch, dict):
            raise TypeError(
                f"{type(self).__name__} forward passes take a dict batch, got {type(batch).__name__}"
            )
        if Columns.OBS in batch and self.observation_space is not None:
            check_observation_shape(
                batch[Columns.OBS], self.observation_space, owner=type(self).__name__
            )

    # ------------------------------------------------------- action distributions
    def get_inference_action_dist_cls(self) -> type:
        from marl.distributions import get_default_dist_cls

        return get_default_dist_cls(self.action_space)

    def get_exploration_action_dist_cls(self) -> type:
        return self.get_inference_action_dist_cls()

    def get_train_action_dist_cls(self) -> type:
        return self.get_inference_action_dist_cls()

    # ------------------------------------------------------------------- state
    def get_initial_state(self) -> Dict[str, Any]:
        """Recurrent state at the start of an episode; ``{}`` when stateless."""
        return {}

    def is_stateful(self) -> bool:
        return bool(self.get_initial_state())

    # What the sampler and the learner ask of a module, instead of reading the
    # default models' config keys: a custom module overrides these.
    def max_seq_len(self) -> int:
        """Length of the training sequences of a stateful module (default: the
        model config's ``max_seq_len``, else 20, as RLlib)."""
        return int(_config_value(self.model_config, "max_seq_len", 20) or 20)

    def needs_prev_actions(self) -> bool:
        """Whether forward passes read ``Columns.PREV_ACTIONS`` (default: a stateful
        module whose model config sets ``lstm_use_prev_action``)."""
        return self.is_stateful() and bool(_config_value(self.model_config, "use_lstm", True)) \
            and bool(_config_value(self.model_config, "lstm_use_prev_action", False))

    def needs_prev_rewards(self) -> bool:
        """Whether forward passes read ``Columns.PREV_REWARDS`` (default: a stateful
        module whose model config sets ``lstm_use_prev_reward``)."""
        return self.is_stateful() and bool(_config_value(self.model_config, "use_lstm", True)) \
            and bool(_config_value(self.model_config, "lstm_use_prev_reward", False))

    def get_state(self, inference_only: bool = False) -> Dict[str, Any]:
        """Weights as ``{name: tensor}``; framework subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} has no framework state; subclass TorchRLModule"
        )

    def set_state(self, state: Dict[str, Any]) -> None:
        """Load what :meth:`get_state` returned; framework subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} has no framework state; subclass TorchRLModule"
        )

    def as_multi_rl_module(self):
        """Wrap this module in a ``MultiRLModule`` under ``DEFAULT_MODULE_ID``."""
        from marl.core.multi_rl_module import MultiRLModule

        multi = MultiRLModule(
            observation_space=self.observation_space,
            action_space=self.action_space,
            inference_only=self.inference_only,
        )
        multi.add_module(DEFAULT_MODULE_ID, self)
        return multi

    # -------------------------------------------------------------- checkpoints
    def get_ctor_metadata(self) -> Dict[str, Any]:
        """Everything needed to rebuild this module, as JSON."""
        return {
            "kind": "rl_module",
            "format_version": io.FORMAT_VERSION,
            "class": io.class_path(type(self)),
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "inference_only": self.inference_only,
            "model_config": io.config_to_json(self.model_config),
        }

    def save_to_path(self, path: Optional[str] = None) -> str:
        """Write a checkpoint directory atomically and return its path.

        ``path`` must be missing, empty or an earlier marl checkpoint; any
        other directory is refused (``CheckpointError``) and left untouched.
        """
        path = path or tempfile.mkdtemp(prefix="rl_module_")
        with io.atomic_directory(path) as staging:
            self._write_checkpoint(staging)
        return str(path)

    def _write_checkpoint(self, directory: Path) -> None:
        io.save_tensors(directory / io.MODULE_STATE_FILE, self.get_state())
        io.write_metadata(directory, self.get_ctor_metadata())  # last: it seals the files

    def _read_checkpoint_state(
        self, path: str | Path, verified: Optional[io.VerifiedCheckpoint] = None
    ) -> Dict[str, Any]:
        """Read and check a module checkpoint's weights against this module; changes nothing.

        Verifies the checkpoint's checksums (unless ``verified``, an enclosing
        checkpoint that was verified, covers it) and that parameter names and
        shapes fit; raises ``CheckpointError`` naming the file otherwise.
        """
        path = Path(path)
        meta_path = path / io.METADATA_FILE
        if verified is not None and verified.covers(meta_path):
            meta = io.read_metadata(path)
        else:
            path = io.locate_checkpoint(path)
            meta = io.verify_checkpoint(path).meta
        if meta["kind"] != "rl_module":
            raise io.CheckpointError(
                f"{str(path / io.METADATA_FILE)!r} is not a single-module checkpoint (kind={meta['kind']!r})"
            )
        state_file = path / io.MODULE_STATE_FILE
        if io.MODULE_STATE_FILE not in meta["files"]:
            raise io.CheckpointError(f"checkpoint file {str(state_file)!r} is not listed in its metadata")
        state = io.load_tensors(state_file)
        check_state_fits(self, state, state_file)
        return state

    def restore_from_path(self, path: str, component: Optional[str] = None) -> None:
        """Load weights from a module checkpoint into this (already built) module.

        All or nothing: the weights are verified and checked against this
        module before any parameter changes.
        """
        if component is not None:
            raise ValueError(
                f"{type(self).__name__} is a single module and has no component "
                f"{component!r}; pass the module checkpoint's path without component"
            )
        state = self._read_checkpoint_state(path)
        try:
            self.set_state(state)
        except (KeyError, ValueError) as e:
            raise io.CheckpointError(f"cannot load {str(Path(path) / io.MODULE_STATE_FILE)!r}: {e}") from e

    @classmethod
    def from_checkpoint(cls, path: str) -> "RLModule":
        """Rebuild a module (or multi-module) of the class recorded in ``path``.

        Every file is verified against its sha256 first; the recorded class
        must be an ``RLModule`` subclass importable from an installed module
        (its import runs that module's import-time code), and nothing else
        from the files is imported or called.
        """
        path = io.locate_checkpoint(path)
        verified = io.verify_checkpoint(path)
        meta = verified.meta
        kind = meta.get("kind")
        source = path / io.METADATA_FILE
        if kind == "multi_rl_module":
            from marl.core.multi_rl_module import MultiRLModule

            return MultiRLModule._from_checkpoint_metadata(path, meta, verified)
        if kind != "rl_module":
            raise io.CheckpointError(
                f"{str(source)!r} does not describe an RLModule "
                f"(kind={kind!r}); expected 'rl_module' or 'multi_rl_module'"
            )
        module = module_spec_from_metadata(meta, source).build()
        module.set_state(module._read_checkpoint_state(path, verified=verified))
        return module


def module_spec_from_metadata(meta: Dict[str, Any], source: Path) -> "RLModuleSpec":
    """The spec a module's ``metadata.json`` describes (class checked, nothing built).

    Also reads the module descriptions an exported policy keeps in its model
    config (``marl.core.export``), so both go through the one allow-list.
    """
    try:
        return RLModuleSpec(
            module_class=io.import_class(meta["class"], source=source, base=RLModule),
            observation_space=space_from_json(meta["observation_space"]),
            action_space=space_from_json(meta["action_space"]),
            inference_only=bool(meta["inference_only"]),
            model_config=io.config_from_json(meta["model_config"], source=source),
        )
    except KeyError as e:
        raise io.CheckpointError(f"checkpoint file {str(source)!r} has no {e}") from e
    except (ValueError, TypeError) as e:
        raise io.CheckpointError(f"checkpoint file {str(source)!r} is invalid: {e}") from e


def check_state_fits(module: Any, state: Dict[str, Any], source: Path) -> None:
    """Raise ``CheckpointError`` naming ``source`` unless ``state`` loads into ``module``.

    The check a torch module's strict ``set_state`` makes (names, shapes),
    done before anything is loaded, so a multi-module or algorithm restore
    can check every module first. Modules without ``state_dict`` are left to
    their ``set_state``.
    """
    state_dict = getattr(module, "state_dict", None)
    if not callable(state_dict):
        return
    own = state_dict()
    incoming = dict(state)
    if getattr(module, "inference_only", False) and hasattr(module, "_non_inference_prefixes"):
        prefixes = tuple(module._non_inference_prefixes())
        if prefixes:
            incoming = {k: v for k, v in incoming.items() if not k.startswith(prefixes)}
    name = type(module).__name__
    missing, unexpected = sorted(set(own) - set(incoming)), sorted(set(incoming) - set(own))
    if missing or unexpected:
        raise io.CheckpointError(
            f"{str(source)!r} does not fit {name}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''} (was it saved from a "
            "different model_config?)"
        )
    mismatched = [
        f"parameter {k!r} has shape {tuple(own[k].shape)} in the module but "
        f"{tuple(incoming[k].shape)} in the checkpoint"
        for k in own if tuple(incoming[k].shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise io.CheckpointError(
            f"{str(source)!r} does not fit {name}: " + "; ".join(mismatched[:4])
            + ("; ..." if len(mismatched) > 4 else "") + " (was it saved from a different model_config?)"
        )


def check_observation_shape(obs: Any, space: gym.Space, *, owner: str) -> None:
    """Raise naming the expected shape when ``obs`` does not end in ``space.shape``."""
    if isinstance(space, gym.spaces.Dict) and isinstance(obs, dict):
        for key, sub in space.spaces.items():
            if key in obs:
                check_observation_shape(obs[key], sub, owner=f"{owner}[{key!r}]")
        return
    if not isinstance(space, gym.spaces.Box) or not hasattr(obs, "shape"):
        return
    expected = tuple(space.shape)
    actual = tuple(obs.shape)
    n = len(expected)
    if len(actual) < n + 1 or actual[len(actual) - n :] != expected:
        raise ValueError(
            f"{owner}: observation batch of shape {actual} does not fit the observation "
            f"space's shape {expected}; expected [batch, *{expected}] "
            f"(or [batch, time, *{expected}] for sequences)"
        )


def _config_value(model_config: Any, key: str, default: Any) -> Any:
    """A model config entry, whether the config is a dict or a dataclass."""
    if model_config is None:
        return default
    if isinstance(model_config, dict):
        return model_config.get(key, default)
    return getattr(model_config, key, default)


@dataclass
class RLModuleSpec:
    """How to build one module; algorithms fill in what the env determines."""

    module_class: Optional[Type[RLModule]] = None
    observation_space: Optional[gym.Space] = None
    action_space: Optional[gym.Space] = None
    inference_only: bool = False
    model_config: Any = None
    load_state_path: Optional[str] = None

    def build(self) -> RLModule:
        if self.module_class is None:
            raise ValueError(
                "RLModuleSpec.module_class is None: set it, or pass the spec to an "
                "algorithm config, which fills in its default module class"
            )
        module = self.module_class(
            observation_space=self.observation_space,
            action_space=self.action_space,
            inference_only=self.inference_only,
            model_config=self.model_config,
        )
        if self.load_state_path is not None:
            module.restore_from_path(self.load_state_path)
        return module

    def update(self, other: "RLModuleSpec", override: bool = False) -> "RLModuleSpec":
        """Fill fields that are unset here from ``other`` (all fields if ``override``)."""
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            theirs = getattr(other, f.name)
            if theirs is not None and (override or mine is None):
                setattr(self, f.name, theirs)
        return self

    def copy(self) -> "RLModuleSpec":
        return dataclasses.replace(self)
