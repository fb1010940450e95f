"""Export one policy of a ``MultiRLModule`` as a module that acts on its own.

A policy of a container that routes its forward passes (a shared encoder:
``SharedEncoderMultiRLModule``, the guide's ``VPGMultiRLModuleWithSharedEncoder``)
is only a head: its encoder lives in the container, so the policy's own
checkpoint directory (``.../rl_module/<module_id>``) cannot act alone.
:func:`export_policy` packs copies of the shared (non-policy) modules and the
policy into :class:`ExportedPolicyRLModule`, whose forward passes run the
container's own routing on a container that holds only those modules. So the
export computes exactly what the container computes for that policy, for any
container class, without each container having to say how to split itself.

The export is an ordinary ``RLModule``: ``save_to_path`` writes a module
checkpoint (JSON + safetensors, checksummed, atomic) and
``RLModule.from_checkpoint`` rebuilds it. Its model config describes the
parts as their checkpoint metadata does (class import paths, spaces, model
configs), and rebuilding them goes through the same allow-list as loading a
container (:func:`marl.core.rl_module.module_spec_from_metadata`,
:func:`marl.core.multi_rl_module.container_from_metadata`): classes are only
imported, and must subclass ``RLModule`` / ``MultiRLModule``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional

from marl.core import checkpoint_io as io
from marl.core.constants import ModuleID
from marl.core.multi_rl_module import MultiRLModule, container_from_metadata
from marl.core.rl_module import RLModule, module_spec_from_metadata
from marl.core.torch_rl_module import TorchRLModule

#: The constructor arguments of a module, as its checkpoint metadata records them.
DESCRIPTION_KEYS = ("class", "observation_space", "action_space", "inference_only", "model_config")


def describe_module(module: RLModule) -> Dict[str, Any]:
    """The JSON description that rebuilds ``module`` (untrained): its metadata's constructor part."""
    meta = module.get_ctor_metadata()
    return {key: meta[key] for key in DESCRIPTION_KEYS}


class ExportedPolicyRLModule(TorchRLModule):
    """One policy with the shared modules its container routes it through.

    ``model_config``: ``{"policy_id": id, "container": <description>,
    "modules": {module_id: <description>}}`` (descriptions as
    :func:`describe_module` writes them); built by :func:`export_policy`.
    Forward passes take and return one policy's batch, like any module.
    """

    def setup(self) -> None:
        cfg = self.model_config
        source = Path(f"<model_config of an exported policy {cfg.get('policy_id')!r}>")
        try:
            self.policy_id: ModuleID = cfg["policy_id"]
            specs = {mid: module_spec_from_metadata(part, source) for mid, part in cfg["modules"].items()}
            self.container = container_from_metadata(cfg["container"], specs, source)
        except (KeyError, TypeError, AttributeError) as e:
            raise io.CheckpointError(
                f"{source}: expected 'policy_id', 'container' and 'modules' as export_policy writes them: {e!r}"
            ) from e
        if self.policy_id not in self.container:
            raise io.CheckpointError(
                f"{source}: policy {self.policy_id!r} is not among its modules {sorted(self.container.keys())}"
            )

    @property
    def policy(self) -> RLModule:
        """The policy's own module (the head, for a shared encoder)."""
        return self.container[self.policy_id]

    # A shallow copy of the batch: containers may write their embeddings into it.
    def _forward_inference(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.container.forward_inference({self.policy_id: dict(batch)}, **kwargs)[self.policy_id]

    def _forward_exploration(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.container.forward_exploration({self.policy_id: dict(batch)}, **kwargs)[self.policy_id]

    def _forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.container.forward_train({self.policy_id: dict(batch)}, **kwargs)[self.policy_id]

    def get_inference_action_dist_cls(self) -> type:
        return self.policy.get_inference_action_dist_cls()

    def get_exploration_action_dist_cls(self) -> type:
        return self.policy.get_exploration_action_dist_cls()

    def get_train_action_dist_cls(self) -> type:
        return self.policy.get_train_action_dist_cls()

    def get_initial_state(self) -> Dict[str, Any]:
        return self.policy.get_initial_state()


def _container_of(source: Any) -> MultiRLModule:
    """The ``MultiRLModule`` of a container or of an algorithm (``get_module(None)``)."""
    if isinstance(source, MultiRLModule):
        return source
    if isinstance(source, RLModule):
        raise TypeError(
            f"export_policy takes the container the policy lives in (a MultiRLModule, or the "
            f"algorithm), got the single module {type(source).__name__}: a policy's shared parts "
            "are in its container; pass algo or algo.get_module(None)"
        )
    get_module = getattr(source, "get_module", None)
    container = get_module(None) if callable(get_module) else None
    if not isinstance(container, MultiRLModule):
        raise TypeError(
            f"export_policy takes a MultiRLModule or an algorithm, got {type(source).__name__}"
        )
    return container


def export_policy(source: Any, module_id: ModuleID) -> RLModule:
    """Policy ``module_id`` of ``source`` as a standalone module with copied weights.

    ``source``: a ``MultiRLModule`` or an algorithm (its ``get_module(None)``).
    A container that routes its forward passes gives an
    :class:`ExportedPolicyRLModule` (copies of its non-policy modules plus
    the policy); any other container's policy already acts alone, and a deep
    copy of it is returned. The export lives on the CPU (where deployment
    and ``save_to_path`` want it); training ``source`` further never changes it. ``export_policy(...).save_to_path(path)`` writes it as a module
    checkpoint. An id that is not a policy raises ``KeyError`` naming the
    policy ids.
    """
    container = _container_of(source)
    policies = container.policy_module_ids
    if module_id not in policies:
        why = "a shared, non-policy module" if module_id in container else "not in this container"
        raise KeyError(
            f"cannot export module id {module_id!r} of this {type(container).__name__}: it is {why}; "
            f"valid policy ids: {sorted(policies)}"
        )
    policy = container[module_id]
    if not container.routes_forward_passes():
        return copy.deepcopy(policy).cpu()
    parts = {mid: container[mid] for mid in [*container.non_policy_module_ids, module_id]}
    exported = ExportedPolicyRLModule(
        observation_space=policy.observation_space,
        action_space=policy.action_space,
        inference_only=policy.inference_only,
        model_config={
            "policy_id": module_id,
            "container": describe_module(container),
            "modules": {mid: describe_module(module) for mid, module in parts.items()},
        },
    )
    exported.container.set_state({mid: module.get_state() for mid, module in parts.items()})
    return exported


def _container_checkpoint(path: Path, meta: Dict[str, Any]) -> Optional[Path]:
    """The MultiRLModule checkpoint at ``path`` or nested in it (an algorithm's), if any."""
    if meta["kind"] == "multi_rl_module":
        return path
    for child in meta["children"]:
        child_path = path / child
        if (child_path / io.METADATA_FILE).is_file() and io.read_metadata(child_path)["kind"] == "multi_rl_module":
            return child_path
    return None


def _default_policy_id(container: MultiRLModule, path: Path) -> ModuleID:
    policies: List[ModuleID] = container.policy_module_ids
    if len(policies) != 1:
        raise ValueError(
            f"the checkpoint {str(path)!r} holds the policies {sorted(policies)}: pass module_id= "
            "to say which to export"
        )
    return policies[0]


def export_policy_from_checkpoint(path: str | Path, module_id: Optional[ModuleID] = None) -> RLModule:
    """Export one policy from a checkpoint: an algorithm's, a container's, or a policy's directory.

    ``path`` may be an algorithm checkpoint, its ``learner_group/learner/rl_module``
    directory, or one policy's directory in it (``.../rl_module/<module_id>``,
    which is what ``RLModule.from_checkpoint`` loads as the bare head); the
    container around it is loaded (every file verified) and
    :func:`export_policy` applied. ``module_id`` defaults to the policy
    directory's name, or to the only policy. A module checkpoint that is not
    inside a container is loaded as it is.
    """
    path = io.locate_checkpoint(path)
    meta = io.read_metadata(path)
    parent = path.parent
    if meta["kind"] == "rl_module":
        inside = (parent / io.METADATA_FILE).is_file() and io.read_metadata(parent)["kind"] == "multi_rl_module"
        if not inside:
            return RLModule.from_checkpoint(str(path))
        if module_id not in (None, path.name):
            raise ValueError(
                f"{str(path)!r} is the checkpoint of module {path.name!r}, not {module_id!r}; pass its "
                f"container's directory {str(parent)!r} to export another policy"
            )
        module_id, container_path = path.name, parent
    else:
        container_path = _container_checkpoint(path, meta)
        if container_path is None:
            raise io.CheckpointError(f"{str(path)!r} (kind={meta['kind']!r}) holds no MultiRLModule checkpoint")
    container = RLModule.from_checkpoint(str(container_path))
    return export_policy(container, module_id if module_id is not None else _default_policy_id(container, path))
