"""MASAC: SAC actors per policy, a centralised twin critic on the global input and joint action.

``MASACConfig`` is ``SACConfig`` (every key, RLlib's SAC defaults) plus
``critic_input`` (``"auto"``: the env's ``state()`` where it has one, else
every agent's observation; ``"state"``; ``"joint_obs"``). The critic is the
container's non-policy module ``"masac_critic"`` (one network for every
agent, told apart by a one-hot index), trained with the actors by one
optimizer on joint replay rows (every agent at one env step, with each
agent's own reward). The actors are ``DefaultSACTorchRLModule`` without
critics of their own; ``get_module(policy)`` acts alone.
"""
from __future__ import annotations

from typing import Dict, Optional

from marl.algorithms.algorithm_config import ConfigError, check_choice
from marl.algorithms.dqn import check_n_step
from marl.algorithms.joint_replay import JointReplayMixin
from marl.algorithms.sac import SAC, SACConfig
from marl.core.multi_rl_module import MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec


class MASACConfig(SACConfig):
    """SAC's settings plus ``critic_input``."""

    # Joint rows always shorten a window at its episode's end (no RLlib counterpart to follow).
    _algo_training_keys = tuple(k for k in SACConfig._algo_training_keys
                                if k != "shorten_n_step_at_episode_end") + ("critic_input",)

    def __init__(self, algo_class: Optional[type] = None) -> None:
        super().__init__(algo_class=algo_class or MASAC)
        self.critic_input = "auto"

    def get_default_learner_class(self) -> type:
        from learners.masac_learner import MASACTorchLearner

        return MASACTorchLearner

    def validate(self) -> None:
        super().validate()
        check_choice("critic_input", self.critic_input, ("auto", "state", "joint_obs"))
        check_n_step(self.n_step, allow_range=False)


class MASAC(JointReplayMixin, SAC):
    """SAC's loop over one joint replay buffer; the learner's joint loss trains actors and critic."""

    config_class = MASACConfig
    global_input_key = "critic_input"

    def __init__(self, config: MASACConfig) -> None:
        super().__init__(config)
        if self._seq_lens:
            raise ConfigError("MASAC trains feed-forward actors; use_lstm=True is not supported")
        self.learner.build()
        self.learner.agent_modules = dict(self._agent_modules)

    def _complete_module_spec(self, spec: MultiRLModuleSpec) -> MultiRLModuleSpec:
        import numpy as np

        from marl.models.default_sac_rl_module import DefaultSACTorchRLModule
        from marl.models.masac_critic import MASAC_CRITIC_ID, MASACCriticTorchRLModule, masac_critic_space

        spec = super()._complete_module_spec(spec)
        specs: Dict[str, RLModuleSpec] = dict(spec.rl_module_specs)
        if MASAC_CRITIC_ID in specs:
            raise ConfigError(f"module id {MASAC_CRITIC_ID!r} is MASAC's critic; rename that module")
        joint_action_dim = 0
        for agent in self._agents:
            sub = specs[self._agent_modules[str(agent)]]
            joint_action_dim += int(np.prod(sub.action_space.shape))
        for mid in self.policies:
            sub = specs[mid]
            if isinstance(sub.module_class, type) and issubclass(sub.module_class, DefaultSACTorchRLModule):
                sub.model_config = {**dict(sub.model_config or {}), "own_critics": False}
        any_policy = specs[sorted(self.policies)[0]]
        specs[MASAC_CRITIC_ID] = RLModuleSpec(
            module_class=MASACCriticTorchRLModule,
            observation_space=masac_critic_space(self._global.dim, joint_action_dim, self._global.num_agents),
            action_space=any_policy.action_space,  # unused: the critic never acts
            model_config=self.config.model_config,
        )
        spec.rl_module_specs = specs
        return spec
