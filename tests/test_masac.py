"""MASAC: a centralised twin critic on the global input and joint action, per-agent SAC actors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.joint_transitions import AGENT_REWARDS, joint_transitions
from marl import DefaultModelConfig, MASACConfig, RLModule
from marl.core.columns import Columns
from marl.models.masac_critic import MASAC_CRITIC_ID

SPREAD = {"N": 2, "max_cycles": 10, "continuous_actions": True}
AGENTS = ["agent_0", "agent_1"]


def config(per_agent: bool = True, **training) -> MASACConfig:
    cfg = (MASACConfig().environment("mpe2.simple_spread_v3", env_config=SPREAD)
           .env_runners(num_envs_per_env_runner=2)
           .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
           .training(num_steps_sampled_before_learning_starts=40, train_batch_size_per_learner=32, **training)
           .reporting(min_sample_timesteps_per_iteration=40, min_time_s_per_iteration=None).debugging(seed=0))
    if per_agent:
        cfg.multi_agent(policies=set(AGENTS), policy_mapping_fn=lambda aid, ep, **kw: aid)
    return cfg


def test_the_critic_is_one_non_policy_module_seeing_state_joint_action_and_agent():
    algo = config().build()
    try:
        container = algo.get_module(None)
        assert container.non_policy_module_ids == [MASAC_CRITIC_ID]
        critic = container[MASAC_CRITIC_ID]
        env = algo.env_creator({})
        act_dim = env.action_space("agent_0").shape[0]
        obs_dim = env.observation_space("agent_0").shape[0]
        assert critic.joint_action_dim == 2 * act_dim and critic.num_agents == 2
        assert critic.global_dim == 2 * obs_dim  # mpe2's state: both agents' observations
        for agent in AGENTS:
            assert algo.get_module(agent).qf is None  # the actors have no critics of their own
        (optimizer,) = algo.learner.optimizers.values()
        groups = {g["name"]: g for g in optimizer.param_groups}
        assert set(groups) == {"actor", "critic", "alpha"}
        critic_params = {id(p) for p in groups["critic"]["params"]}
        assert critic_params == {id(p) for p in critic.parameters() if p.requires_grad}
        assert not critic_params & {id(p) for p in critic.target_qf.parameters()}
        assert len(groups["alpha"]["params"]) == 2
    finally:
        algo.stop()


def test_joint_rows_keep_each_agents_own_reward():
    algo = config().build()
    try:
        samples, _ = algo.env_runner_group.sample(30)
        rows, _ = joint_transitions(samples, AGENTS, n_step=1, gamma=0.9)
        np.testing.assert_allclose(rows[Columns.REWARDS], rows[AGENT_REWARDS]["agent_0"] + rows[AGENT_REWARDS]["agent_1"],
                                   rtol=1e-6)
        assert rows[Columns.ACTIONS]["agent_0"].shape == (len(rows[Columns.REWARDS]), 5)
    finally:
        algo.stop()


@pytest.mark.parametrize("frozen", ["actor_lr", "critic_lr"])
def test_each_loss_moves_only_its_own_parameters(frozen):
    algo = config(**{frozen: 1e-30}).build()
    try:
        algo.train()
        actor, critic = algo.get_module("agent_0").pi, algo.get_module(None)[MASAC_CRITIC_ID].qf
        still, moving = (actor, critic) if frozen == "actor_lr" else (critic, actor)
        before_still = [p.detach().clone() for p in still.parameters()]
        before_moving = [p.detach().clone() for p in moving.parameters()]
        for _ in range(3):
            algo._update_once()
        assert all(torch.equal(b, p) for b, p in zip(before_still, still.parameters()))
        assert any(not torch.equal(b, p) for b, p in zip(before_moving, moving.parameters()))
    finally:
        algo.stop()


def test_target_critics_move_by_tau_and_a_policy_acts_alone_from_its_checkpoint(tmp_path):
    algo = config(per_agent=False, tau=0.25).build()
    try:
        algo.train()
        critic = algo.get_module(None)[MASAC_CRITIC_ID]
        before = [p.detach().clone() for p in critic.target_qf_twin.parameters()]
        algo._update_once()
        for t, b, m in zip(critic.target_qf_twin.parameters(), before, critic.qf_twin.parameters()):
            torch.testing.assert_close(t, 0.75 * b + 0.25 * m)
        algo.save_to_path(str(tmp_path / "ckpt"))
        obs = torch.randn(4, algo.get_module("default_policy").obs_dim)
        with torch.no_grad():
            expected = algo.get_module("default_policy").forward_inference({Columns.OBS: obs})
    finally:
        algo.stop()
    alone = RLModule.from_checkpoint(tmp_path / "ckpt" / "learner_group" / "learner" / "rl_module" / "default_policy")
    with torch.no_grad():
        got = alone.forward_inference({Columns.OBS: obs})
    torch.testing.assert_close(got[Columns.ACTION_DIST_INPUTS], expected[Columns.ACTION_DIST_INPUTS], rtol=0, atol=0)


def test_recurrent_actors_are_refused():
    with pytest.raises(NotImplementedError, match="use_lstm=True is not supported"):
        config().rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8], use_lstm=True)).build()
