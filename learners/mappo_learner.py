"""MAPPO: PPO's loss with values from a centralised critic module of the container.

The policies' losses are PPO's, term for term. What changes is where values
come from: the critic (``marl.models.central_critic``) reads the global input
the env runner recorded per step (``GLOBAL_OBS``) and the agent's index, both
for GAE before the update and for the value loss during it. The critic is a
non-policy module, so the learner's single optimizer steps it together with
the policies (once, however many policies it serves).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from marl.core.columns import AGENT_INDEX, GLOBAL_INDEX, GLOBAL_OBS, Columns, bootstrap_global_rows, global_rows
from marl.core.constants import ModuleID
from marl.models.central_critic import central_critic_id

from learners.batching import module_device
from learners.ppo_learner import PPOTorchLearner
from learners.value_estimates import CHUNK


class MAPPOTorchLearner(PPOTorchLearner):
    """PPO with ``critic="central"``: values from the critic module of each policy."""

    @classmethod
    def rl_module_required_apis(cls) -> List[type]:
        return []  # the policies need no value function of their own

    def build(self) -> None:
        super().build()
        if not hasattr(self, "_global_tables"):
            self._global_tables: Dict[ModuleID, torch.Tensor] = {}

    def critic_of(self, module_id: ModuleID) -> Optional[ModuleID]:
        """The critic module valuing ``module_id``'s agents (None: the policy's own values)."""
        if getattr(self.config, "critic", "central") != "central":
            return None
        critic = central_critic_id(module_id, bool(getattr(self.config, "share_critic", True)))
        if critic not in self.module:
            raise KeyError(f"policy {module_id!r} has no critic module {critic!r}; modules: {sorted(self.module.keys())}")
        return critic

    def check_module_apis(self, apis: Optional[List[type]] = None) -> None:
        """With local critics the policies value themselves: PPO's requirements."""
        if apis is None and getattr(self.config, "critic", "central") != "central":
            apis = PPOTorchLearner.rl_module_required_apis()
        super().check_module_apis(apis)

    @torch.no_grad()
    def sample_values(self, samples: Dict[ModuleID, Dict[str, Any]]) -> Dict[ModuleID, tuple]:
        if getattr(self.config, "critic", "central") != "central":
            return super().sample_values(samples)
        out = {}
        for mid, b in samples.items():
            for column in (GLOBAL_OBS, AGENT_INDEX):
                if column not in b:
                    raise KeyError(f"the samples of {mid!r} have no {column!r}: the env runners did not "
                                   "record global inputs (build MAPPO through MAPPOConfig)")
            critic = self.module[self.critic_of(mid)]
            index = np.asarray(b[AGENT_INDEX])
            starts = np.concatenate([[0], np.cumsum(b[Columns.SEQ_LENS])[:-1]]).astype(np.int64)
            values = _chunked_values(critic, np.asarray(global_rows(b)), index)
            boot = _chunked_values(critic, np.asarray(bootstrap_global_rows(b)), index[starts])
            out[mid] = (values, boot)
            # The train batches carry GLOBAL_INDEX per step; the table (one row per env
            # step, shared by all modules) stays here and is indexed per minibatch.
            self._global_tables[mid] = torch.as_tensor(np.asarray(b[GLOBAL_OBS])).to(self.device)
        return out

    def train_values(self, module_id: ModuleID, batch: Dict[str, Any], fwd_out: Dict[str, Any]) -> torch.Tensor:
        critic = self.critic_of(module_id)
        if critic is None:
            return super().train_values(module_id, batch, fwd_out)
        inputs = {AGENT_INDEX: batch[AGENT_INDEX], GLOBAL_OBS: self._global_tables[module_id][batch[GLOBAL_INDEX]]
                  if GLOBAL_INDEX in batch else batch[GLOBAL_OBS]}
        return self.module[critic].compute_values(inputs)


def _chunked_values(critic: Any, global_obs: np.ndarray, index: np.ndarray) -> np.ndarray:
    device = module_device(critic)
    parts = [
        critic.compute_values({GLOBAL_OBS: torch.from_numpy(global_obs[i:i + CHUNK]).to(device),
                               AGENT_INDEX: torch.from_numpy(index[i:i + CHUNK]).to(device)}).float().cpu().numpy()
        for i in range(0, len(index), CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
