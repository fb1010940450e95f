"""MAPPO: decentralised PPO actors, a centralised critic that sees the global input.

``MAPPOConfig`` is ``PPOConfig`` (every key, RLlib's defaults) plus:

- ``critic``: ``"central"`` (default) or ``"local"`` (each policy's own value
  function: plain IPPO, for ablations with everything else equal);
- ``critic_input``: ``"auto"`` (default: the env's ``state()`` where it has
  one, else the joint observation), ``"state"`` or ``"joint_obs"`` (every
  agent's observation in ``possible_agents`` order, zeros and a 0 in the
  presence mask for agents absent at that step);
- ``share_critic`` (default True): one critic module ``"central_critic"``
  for every policy, or one ``"central_critic_<policy>"`` per policy;
- ``critic_model_config``: the critic's ``DefaultModelConfig`` (default: the
  policies' ``model_config``).

The critic always gets the valued agent's one-hot index with the global
input, so one network gives each agent its own value.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from marl.algorithms.algorithm_config import ConfigError, check_bool, check_choice
from marl.algorithms.ppo import PPO, PPOConfig
from marl.core.multi_rl_module import MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec


class MAPPOConfig(PPOConfig):
    """PPO's settings plus the critic's (see the module docstring)."""

    _algo_training_keys = PPOConfig._algo_training_keys + (
        "critic", "critic_input", "share_critic", "critic_model_config")

    def __init__(self, algo_class: Optional[type] = None) -> None:
        super().__init__(algo_class=algo_class or MAPPO)
        self.critic = "central"
        self.critic_input = "auto"
        self.share_critic = True
        self.critic_model_config: Any = None

    def get_default_learner_class(self) -> type:
        from learners.mappo_learner import MAPPOTorchLearner

        return MAPPOTorchLearner

    def get_default_rl_module_class(self) -> type:
        """Actors without a value branch under a central critic; PPO's module otherwise."""
        if self.critic == "central":
            from marl.models.default_actor_rl_module import DefaultActorTorchRLModule

            return DefaultActorTorchRLModule
        return super().get_default_rl_module_class()

    def validate(self) -> None:
        super().validate()
        check_choice("critic", self.critic, ("central", "local"))
        check_choice("critic_input", self.critic_input, ("auto", "state", "joint_obs"))
        check_bool("share_critic", self.share_critic)
        if self.critic_model_config is not None:
            from marl.models.default_model_config import resolve_default_model_config

            try:
                resolve_default_model_config(self.critic_model_config)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"critic_model_config: {err}") from None


class MAPPO(PPO):
    """PPO whose container holds the centralised critic(s) as non-policy modules."""

    config_class = MAPPOConfig

    @property
    def _central(self) -> bool:
        return self.config.critic == "central"

    def _inspect_env(self, env: Any) -> None:
        if not self._central:
            self._global = None
            return
        from envs.sampling.global_inputs import GlobalInput

        try:
            self._global = GlobalInput(self.config.critic_input, env)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _complete_module_spec(self, spec: MultiRLModuleSpec) -> MultiRLModuleSpec:
        if not self._central:
            return spec
        from marl.models.central_critic import CentralCriticTorchRLModule, central_critic_id, critic_observation_space

        specs: Dict[str, RLModuleSpec] = dict(spec.rl_module_specs)
        shared = self.config.share_critic
        critic_ids = sorted({central_critic_id(mid, shared) for mid in self.policies})
        taken = sorted(set(critic_ids) & set(specs))
        if taken:
            raise ConfigError(f"module ids {taken} are MAPPO's critic ids; rename those modules")
        model_config = self.config.critic_model_config or self.config.model_config
        any_policy = specs[sorted(self.policies)[0]]
        for critic_id in critic_ids:
            specs[critic_id] = RLModuleSpec(
                module_class=CentralCriticTorchRLModule,
                observation_space=critic_observation_space(self._global.dim, self._global.num_agents),
                action_space=any_policy.action_space,  # unused: the critic never acts
                model_config=model_config,
            )
        return MultiRLModuleSpec(
            multi_rl_module_class=spec.multi_rl_module_class, rl_module_specs=specs,
            model_config=spec.model_config, load_state_path=spec.load_state_path,
            modules_to_load=spec.modules_to_load)

    def _extra_runner_kwargs(self) -> Dict[str, Any]:
        return {"global_input": self._global.kind} if self._central else {}
