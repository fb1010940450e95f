"""Value-decomposition mixers: non-policy modules that turn agents' Qs into a team Q.

A mixer is a module of the ``MultiRLModule`` (id ``"mixer"``, ``is_policy =
False``), so the learner's single optimizer trains it with the agents' Q
networks on the joint TD loss, and checkpoints hold it as one more
component, with its target copy.

- ``VDNMixer`` (Sunehag et al.): ``Q_tot = sum_i Q_i``; no parameters.
- ``QMixer`` (Rashid et al.): ``Q_tot = elu(q W1(s) + b1(s)) W2(s) + V(s)``
  where hypernetworks conditioned on the global state ``s`` produce the
  weights, made non-negative by ``abs``, so ``Q_tot`` is monotonic in every
  agent's Q. Sizes: ``mixing_embed_dim`` (32) and ``hypernet_embed`` (64),
  EPyMARL's defaults, in the model config.

Observation space of both: ``Dict(state=Box(D), agent_qs=Box(n))``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from marl.core.apis import TargetNetworkAPI
from marl.core.torch_rl_module import TorchRLModule

#: Module id of the mixer in the container.
MIXER_ID = "mixer"
STATE = "state"
AGENT_QS = "agent_qs"


def mixer_observation_space(state_dim: int, num_agents: int) -> gym.spaces.Dict:
    return gym.spaces.Dict({
        STATE: gym.spaces.Box(-np.inf, np.inf, (int(state_dim),), np.float32),
        AGENT_QS: gym.spaces.Box(-np.inf, np.inf, (int(num_agents),), np.float32),
    })


class _MixerBase(TorchRLModule, TargetNetworkAPI):
    is_policy = False

    def setup(self) -> None:
        space = self.observation_space
        if not (isinstance(space, gym.spaces.Dict) and STATE in space.spaces and AGENT_QS in space.spaces):
            raise ValueError(f"{type(self).__name__} needs observation_space Dict({STATE!r}: Box, "
                             f"{AGENT_QS!r}: Box(num_agents)); got {space}")
        self.state_dim = int(space[STATE].shape[0])
        self.num_agents = int(space[AGENT_QS].shape[0])
        self.build_networks()
        if not self.inference_only:
            self.make_target_networks()

    def build_networks(self) -> None:
        pass

    def mix(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``[B, n]`` agent Qs and ``[B, D]`` states -> ``[B]`` team Q."""
        raise NotImplementedError(f"{type(self).__name__} must define mix(agent_qs, state)")

    def mix_target(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.mix(agent_qs, state)

    def _forward(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return {"q_tot": self.mix(torch.as_tensor(batch[AGENT_QS]), torch.as_tensor(batch[STATE]))}

    def forward_target(self, batch: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
        return {"q_tot": self.mix_target(torch.as_tensor(batch[AGENT_QS]), torch.as_tensor(batch[STATE]))}


class VDNMixer(_MixerBase):
    """``Q_tot = sum_i Q_i`` (no parameters, so no target network either)."""

    def mix(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(dim=-1)

    def make_target_networks(self) -> None:
        pass

    def get_target_network_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return []


class _Hypernets(nn.Module):
    def __init__(self, state_dim: int, num_agents: int, embed: int, hyper: int) -> None:
        super().__init__()
        self.w1 = nn.Sequential(nn.Linear(state_dim, hyper), nn.ReLU(), nn.Linear(hyper, embed * num_agents))
        self.b1 = nn.Linear(state_dim, embed)
        self.w2 = nn.Sequential(nn.Linear(state_dim, hyper), nn.ReLU(), nn.Linear(hyper, embed))
        self.v = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))
        self.num_agents, self.embed = num_agents, embed

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        b = agent_qs.shape[0]
        w1 = self.w1(state).abs().view(b, self.num_agents, self.embed)
        hidden = nn.functional.elu(torch.bmm(agent_qs.unsqueeze(1), w1) + self.b1(state).unsqueeze(1))
        w2 = self.w2(state).abs().view(b, self.embed, 1)
        return (torch.bmm(hidden, w2) + self.v(state).unsqueeze(1)).view(b)


class QMixer(_MixerBase):
    """QMIX's monotonic mixing network with state-conditioned hypernetworks."""

    def build_networks(self) -> None:
        cfg = dict(self.model_config or {})
        self.mixing_embed_dim = int(cfg.get("mixing_embed_dim", 32))
        self.hypernet_embed = int(cfg.get("hypernet_embed", 64))
        self.hyper = _Hypernets(self.state_dim, self.num_agents, self.mixing_embed_dim, self.hypernet_embed)

    def mix(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.hyper(agent_qs.to(state.dtype), state)

    def mix_target(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.target_hyper(agent_qs.to(state.dtype), state)

    def make_target_networks(self) -> None:
        self.target_hyper = copy.deepcopy(self.hyper)
        for p in self.target_hyper.parameters():
            p.requires_grad_(False)

    def get_target_network_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.hyper, self.target_hyper)]
