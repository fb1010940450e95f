"""VDN / QMIX: monotonic mixing, joint transitions, the mixer in the container and optimizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.joint_transitions import NEXT_STATE, STATE, joint_transitions
from learners.qmix_learner import JOINT
from learners.transitions import N_STEP
from marl import Algorithm, DefaultModelConfig, QMIXConfig, QMixer, VDNMixer
from marl.algorithms.algorithm_config import ConfigError
from marl.core.columns import Columns
from marl.models.mixers import mixer_observation_space
from tests.test_env_runner_support import ScriptedEnv, make_runner
from tests.test_mappo import ScriptedStateEnv

SPREAD = "mpe2.simple_spread_v3"
AGENTS = ["agent_0", "agent_1", "agent_2"]


def qmixer(state_dim=5, agents=3) -> QMixer:
    torch.manual_seed(0)
    return QMixer(observation_space=mixer_observation_space(state_dim, agents), action_space=None,
                  model_config={"mixing_embed_dim": 8, "hypernet_embed": 16})


def test_qmix_is_monotonic_in_every_agents_q():
    mixer = qmixer()
    state = torch.randn(256, 5)
    qs = torch.randn(256, 3, requires_grad=True)
    q_tot = mixer.mix(qs, state)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert (grad >= 0).all()
    # Raising any one agent's Q never lowers Q_tot (finite differences, both nets).
    for i in range(3):
        bumped = qs.detach().clone()
        bumped[:, i] += 0.5
        assert (mixer.mix(bumped, state) >= mixer.mix(qs.detach(), state) - 1e-6).all()
        assert (mixer.mix_target(bumped, state) >= mixer.mix_target(qs.detach(), state) - 1e-6).all()


def test_qmix_mixing_weights_are_non_negative_for_any_state():
    hyper = qmixer().hyper
    state = torch.randn(64, 5) * 10
    assert (hyper.w1(state).abs() >= 0).all()  # what mix() uses
    w1 = hyper.w1(state).abs()
    w2 = hyper.w2(state).abs()
    assert w1.min() >= 0 and w2.min() >= 0


def test_vdn_is_the_sum():
    mixer = VDNMixer(observation_space=mixer_observation_space(4, 3), action_space=None)
    qs = torch.randn(10, 3)
    torch.testing.assert_close(mixer.mix(qs, torch.zeros(10, 4)), qs.sum(-1))
    assert list(mixer.parameters()) == []


def spread_config(mixer="qmix", **training) -> QMIXConfig:
    return (QMIXConfig().environment(SPREAD, env_config={"N": 3, "max_cycles": 10})
            .env_runners(num_envs_per_env_runner=2)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
            .training(mixer=mixer, num_steps_sampled_before_learning_starts=40, train_batch_size_per_learner=16,
                      mixing_embed_dim=8, hypernet_embed=16, **training)
            .reporting(min_sample_timesteps_per_iteration=40)
            .debugging(seed=4))


def test_joint_rows_hold_every_agent_of_one_env_step_with_state_and_team_reward():
    algo = spread_config().build()
    try:
        samples, _ = algo.env_runner_group.sample(60)
        rows, dropped = joint_transitions(samples, AGENTS, n_step=1, gamma=0.9)
        assert dropped == 0
        n = len(rows[Columns.REWARDS])
        assert n == 60
        # mpe2's state is every agent's observation, concatenated: the join must line them up.
        np.testing.assert_array_equal(rows[STATE], np.concatenate([rows[Columns.OBS][a] for a in AGENTS], -1))
        np.testing.assert_array_equal(rows[NEXT_STATE],
                                      np.concatenate([rows[Columns.NEXT_OBS][a] for a in AGENTS], -1))
        # The team reward: the agents' rewards at the same (episode, step), summed.
        from marl.core.columns import ENV_EPISODE_ID, ENV_T, global_rows

        batch = samples["default_policy"]
        team, state_of = {}, {}
        for e, t, r, g in zip(batch[ENV_EPISODE_ID].tolist(), batch[ENV_T].tolist(),
                              batch[Columns.REWARDS].tolist(), global_rows(batch)):
            team[(e, t)] = team.get((e, t), 0.0) + r
            state_of[g.tobytes()] = (e, t)
        expected = [team[state_of[rows[STATE][i].tobytes()]] for i in range(n)]
        np.testing.assert_allclose(rows[Columns.REWARDS], expected, rtol=1e-6)
        assert (rows[N_STEP] == 1).all()
    finally:
        algo.stop()


def test_steps_where_some_agent_did_not_act_are_dropped_and_counted():
    runner = make_runner(ScriptedStateEnv, global_input="state")
    samples, _ = runner.sample(num_episodes=1)
    rows, dropped = joint_transitions(samples, ["a", "b", "c", "late"], n_step=1, gamma=0.9)
    # Only at t=2 do all four act (a: t 0-2, b: 0-4, c: 0-6, late: 2-4); c's other six steps go.
    np.testing.assert_array_equal(rows[Columns.REWARDS], [2 + 12 + 22 + 32])
    np.testing.assert_array_equal(rows[STATE], [[2, 102]])
    assert dropped == 6


@pytest.mark.parametrize("mixer", ["qmix", "vdn"])
def test_the_mixer_is_a_non_policy_module_in_the_single_optimizer_once(mixer):
    algo = spread_config(mixer).build()
    try:
        container = algo.get_module(None)
        assert container.non_policy_module_ids == ["mixer"]
        (optimizer,) = algo.learner.optimizers.values()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        assert len({id(p) for p in params}) == len(params)
        mixer_params = {id(p) for p in container["mixer"].parameters() if p.requires_grad}
        assert mixer_params <= {id(p) for p in params}
        if mixer == "qmix":
            assert mixer_params
            frozen = {id(p) for p in container["mixer"].target_hyper.parameters()}
            assert not frozen & {id(p) for p in params}
            before = [p.detach().clone() for p in container["mixer"].hyper.parameters()]
        result = algo.train()
        assert result["learners"]["mixer"]["qf_loss"] > 0
        if mixer == "qmix":
            assert any(not torch.equal(b, p) for b, p in zip(before, container["mixer"].hyper.parameters()))
    finally:
        algo.stop()


def test_per_agent_q_modules_with_a_shared_mixer():
    cfg = spread_config().multi_agent(policies=set(AGENTS), policy_mapping_fn=lambda aid, ep, **kw: aid)
    algo = cfg.build()
    try:
        assert algo.learner.agent_modules == {a: a for a in AGENTS}
        before = {a: [p.detach().clone() for p in algo.get_module(a).parameters() if p.requires_grad] for a in AGENTS}
        algo.train()
        for a in AGENTS:  # every agent's network got gradient through the mixer
            after = [p for p in algo.get_module(a).parameters() if p.requires_grad]
            assert any(not torch.equal(b, p) for b, p in zip(before[a], after)), a
    finally:
        algo.stop()


def test_checkpoint_restores_agents_mixer_and_target_mixer(tmp_path):
    algo = spread_config(store_buffer_in_checkpoints=True).build()
    try:
        algo.train()
        algo.learner.update_target_networks(10 ** 9)
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        saved = {k: v.clone() for k, v in algo.learner.module.state_dict().items()}
        size = len(algo.replay_buffers[JOINT])
    finally:
        algo.stop()
    assert (tmp_path / "ckpt" / "learner_group" / "learner" / "rl_module" / "mixer").is_dir()
    restored = Algorithm.from_checkpoint(path)
    try:
        state = restored.learner.module.state_dict()
        assert any("target_hyper" in k for k in state)
        for key, value in saved.items():
            assert torch.equal(state[key], value), key
        assert len(restored.replay_buffers[JOINT]) == size
        restored.train()
    finally:
        restored.stop()


def test_bad_qmix_settings_are_named():
    with pytest.raises(ConfigError, match="mixer='qtran'"):
        spread_config("qtran").build()
    with pytest.raises(ConfigError, match="ScriptedEnv has no state"):
        (QMIXConfig().environment(ScriptedEnv).training(state_input="state")).build()
    with pytest.raises(ConfigError, match=r"n_step=\(2, 5\).*one n for every agent"):
        spread_config("vdn").training(n_step=(2, 5)).build()


def test_recurrent_agents_train_on_joint_sequences_with_stored_states():
    from learners.joint_transitions import joint_sequences

    cfg = spread_config(burn_in_len=1).rl_module(
        model_config=DefaultModelConfig(fcnet_hiddens=[16], use_lstm=True, lstm_cell_size=8, max_seq_len=4))
    algo = cfg.build()
    try:
        samples, _ = algo.env_runner_group.sample(30)
        rows, dropped = joint_sequences(samples, AGENTS, seq_len=4)
        assert dropped == 0
        obs = rows[Columns.OBS]
        # mpe2's state is the agents' observations side by side, at every step of every chunk,
        # including the observation after the chunk.
        joined = np.concatenate([obs[a] for a in AGENTS], axis=-1)
        first_pad = rows[Columns.LOSS_MASK].sum(1)
        for i in range(len(rows[STATE])):
            n = first_pad[i] + 1  # real steps and the next observation
            np.testing.assert_array_equal(rows[STATE][i, :n], joined[i, :n])
        assert set(rows[Columns.STATE_IN]) == set(AGENTS)
        before = [p.detach().clone() for p in algo.get_module(None)["mixer"].hyper.parameters()]
        result = algo.train()
        assert result["learners"]["mixer"]["qf_loss"] > 0
        assert any(not torch.equal(b, p) for b, p in zip(before, algo.get_module(None)["mixer"].hyper.parameters()))
        assert algo.replay_buffers[JOINT].columns[Columns.OBS]["agent_0"].shape[1] == 5
    finally:
        algo.stop()
