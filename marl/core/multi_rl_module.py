"""Containers of several modules: multi-agent policies, shared encoders.

A ``MultiRLModule`` is itself a ``TorchRLModule`` whose sub-modules live in
an ``nn.ModuleDict`` (``_rl_modules``), so ``parameters()`` yields a shared
parameter once, ``.to(device)`` moves everything, and a subclass can override
``setup()`` / ``_forward()`` to route data between sub-modules (the guide's
shared-encoder container).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Type, Union

import gymnasium as gym
import torch
from torch import nn

from marl.core import checkpoint_io as io
from marl.core.constants import DEFAULT_MODULE_ID, SHARED_ENCODER_ID, ModuleID
from marl.core.rl_module import RLModule, RLModuleSpec, module_spec_from_metadata
from marl.core.spaces_json import space_from_json
from marl.core.torch_rl_module import TorchRLModule


def _check_module_id(module_id: Any) -> None:
    if not isinstance(module_id, str) or not module_id or "." in module_id:
        raise ValueError(
            f"module id {module_id!r} is invalid: module ids are non-empty strings "
            "without '.' (they name sub-directories and parameter prefixes)"
        )


class MultiRLModule(TorchRLModule):
    """A mapping ``module_id -> RLModule`` that is one ``nn.Module``."""

    def __init__(
        self,
        observation_space: Optional[gym.Space] = None,
        action_space: Optional[gym.Space] = None,
        inference_only: bool = False,
        model_config: Any = None,
        rl_module_specs: Optional[Dict[ModuleID, RLModuleSpec]] = None,
    ) -> None:
        specs = dict(rl_module_specs or {})
        for module_id in specs:
            _check_module_id(module_id)
        object.__setattr__(self, "_rl_module_specs", specs)
        super().__init__(observation_space, action_space, inference_only, model_config)

    def setup(self) -> None:
        """Build every sub-module from its spec into ``self._rl_modules``."""
        self._rl_modules = nn.ModuleDict(
            {module_id: spec.build() for module_id, spec in self._rl_module_specs.items()}
        )

    # --------------------------------------------------------------- mapping
    def __getitem__(self, module_id: ModuleID) -> RLModule:
        if module_id not in self._rl_modules:
            raise KeyError(
                f"module id {module_id!r} is not in this MultiRLModule; valid ids: "
                f"{sorted(self._rl_modules.keys())}"
            )
        return self._rl_modules[module_id]

    def __contains__(self, module_id: object) -> bool:
        return isinstance(module_id, str) and module_id in self._rl_modules

    def __len__(self) -> int:
        return len(self._rl_modules)

    def __iter__(self):
        return iter(self._rl_modules.keys())

    def keys(self) -> Iterable[ModuleID]:
        return self._rl_modules.keys()

    def items(self):
        return self._rl_modules.items()

    def values(self):
        return self._rl_modules.values()

    def add_module(  # type: ignore[override]
        self, module_id: ModuleID, module: RLModule, *, override: bool = False
    ) -> None:
        """Add a module; adding an existing id needs ``override=True``."""
        _check_module_id(module_id)
        if not isinstance(module, RLModule):
            raise TypeError(
                f"add_module({module_id!r}, ...) takes an RLModule, got {type(module).__name__}"
            )
        if module_id in self._rl_modules and not override:
            raise ValueError(
                f"module id {module_id!r} already exists in this MultiRLModule "
                f"(ids: {sorted(self._rl_modules.keys())}); pass override=True to replace it"
            )
        self._rl_modules[module_id] = module

    def remove_module(self, module_id: ModuleID, *, raise_err_if_not_found: bool = True) -> None:
        if module_id not in self._rl_modules:
            if raise_err_if_not_found:
                self[module_id]  # raises the KeyError naming the valid ids
            return
        del self._rl_modules[module_id]

    def foreach_module(
        self, fn: Callable[[ModuleID, RLModule], Any], *, return_dict: bool = False
    ) -> Union[List[Any], Dict[ModuleID, Any]]:
        """Apply ``fn(module_id, module)`` to every sub-module."""
        results = {module_id: fn(module_id, module) for module_id, module in self.items()}
        return results if return_dict else list(results.values())

    @property
    def non_policy_module_ids(self) -> List[ModuleID]:
        """Sub-modules that do not act for agents (e.g. a shared encoder).

        A module is not a policy if its id is ``SHARED_ENCODER_ID`` or its
        class sets ``is_policy = False``; a ``policy_mapping_fn`` must never
        return these ids.
        """
        return [
            module_id
            for module_id, module in self.items()
            if module_id == SHARED_ENCODER_ID or not getattr(module, "is_policy", True)
        ]

    @property
    def policy_module_ids(self) -> List[ModuleID]:
        non_policy = set(self.non_policy_module_ids)
        return [module_id for module_id in self.keys() if module_id not in non_policy]

    # --------------------------------------------------------------- forward
    def _check_input_batch(self, batch: Dict[str, Any]) -> None:
        if not isinstance(batch, dict):
            raise TypeError(
                "MultiRLModule forward passes take {module_id: batch}, got "
                f"{type(batch).__name__}"
            )
        for module_id in batch:
            if module_id not in self._rl_modules:
                raise KeyError(
                    f"batch holds data for module id {module_id!r}, which this "
                    f"MultiRLModule does not have; valid ids: {sorted(self._rl_modules.keys())}"
                )

    def _has_custom_forward(self) -> bool:
        return type(self)._forward is not MultiRLModule._forward

    def _forward(self, batch: Dict[ModuleID, Any], **kwargs: Any) -> Dict[ModuleID, Any]:
        return {mid: self._rl_modules[mid].forward_train(b, **kwargs) for mid, b in batch.items()}

    def _forward_inference(self, batch: Dict[ModuleID, Any], **kwargs: Any) -> Dict[ModuleID, Any]:
        if self._has_custom_forward():
            with torch.no_grad():
                return self._forward(batch, **kwargs)
        return {mid: self._rl_modules[mid].forward_inference(b, **kwargs) for mid, b in batch.items()}

    def _forward_exploration(self, batch: Dict[ModuleID, Any], **kwargs: Any) -> Dict[ModuleID, Any]:
        if self._has_custom_forward():
            with torch.no_grad():
                return self._forward(batch, **kwargs)
        return {
            mid: self._rl_modules[mid].forward_exploration(b, **kwargs) for mid, b in batch.items()
        }

    def _forward_train(self, batch: Dict[ModuleID, Any], **kwargs: Any) -> Dict[ModuleID, Any]:
        if self._has_custom_forward():
            return self._forward(batch, **kwargs)
        return {mid: self._rl_modules[mid].forward_train(b, **kwargs) for mid, b in batch.items()}

    def get_initial_state(self) -> Dict[str, Any]:
        return {}

    # ----------------------------------------------------------------- state
    def get_state(
        self, module_ids: Optional[Iterable[ModuleID]] = None, inference_only: bool = False
    ) -> Dict[ModuleID, Dict[str, torch.Tensor]]:
        """``{module_id: module_state}`` for the given (default: all) modules."""
        ids = list(self.keys()) if module_ids is None else list(module_ids)
        return {mid: self[mid].get_state(inference_only=inference_only) for mid in ids}

    def set_state(self, state: Dict[ModuleID, Dict[str, Any]]) -> None:
        """Load ``{module_id: module_state}``; modules not named keep their weights."""
        for module_id, module_state in state.items():
            self[module_id].set_state(module_state)

    # ------------------------------------------------------------ checkpoints
    def get_ctor_metadata(self) -> Dict[str, Any]:
        meta = super().get_ctor_metadata()
        meta["kind"] = "multi_rl_module"
        meta["module_ids"] = list(self.keys())
        meta["non_policy_module_ids"] = self.non_policy_module_ids
        return meta

    def _write_checkpoint(self, directory: Path) -> None:
        for module_id, module in self.items():
            sub = directory / module_id
            sub.mkdir()
            module._write_checkpoint(sub)
        # Last: the container's metadata seals its own files and each module's metadata.
        io.write_metadata(directory, self.get_ctor_metadata())

    def _read_checkpoint_states(
        self,
        path: str | Path,
        *,
        module_ids: Optional[Iterable[ModuleID]] = None,
        strict: bool = False,
        verified: Optional[io.VerifiedCheckpoint] = None,
    ) -> Dict[ModuleID, Dict[str, torch.Tensor]]:
        """Read and check the weights of a container checkpoint; changes nothing.

        Reads ``module_ids`` (default: every saved module this container
        has); with ``strict`` the saved and the live module ids must be equal.
        Every file is verified (unless ``verified``, an enclosing checkpoint
        already verified, covers it) and every module's weights are checked
        against the live module before this returns.
        """
        path = Path(path)
        if verified is not None and verified.covers(path / io.METADATA_FILE):
            meta = io.read_metadata(path)
        else:
            path = io.locate_checkpoint(path)
            verified = io.verify_checkpoint(path)
            meta = verified.meta
        source = path / io.METADATA_FILE
        if meta["kind"] != "multi_rl_module":
            raise io.CheckpointError(
                f"{str(source)!r} is not a MultiRLModule checkpoint (kind={meta['kind']!r})"
            )
        saved = list(meta.get("module_ids", []))
        if strict and sorted(saved) != sorted(self.keys()):
            raise io.CheckpointError(
                f"{str(source)!r} holds modules {sorted(saved)}, this {type(self).__name__} has "
                f"{sorted(self.keys())}"
            )
        wanted = list(module_ids) if module_ids is not None else [mid for mid in saved if mid in self]
        states = {}
        for module_id in wanted:
            if module_id not in saved:
                raise KeyError(
                    f"modules_to_load names {module_id!r}, but the checkpoint {str(path)!r} holds "
                    f"only {saved}"
                )
            if module_id not in meta["children"]:
                raise io.CheckpointError(f"{str(source)!r} lists module {module_id!r} but no checksums for it")
            states[module_id] = self[module_id]._read_checkpoint_state(path / module_id, verified=verified)
        return states

    def restore_from_path(self, path: str, component: Optional[str] = None) -> None:
        """Restore all modules found in ``path`` or, with ``component``, one module.

        With ``component="<module_id>"``, ``path`` may be the container's
        checkpoint (its ``<module_id>`` sub-directory is used) or a single
        module's checkpoint directory. All or nothing: every module's weights
        are verified and checked before any module changes.
        """
        path = Path(path)
        if component is not None:
            module = self[component]
            sub = path / component
            module.restore_from_path(str(sub if (sub / io.METADATA_FILE).exists() else path))
            return
        self.set_state(self._read_checkpoint_states(path))

    @classmethod
    def _from_checkpoint_metadata(
        cls, path: Path, meta: Dict[str, Any], verified: io.VerifiedCheckpoint
    ) -> "MultiRLModule":
        source = path / io.METADATA_FILE
        specs = {}
        for module_id in meta["module_ids"]:
            _check_module_id(module_id)  # before it names a directory to read
            if module_id not in meta["children"]:
                raise io.CheckpointError(f"{str(source)!r} lists module {module_id!r} but no checksums for it")
            specs[module_id] = module_spec_from_metadata(
                io.read_metadata(path / module_id), path / module_id / io.METADATA_FILE
            )
        container = container_from_metadata(meta, specs, source)
        container.set_state(container._read_checkpoint_states(path, strict=True, verified=verified))
        return container

    # ---------------------------------------------------------------- export
    def routes_forward_passes(self) -> bool:
        """Whether this container's class overrides a forward pass.

        Such a container routes data between its modules (e.g. through a
        shared encoder), so its policies cannot act without it: exporting one
        (:meth:`export_policy`) takes the container's routing along.
        """
        names = ("_forward", "_forward_inference", "_forward_exploration", "_forward_train")
        return any(getattr(type(self), name) is not getattr(MultiRLModule, name) for name in names)

    def export_policy(self, module_id: ModuleID) -> RLModule:
        """One policy as a standalone module (with copies of the shared modules it needs).

        See :func:`marl.core.export.export_policy`; ``save_to_path`` on the
        result writes a checkpoint that ``RLModule.from_checkpoint`` loads.
        """
        from marl.core.export import export_policy

        return export_policy(self, module_id)


def container_from_metadata(
    meta: Dict[str, Any], specs: Dict[ModuleID, RLModuleSpec], source: Path
) -> MultiRLModule:
    """Build (untrained) the container ``meta`` describes, with ``specs`` as its modules.

    ``meta`` holds what :meth:`MultiRLModule.get_ctor_metadata` wrote; its
    class goes through the same allow-list as every module class (imported
    only, a ``MultiRLModule`` subclass). Errors name ``source``.
    """
    for module_id in specs:
        _check_module_id(module_id)
    container_cls = io.import_class(meta.get("class"), source=source, base=MultiRLModule)
    try:
        return container_cls(
            observation_space=space_from_json(meta["observation_space"]),
            action_space=space_from_json(meta["action_space"]),
            inference_only=bool(meta["inference_only"]),
            model_config=io.config_from_json(meta["model_config"], source=source),
            rl_module_specs=specs,
        )
    except KeyError as e:
        raise io.CheckpointError(f"checkpoint file {str(source)!r} has no {e}") from e


def checkpoint_module_ids(path: str) -> List[ModuleID]:
    """The module ids stored in a MultiRLModule checkpoint directory."""
    meta = io.read_metadata(io.locate_checkpoint(path))
    if meta.get("kind") != "multi_rl_module":
        raise io.CheckpointError(
            f"{str(Path(path) / io.METADATA_FILE)!r} is not a MultiRLModule checkpoint "
            f"(kind={meta.get('kind')!r})"
        )
    return list(meta["module_ids"])


@dataclass
class MultiRLModuleSpec:
    """How to build a ``MultiRLModule`` and each of its sub-modules.

    ``rl_module_specs`` is a dict ``{module_id: RLModuleSpec}`` or one
    ``RLModuleSpec`` that every policy shares (expanded by the algorithm once
    it knows the policy ids; built alone it becomes ``DEFAULT_MODULE_ID``).
    """

    multi_rl_module_class: Type[MultiRLModule] = MultiRLModule
    observation_space: Optional[gym.Space] = None
    action_space: Optional[gym.Space] = None
    inference_only: bool = False
    model_config: Any = None
    rl_module_specs: Union[RLModuleSpec, Dict[ModuleID, RLModuleSpec], None] = None
    load_state_path: Optional[str] = None
    modules_to_load: Optional[Iterable[ModuleID]] = None

    def module_specs(self, module_ids: Optional[Iterable[ModuleID]] = None) -> Dict[ModuleID, RLModuleSpec]:
        """Per-module specs with the container's spaces/config filled in."""
        if isinstance(self.rl_module_specs, RLModuleSpec):
            ids = list(module_ids) if module_ids is not None else [DEFAULT_MODULE_ID]
            raw = {mid: self.rl_module_specs.copy() for mid in ids}
        elif isinstance(self.rl_module_specs, dict):
            raw = {mid: spec.copy() for mid, spec in self.rl_module_specs.items()}
        elif self.rl_module_specs is None:
            raw = {}
        else:
            raise TypeError(
                "MultiRLModuleSpec.rl_module_specs must be a dict of RLModuleSpec or one "
                f"RLModuleSpec, got {type(self.rl_module_specs).__name__}"
            )
        for module_id, spec in raw.items():
            if not isinstance(spec, RLModuleSpec):
                raise TypeError(
                    f"rl_module_specs[{module_id!r}] must be an RLModuleSpec, got "
                    f"{type(spec).__name__}"
                )
            if spec.observation_space is None:
                spec.observation_space = self.observation_space
            if spec.action_space is None:
                spec.action_space = self.action_space
            if spec.model_config is None:
                spec.model_config = self.model_config
            spec.inference_only = spec.inference_only or self.inference_only
        return raw

    def build(self, module_id: Optional[ModuleID] = None) -> Union[MultiRLModule, RLModule]:
        """Build the container (or, with ``module_id``, only that sub-module)."""
        specs = self.module_specs()
        if module_id is not None:
            if module_id not in specs:
                raise KeyError(
                    f"module id {module_id!r} has no spec; valid ids: {sorted(specs)}"
                )
            return specs[module_id].build()
        container = self.multi_rl_module_class(
            observation_space=self.observation_space,
            action_space=self.action_space,
            inference_only=self.inference_only,
            model_config=self.model_config,
            rl_module_specs=specs,
        )
        if self.load_state_path is not None:
            load_modules_from_checkpoint(container, self.load_state_path, self.modules_to_load)
        return container

    def copy(self) -> "MultiRLModuleSpec":
        return dataclasses.replace(self)


def load_modules_from_checkpoint(
    container: MultiRLModule, path: str, modules_to_load: Optional[Iterable[ModuleID]] = None
) -> None:
    """Restore chosen modules of ``container`` from a MultiRLModule checkpoint (all or nothing)."""
    container.set_state(container._read_checkpoint_states(path, module_ids=modules_to_load))
