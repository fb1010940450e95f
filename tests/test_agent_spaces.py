"""Agent groups: padded observations, masked actions and agent ids for shared modules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.agent_spaces import AgentSpacesEnv
from envs.registry import make_env
from marl import Algorithm, MAPPOConfig, PPOConfig
from marl.algorithms.module_setup import agent_id_as_module_id
from marl.core.columns import Columns
from marl.core.constants import DEFAULT_MODULE_ID

LISTENER = "mpe2.simple_speaker_listener_v4"
SHARED = {"speaker_0": DEFAULT_MODULE_ID, "listener_0": DEFAULT_MODULE_ID}


def listener_env() -> AgentSpacesEnv:
    return AgentSpacesEnv(make_env(LISTENER, {"max_cycles": 25}), SHARED, pad=True, add_agent_id=True)


def test_padding_gives_a_shared_module_one_space_with_the_agents_own_values_and_a_mask():
    raw = make_env(LISTENER, {"max_cycles": 25})
    env = listener_env()
    assert env.observation_space("speaker_0") == env.observation_space("listener_0")
    assert env.action_space("speaker_0") == env.action_space("listener_0") == raw.action_space("listener_0")
    raw_obs, _ = raw.reset(seed=3)
    obs, _ = env.reset(seed=3)
    speaker = obs["speaker_0"]
    width = raw.observation_space("listener_0").shape[0]  # 11, the widest
    np.testing.assert_array_equal(speaker["observation"][:3], raw_obs["speaker_0"])
    np.testing.assert_array_equal(speaker["observation"][3:width], np.zeros(width - 3))
    np.testing.assert_array_equal(speaker["observation"][width:], [1.0, 0.0])  # agent id 0 of 2
    np.testing.assert_array_equal(speaker["action_mask"], [1, 1, 1, 0, 0])  # the speaker has 3 actions
    np.testing.assert_array_equal(obs["listener_0"]["observation"][:width], raw_obs["listener_0"])
    np.testing.assert_array_equal(obs["listener_0"]["observation"][width:], [0.0, 1.0])
    np.testing.assert_array_equal(obs["listener_0"]["action_mask"], np.ones(5))
    assert env.state().shape == raw.state().shape  # the global state passes through


def test_an_action_outside_the_agents_own_space_is_an_error_naming_it():
    env = listener_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"agent 'speaker_0' got action 4, outside its own space Discrete\(3\)"):
        env.step({"speaker_0": 4, "listener_0": 0})


@pytest.mark.parametrize("config_cls", [PPOConfig, MAPPOConfig])
def test_a_shared_policy_over_different_agents_never_samples_a_masked_action(config_cls):
    algo = (config_cls().environment(LISTENER, env_config={"max_cycles": 25})
            .multi_agent(pad_agent_spaces=True)
            .training(train_batch_size_per_learner=400, minibatch_size=100, num_epochs=1)
            .debugging(seed=0)).build()
    try:
        assert algo.get_module(None).policy_module_ids == [DEFAULT_MODULE_ID]
        algo.train()
        samples, _ = algo.env_runner_group.sample(400)
        batch = samples[DEFAULT_MODULE_ID]
        masks, actions = batch[Columns.OBS]["action_mask"], batch[Columns.ACTIONS]
        speaker_rows = masks[:, 3] == 0
        assert 0 < speaker_rows.sum() < len(actions)
        assert actions[speaker_rows].max() <= 2
        assert actions[~speaker_rows].max() >= 3  # the listener still uses all five
    finally:
        algo.stop()


def test_agent_ids_let_one_shared_network_tell_identical_observations_apart():
    algo = (PPOConfig().environment("mpe2.simple_spread_v3", env_config={"N": 3, "max_cycles": 5})
            .multi_agent(add_agent_id=True)
            .training(train_batch_size_per_learner=60, minibatch_size=30, num_epochs=1)).build()
    try:
        module = algo.get_module(DEFAULT_MODULE_ID)
        assert module.observation_space.shape == (18 + 3,)
        env = algo.env_creator({})
        obs, _ = env.reset(seed=0)
        for i, agent in enumerate(env.possible_agents):
            np.testing.assert_array_equal(obs[agent][-3:], np.eye(3)[i])
        same = np.stack([np.r_[np.zeros(18), np.eye(3)[i]] for i in range(3)]).astype(np.float32)
        with torch.no_grad():
            logits = module.forward_inference({Columns.OBS: torch.from_numpy(same)})[Columns.ACTION_DIST_INPUTS]
        assert not torch.allclose(logits[0], logits[1])
    finally:
        algo.stop()


def test_agents_in_different_groups_keep_their_own_spaces():
    raw = make_env(LISTENER, {"max_cycles": 25})
    env = AgentSpacesEnv(raw, {"speaker_0": "speaker_0", "listener_0": "listener_0"}, pad=True, add_agent_id=False)
    for agent in raw.possible_agents:
        assert env.observation_space(agent) == raw.observation_space(agent)
        assert env.action_space(agent) == raw.action_space(agent)


def test_agents_of_one_module_with_box_actions_of_different_shapes_are_refused():
    class TwoBoxes:
        possible_agents = ["a", "b"]
        agents = ["a", "b"]

        def observation_space(self, agent):
            import gymnasium as gym
            return gym.spaces.Box(-1, 1, (2,), np.float32)

        def action_space(self, agent):
            import gymnasium as gym
            return gym.spaces.Box(-1, 1, (1 if agent == "a" else 2,), np.float32)

    with pytest.raises(ValueError, match="module 'm' have different action spaces.*only Discrete"):
        AgentSpacesEnv(TwoBoxes(), {"a": "m", "b": "m"}, pad=True, add_agent_id=False)


def test_image_observations_are_refused_naming_the_agent():
    env = make_env("pettingzoo.classic.tictactoe_v3", {})
    with pytest.raises(ValueError, match="agent 'player_1' .* need 1-D Box observations"):
        AgentSpacesEnv(env, {}, pad=False, add_agent_id=True)


def test_a_checkpoint_restores_the_padded_spaces_and_acts_the_same(tmp_path):
    cfg = (PPOConfig().environment(LISTENER, env_config={"max_cycles": 25})
           .multi_agent(pad_agent_spaces=True, add_agent_id=True, policies={"shared"},
                        policy_mapping_fn=lambda aid, ep, **kw: "shared")
           .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1))
    algo = cfg.build()
    try:
        algo.train()
        path = algo.save(tmp_path / "ckpt")
        obs, _ = algo.env_creator({}).reset(seed=1)
        batch = {Columns.OBS: {k: torch.as_tensor(np.stack([obs[a][k] for a in obs])) for k in obs["speaker_0"]}}
        with torch.no_grad():
            expected = algo.get_module("shared").forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path, config=cfg)
    try:
        obs2, _ = restored.env_creator({}).reset(seed=1)
        for agent in obs:
            np.testing.assert_array_equal(obs2[agent]["observation"], obs[agent]["observation"])
        with torch.no_grad():
            got = restored.get_module("shared").forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    finally:
        restored.stop()


def test_per_agent_policies_with_agent_ids_train():
    algo = (MAPPOConfig().environment(LISTENER, env_config={"max_cycles": 25})
            .multi_agent(policies={"speaker_0", "listener_0"}, policy_mapping_fn=agent_id_as_module_id,
                         add_agent_id=True)
            .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)).build()
    try:
        assert algo.get_module("speaker_0").observation_space.shape == (3 + 2,)
        result = algo.train()
        assert {"speaker_0", "listener_0"} <= set(result["learners"])
    finally:
        algo.stop()
