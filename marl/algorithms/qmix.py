"""VDN and QMIX: value decomposition on DQN's loop, with the mixer as a module of the container.

``QMIXConfig`` is ``DQNConfig`` (every key) plus ``mixer`` (``"qmix"``, the
default, or ``"vdn"``), ``mixing_embed_dim`` (32) and ``hypernet_embed``
(64), EPyMARL's sizes, and ``state_input`` (``"auto"``: the env's
``state()`` where it has one, else every agent's observation;
``"state"``; ``"joint_obs"``) for the mixer's hypernetworks. Agents are the
usual policies (shared, per agent, any policy mapping) with DQN's default
Q modules; the replay buffer holds joint transitions (all agents of one env
step, the global state, the team reward: the sum of the agents' rewards).

Value decomposition assumes every agent acts at every env step (MPE, SMAC-
style teams); steps where one did not are left out of the buffer and counted
in ``replay_buffers/__joint__/num_dropped_steps``.

Defaults that differ from ``DQNConfig``'s, from EPyMARL's QMIX:
``dueling=False``, ``td_error_loss_fn="mse"``, uniform replay
(``{"type": "EpisodeReplayBuffer", "capacity": 50000}``),
``epsilon=[[0, 1.0], [50000, 0.05]]``, ``target_network_update_freq=200 * 25``
env steps (EPyMARL syncs every 200 episodes of 25 steps on MPE).
"""
from __future__ import annotations

from typing import Dict, Optional

from marl.algorithms.algorithm_config import ConfigError, check_choice, check_int
from marl.algorithms.dqn import DQN, DQNConfig, check_n_step
from marl.algorithms.joint_replay import JointReplayMixin
from marl.core.multi_rl_module import MultiRLModuleSpec
from marl.core.rl_module import RLModuleSpec

QMIX_DEFAULTS = {
    "dueling": False, "td_error_loss_fn": "mse",
    "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 50000},
    "epsilon": [[0, 1.0], [50000, 0.05]], "target_network_update_freq": 5000,
}


class QMIXConfig(DQNConfig):
    """DQN's settings plus the mixer's (see the module docstring)."""

    # Joint rows always shorten a window at its episode's end (no RLlib counterpart to follow).
    _algo_training_keys = tuple(k for k in DQNConfig._algo_training_keys if k != "shorten_n_step_at_episode_end") + (
        "mixer", "mixing_embed_dim", "hypernet_embed", "state_input")

    def __init__(self, algo_class: Optional[type] = None) -> None:
        super().__init__(algo_class=algo_class or QMIX)
        self.mixer = "qmix"
        self.mixing_embed_dim = 32
        self.hypernet_embed = 64
        self.state_input = "auto"
        for key, value in QMIX_DEFAULTS.items():
            setattr(self, key, dict(value) if isinstance(value, dict) else value)

    def get_default_learner_class(self) -> type:
        from learners.qmix_learner import QMIXTorchLearner

        return QMIXTorchLearner

    def validate(self) -> None:
        super().validate()
        check_choice("mixer", self.mixer, ("qmix", "vdn"))
        check_n_step(self.n_step, allow_range=False)
        check_choice("state_input", self.state_input, ("auto", "state", "joint_obs"))
        check_int("mixing_embed_dim", self.mixing_embed_dim, 1)
        check_int("hypernet_embed", self.hypernet_embed, 1)


class QMIX(JointReplayMixin, DQN):
    """DQN's loop over one joint replay buffer; the loss is the learner's joint TD loss."""

    config_class = QMIXConfig

    def __init__(self, config: QMIXConfig) -> None:
        super().__init__(config)
        self.learner.build()
        self.learner.agent_modules = dict(self._agent_modules)

    def _complete_module_spec(self, spec: MultiRLModuleSpec) -> MultiRLModuleSpec:
        from marl.models.mixers import MIXER_ID, QMixer, VDNMixer, mixer_observation_space

        spec = super()._complete_module_spec(spec)
        specs: Dict[str, RLModuleSpec] = dict(spec.rl_module_specs)
        if MIXER_ID in specs:
            raise ConfigError(f"module id {MIXER_ID!r} is the mixer's; rename that module")
        any_policy = specs[sorted(self.policies)[0]]
        specs[MIXER_ID] = RLModuleSpec(
            module_class=QMixer if self.config.mixer == "qmix" else VDNMixer,
            observation_space=mixer_observation_space(self._global.dim, self._global.num_agents),
            action_space=any_policy.action_space,  # unused: the mixer never acts
            model_config={"mixing_embed_dim": self.config.mixing_embed_dim,
                          "hypernet_embed": self.config.hypernet_embed},
        )
        spec.rl_module_specs = specs
        return spec
