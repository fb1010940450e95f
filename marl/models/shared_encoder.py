"""A ready-made shared encoder: one encoder, one policy (and value) head per policy.

Researchers get the guide's shared-encoder setup without writing classes:
``shared_encoder_module_spec(["p0", "p1"], DefaultModelConfig(...))`` gives a
``MultiRLModuleSpec`` whose container runs every policy's observations
through one encoder in ONE batched call and then through each policy's head.
Heads carry value functions, so PPO trains it; the learner's single-optimizer
mode steps the encoder once on the summed policy losses.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch

from marl.core.apis import InferenceOnlyAPI, ValueFunctionAPI
from marl.core.columns import Columns
from marl.core.constants import SHARED_ENCODER_ID, ModuleID
from marl.core.multi_rl_module import MultiRLModule, MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec
from marl.core.torch_rl_module import TorchRLModule
from marl.models.action_masking import ACTION_MASK_KEY, OBSERVATION_KEY, apply_action_mask, split_observation_space
from marl.models.default_model_config import resolve_default_model_config
from marl.models.encoders import ObservationEncoder
from marl.models.policy_head import PolicyHead, build_head


def _check_no_lstm(cfg: Mapping[str, Any], owner: str) -> None:
    if cfg["use_lstm"]:
        raise ValueError(
            f"{owner}: use_lstm=True is not supported by the ready-made shared encoder; "
            "use DefaultPPOTorchRLModule per policy for recurrent policies"
        )


def shared_embeddings(batch: Dict[str, Any], head: Any) -> torch.Tensor:
    """The shared encoder's output in a head's batch; without it, say how to run the policy alone.

    A head loaded on its own (``RLModule.from_checkpoint(<ckpt>/.../rl_module/<id>)``)
    has no encoder: the error points to exporting the policy with it.
    """
    if Columns.EMBEDDINGS not in batch:
        raise KeyError(
            f"{type(head).__name__} is the head of one policy of a SharedEncoderMultiRLModule and reads "
            f"{Columns.EMBEDDINGS!r}, which that container's shared encoder puts into the batch; it cannot "
            "act alone. To run one policy on its own, export it with a copy of the encoder: "
            "container.export_policy(module_id) (or marl.core.export.export_policy(algo, module_id)), or "
            "from a checkpoint marl.core.export.export_policy_from_checkpoint('<ckpt>/learner_group/learner/"
            "rl_module/<module_id>'); save that with .save_to_path(path) and load it with "
            "RLModule.from_checkpoint(path)"
        )
    return batch[Columns.EMBEDDINGS]


class SharedEncoderModule(TorchRLModule):
    """The encoder (MLP or CNN from ``fcnet_*`` / ``conv_*``); not a policy."""

    is_policy = False

    def setup(self) -> None:
        self.model_config = resolve_default_model_config(self.model_config)
        _check_no_lstm(self.model_config, type(self).__name__)
        encoded_space, _ = split_observation_space(self.observation_space)
        self.net = ObservationEncoder(encoded_space, self.model_config)
        self.output_dim = self.net.output_dim

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        obs = batch[Columns.OBS]
        if isinstance(obs, Mapping):
            obs = obs[OBSERVATION_KEY]
        return {Columns.EMBEDDINGS: self.net(torch.as_tensor(obs))}


class SharedEncoderPolicyHead(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """A policy head (``head_fcnet_*``) and value head reading shared embeddings.

    Its input width is the encoder's output width, derived from the same
    observation space and model config (so it needs no extra setting).
    """

    def setup(self) -> None:
        self.model_config = resolve_default_model_config(self.model_config)
        cfg = self.model_config
        _check_no_lstm(cfg, type(self).__name__)
        encoded_space, self._mask_space = split_observation_space(self.observation_space)
        in_dim = ObservationEncoder(encoded_space, cfg).output_dim
        self.pi = PolicyHead(in_dim, self.action_space, cfg)
        if not self.inference_only:
            self.vf = build_head(in_dim, 1, cfg)

    def get_non_inference_attributes(self) -> List[str]:
        return ["vf"]

    def _embeddings(self, batch: Dict[str, Any]) -> torch.Tensor:
        return shared_embeddings(batch, self)

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        logits = self.pi(self._embeddings(batch))
        obs = batch.get(Columns.OBS)
        if self._mask_space is not None and isinstance(obs, Mapping):
            logits = apply_action_mask(logits, torch.as_tensor(obs[ACTION_MASK_KEY]))
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_train(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        out = self._forward(batch)
        out[Columns.VF_PREDS] = self.compute_values(batch)
        return out

    def compute_values(self, batch: Dict[str, Any], embeddings: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.inference_only:
            raise RuntimeError(f"{type(self).__name__} built with inference_only=True has no value head")
        return self.vf(self._embeddings(batch) if embeddings is None else embeddings).squeeze(-1)


class SharedEncoderMultiRLModule(MultiRLModule):
    """Routes every policy's batch through the ``SHARED_ENCODER_ID`` module.

    All policies' observations go through the encoder in one call when their
    shapes agree (the common case: one env, homogeneous agents).
    """

    def setup(self) -> None:
        super().setup()
        if SHARED_ENCODER_ID not in self._rl_modules:
            raise ValueError(
                f"SharedEncoderMultiRLModule needs a module with id {SHARED_ENCODER_ID!r}; "
                f"got ids {sorted(self._rl_modules.keys())}"
            )

    @property
    def encoder(self) -> SharedEncoderModule:
        """The shared encoder (a property, so it is not registered twice)."""
        return self._rl_modules[SHARED_ENCODER_ID]

    def _encode_all(self, batch: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, torch.Tensor]:
        ids = [mid for mid in batch if mid != SHARED_ENCODER_ID]
        obs = {mid: batch[mid][Columns.OBS] for mid in ids}
        raw = {
            mid: torch.as_tensor(o[OBSERVATION_KEY] if isinstance(o, Mapping) else o)
            for mid, o in obs.items()
        }
        shapes = {tuple(t.shape[1:]) for t in raw.values()}
        if len(shapes) == 1 and len(ids) > 1:
            joined = self.encoder._forward({Columns.OBS: torch.cat([raw[m] for m in ids])})[Columns.EMBEDDINGS]
            parts = torch.split(joined, [len(raw[m]) for m in ids])
            return dict(zip(ids, parts))
        return {mid: self.encoder._forward({Columns.OBS: raw[mid]})[Columns.EMBEDDINGS] for mid in ids}

    def _run_heads(self, batch: Dict[ModuleID, Dict[str, Any]], phase: str) -> Dict[ModuleID, Any]:
        embeddings = self._encode_all(batch)
        outputs = {}
        for mid, emb in embeddings.items():
            head_batch = dict(batch[mid])
            head_batch[Columns.EMBEDDINGS] = emb
            head = self._rl_modules[mid]
            outputs[mid] = head._forward_train(head_batch) if phase == "train" else head._forward(head_batch)
        return outputs

    def _forward_train(self, batch, **kwargs):
        return self._run_heads(batch, "train")

    def _forward_exploration(self, batch, **kwargs):
        with torch.no_grad():
            return self._run_heads(batch, "explore")

    def _forward_inference(self, batch, **kwargs):
        with torch.no_grad():
            return self._run_heads(batch, "inference")


def shared_encoder_module_spec(
    policy_ids: Iterable[ModuleID],
    model_config: Any = None,
    observation_space: Any = None,
    head_class: Optional[type] = None,
) -> MultiRLModuleSpec:
    """A spec for one shared encoder plus one head per policy, from one model config.

    Spaces left as ``None`` are filled in by the algorithm from the env.
    ``head_class``: ``SharedEncoderPolicyHead`` (PPO's policy and value heads,
    the default) or ``marl.models.shared_encoder_sac.SharedEncoderSACHead`` (SAC).
    """
    head_class = head_class or SharedEncoderPolicyHead
    specs = {
        SHARED_ENCODER_ID: RLModuleSpec(
            module_class=SharedEncoderModule, observation_space=observation_space, model_config=model_config
        )
    }
    for mid in policy_ids:
        specs[mid] = RLModuleSpec(module_class=head_class, model_config=model_config)
    return MultiRLModuleSpec(multi_rl_module_class=SharedEncoderMultiRLModule, rl_module_specs=specs)
