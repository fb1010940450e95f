"""A centralised critic: a non-policy module that values an agent from the global input.

MAPPO's critic lives in the ``MultiRLModule`` beside the policies it serves
(``is_policy = False``: no agent is ever mapped to it, the env runners never
run it), so the learner's single optimizer trains it with the policies and
its weights are checkpointed as one more module. Its observation space says
everything it needs: ``Dict(global_obs=Box(D), agent_index=Discrete(n))``,
the env's global input per step and which of the ``n`` agents is valued.
"""
from __future__ import annotations

from typing import Any, Dict

import gymnasium as gym
import torch

from marl.core.apis import ValueFunctionAPI
from marl.core.columns import AGENT_INDEX, GLOBAL_OBS, Columns
from marl.core.torch_rl_module import TorchRLModule
from marl.models.default_model_config import resolve_default_model_config
from marl.models.mlp import mlp_from_config

#: Module id of the critic every policy shares (``share_critic=True``).
CENTRAL_CRITIC_ID = "central_critic"


def central_critic_id(policy_id: str, shared: bool) -> str:
    """The critic's module id for ``policy_id`` (one shared, or one per policy)."""
    return CENTRAL_CRITIC_ID if shared else f"{CENTRAL_CRITIC_ID}_{policy_id}"


def critic_observation_space(global_dim: int, num_agents: int) -> gym.spaces.Dict:
    return gym.spaces.Dict({
        GLOBAL_OBS: gym.spaces.Box(-float("inf"), float("inf"), (int(global_dim),), dtype="float32"),
        AGENT_INDEX: gym.spaces.Discrete(int(num_agents)),
    })


class CentralCriticTorchRLModule(TorchRLModule, ValueFunctionAPI):
    """``V(global input, one-hot agent index)``: an MLP (``fcnet_*``) and a linear output.

    ``compute_values`` reads ``GLOBAL_OBS`` ([B, D] or [B, T, D]) and
    ``AGENT_INDEX`` ([B] or [B, T]) straight from a policy's train batch, so
    the learner feeds it the rows the policy is trained on.
    """

    is_policy = False

    def setup(self) -> None:
        space = self.observation_space
        if not (isinstance(space, gym.spaces.Dict) and GLOBAL_OBS in space.spaces and AGENT_INDEX in space.spaces):
            raise ValueError(
                f"{type(self).__name__} needs observation_space Dict({GLOBAL_OBS!r}: Box, {AGENT_INDEX!r}: "
                f"Discrete); got {space}")
        self.model_config = resolve_default_model_config(self.model_config)
        cfg = self.model_config
        self.global_dim = int(space[GLOBAL_OBS].shape[0])
        self.num_agents = int(space[AGENT_INDEX].n)
        self.net = mlp_from_config(self.global_dim + self.num_agents, cfg, "fcnet", output_dim=1)

    def critic_input(self, batch: Dict[str, Any]) -> torch.Tensor:
        global_obs = torch.as_tensor(batch[GLOBAL_OBS], dtype=torch.float32)
        index = torch.as_tensor(batch[AGENT_INDEX]).long()
        if global_obs.shape[-1] != self.global_dim:
            raise ValueError(f"{GLOBAL_OBS!r} has {global_obs.shape[-1]} features per step; this critic "
                             f"was built for {self.global_dim}")
        one_hot = torch.nn.functional.one_hot(index, self.num_agents).to(global_obs.dtype)
        return torch.cat([global_obs, one_hot], dim=-1)

    def compute_values(self, batch: Dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.net(self.critic_input(batch)).squeeze(-1)

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return {Columns.VF_PREDS: self.compute_values(batch)}
