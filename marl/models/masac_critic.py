"""MASAC's centralised critics: ``Q_i(global input, joint action)`` for every agent i.

A non-policy module of the container (id ``"masac_critic"``), like MAPPO's
critic: twin Q networks (and their target copies) on the env's global input
(state or joint observation), every agent's action side by side in
``possible_agents`` order, and the valued agent's one-hot index, so one
network gives each agent its own Q for its own reward. Observation space:
``Dict(global_obs=Box(D), joint_action=Box(n * act_dim), agent_index=Discrete(n))``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from marl.core.apis import TargetNetworkAPI
from marl.core.columns import AGENT_INDEX, GLOBAL_OBS
from marl.core.torch_rl_module import TorchRLModule
from marl.models.default_model_config import model_config_dict, resolve_default_model_config
from marl.models.default_sac_rl_module import QF_PREDS, QF_TWIN_PREDS
from marl.models.mlp import mlp_from_config

MASAC_CRITIC_ID = "masac_critic"
JOINT_ACTION = "joint_action"


def masac_critic_space(global_dim: int, joint_action_dim: int, num_agents: int) -> gym.spaces.Dict:
    return gym.spaces.Dict({
        GLOBAL_OBS: gym.spaces.Box(-np.inf, np.inf, (int(global_dim),), np.float32),
        JOINT_ACTION: gym.spaces.Box(-1.0, 1.0, (int(joint_action_dim),), np.float32),
        AGENT_INDEX: gym.spaces.Discrete(int(num_agents)),
    })


class MASACCriticTorchRLModule(TorchRLModule, TargetNetworkAPI):
    """Twin centralised Q networks with targets; ``q(batch, target=False)`` gives both."""

    is_policy = False

    def setup(self) -> None:
        space = self.observation_space
        cfg = resolve_default_model_config({k: v for k, v in model_config_dict(self.model_config).items()
                                            if k not in ("twin_q",)})
        self.global_dim = int(space[GLOBAL_OBS].shape[0])
        self.joint_action_dim = int(space[JOINT_ACTION].shape[0])
        self.num_agents = int(space[AGENT_INDEX].n)
        in_dim = self.global_dim + self.joint_action_dim + self.num_agents

        def critic() -> nn.Sequential:
            return mlp_from_config(in_dim, cfg, "fcnet", output_dim=1)

        self.qf, self.qf_twin = critic(), critic()
        self.make_target_networks()

    def make_target_networks(self) -> None:
        self.target_qf, self.target_qf_twin = copy.deepcopy(self.qf), copy.deepcopy(self.qf_twin)
        for p in list(self.target_qf.parameters()) + list(self.target_qf_twin.parameters()):
            p.requires_grad_(False)

    def get_target_network_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.qf, self.target_qf), (self.qf_twin, self.target_qf_twin)]

    def critic_input(self, batch: Dict[str, Any]) -> torch.Tensor:
        index = torch.as_tensor(batch[AGENT_INDEX]).long()
        one_hot = nn.functional.one_hot(index, self.num_agents).float()
        return torch.cat([torch.as_tensor(batch[GLOBAL_OBS]).float(), torch.as_tensor(batch[JOINT_ACTION]).float(),
                          one_hot], dim=-1)

    def q(self, batch: Dict[str, Any], target: bool = False) -> Dict[str, torch.Tensor]:
        x = self.critic_input(batch)
        qf, twin = (self.target_qf, self.target_qf_twin) if target else (self.qf, self.qf_twin)
        return {QF_PREDS: qf(x).squeeze(-1), QF_TWIN_PREDS: twin(x).squeeze(-1)}

    def forward_target(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.q(batch, target=True)

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return self.q(batch)
