"""MultiAgentEnvRunner on real envs: CartPole (multi-agent and gymnasium), MPE, classic, SISL, butterfly."""
from __future__ import annotations

from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.env_runner import BOOTSTRAP_OBS
from marl.core import DEFAULT_MODULE_ID, Columns
from marl.distributions import get_default_dist_cls
from tests.test_env_runner_support import check_batch_layout, make_runner, segments


def _total_reward(batches):
    return float(sum(b[Columns.REWARDS].sum() for b in batches.values()))


# ---------------------------------------------------------------- MultiAgentCartPole


def cartpole4(config):
    from envs.multi_agent_cartpole import MultiAgentCartPole

    return MultiAgentCartPole({"num_agents": 4})


def test_multi_agent_cartpole_two_policies_episode_returns_match_rewards():
    runner = make_runner(cartpole4, module_ids=["p0", "p1"], num_envs=4,
                         policy_mapping_fn=lambda aid, ep: f"p{aid % 2}")
    batches, metrics = runner.sample(num_episodes=4)
    assert set(batches) == {"p0", "p1"}
    for batch in batches.values():
        check_batch_layout(batch)
        assert (batch[Columns.REWARDS] == 1.0).all()
        # Every agent-episode ends terminated or truncated (whole episodes only).
        for start, end in segments(batch):
            assert batch[Columns.TERMINATEDS][end - 1] or batch[Columns.TRUNCATEDS][end - 1]
    assert _total_reward(batches) == pytest.approx(metrics["episode_return_mean"] * metrics["num_episodes"])
    assert set(metrics["agent_episode_return_mean"]) == {0, 1, 2, 3}
    assert metrics["module_episode_return_mean"]["p0"] == pytest.approx(
        metrics["agent_episode_return_mean"][0] + metrics["agent_episode_return_mean"][2])
    assert metrics["num_module_steps_sampled"] == {m: len(b[Columns.EPS_ID]) for m, b in batches.items()}


def test_multi_agent_cartpole_fragments_bootstrap_from_the_next_observation():
    runner = make_runner(cartpole4, num_envs=2)
    b1, _ = runner.sample(num_timesteps=2 * 5)
    b2, _ = runner.sample(num_timesteps=2 * 5)
    b1, b2 = b1[DEFAULT_MODULE_ID], b2[DEFAULT_MODULE_ID]
    check_batch_layout(b1)
    first_obs = {int(b2[Columns.EPS_ID][s]): b2[Columns.OBS][s] for s, _ in segments(b2)}
    checked = 0
    for i, (start, end) in enumerate(segments(b1)):
        eps = int(b1[Columns.EPS_ID][start])
        if not (b1[Columns.TERMINATEDS][end - 1] or b1[Columns.TRUNCATEDS][end - 1]):
            np.testing.assert_array_equal(b1[BOOTSTRAP_OBS][i], first_obs[eps])
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------- gymnasium via the adapter


def short_cartpole(config):
    from envs.gym_adapter import SingleAgentParallelEnv

    return SingleAgentParallelEnv(gym.make("CartPole-v1", max_episode_steps=8))


def test_gymnasium_env_via_adapter_truncation_bootstraps_on_final_obs():
    runner = make_runner(short_cartpole, num_envs=2)
    batches, metrics = runner.sample(num_episodes=6)
    assert list(batches) == [DEFAULT_MODULE_ID]
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    assert metrics["episode_return_mean"] == pytest.approx(metrics["episode_len_mean"])
    truncated = 0
    for i, (start, end) in enumerate(segments(batch)):
        if batch[Columns.TRUNCATEDS][end - 1]:
            truncated += 1
            assert end - start == 8
            assert not batch[Columns.TERMINATEDS][end - 1]
            boot = batch[BOOTSTRAP_OBS][i]
            assert boot.any() and not np.array_equal(boot, batch[Columns.OBS][end - 1])
        else:
            assert batch[Columns.TERMINATEDS][end - 1] and end - start < 8
    assert truncated > 0


# ---------------------------------------------------------------- MPE simple_spread


def simple_spread(config):
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(N=3, max_cycles=5)


def test_simple_spread_truncates_every_agent_at_max_cycles():
    runner = make_runner(simple_spread, num_envs=2)
    batches, metrics = runner.sample(num_episodes=2)
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    assert batch[Columns.OBS].shape[1:] == (18,)
    assert metrics["episode_len_mean"] == 5
    assert len(batch[Columns.SEQ_LENS]) == 3 * metrics["num_episodes"]
    assert (batch[Columns.SEQ_LENS] == 5).all()
    last = np.cumsum(batch[Columns.SEQ_LENS]) - 1
    assert batch[Columns.TRUNCATEDS][last].all() and not batch[Columns.TERMINATEDS].any()
    assert _total_reward(batches) == pytest.approx(
        metrics["episode_return_mean"] * metrics["num_episodes"], rel=1e-5)


# ---------------------------------------------------------------- connect_four (turn-based)


def connect_four(config):
    from pettingzoo.classic import connect_four_v3

    from envs.turn_based import TurnBasedParallelEnv

    return TurnBasedParallelEnv(connect_four_v3.env())


def _check_masks_and_game_rewards(batch):
    mask = batch[Columns.OBS]["action_mask"]
    actions = batch[Columns.ACTIONS]
    assert (mask[np.arange(len(actions)), actions] == 1).all(), "illegal move sampled"
    rewards = batch[Columns.REWARDS]
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}


def test_connect_four_never_plays_an_illegal_move_and_losers_get_minus_one():
    runner = make_runner(connect_four, num_envs=4)
    batches, metrics = runner.sample(num_episodes=16)
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    _check_masks_and_game_rewards(batch)
    # One segment per player per game; the game's two final rewards cancel out.
    assert len(batch[Columns.SEQ_LENS]) == 2 * metrics["num_episodes"]
    assert batch[Columns.TERMINATEDS].sum() == 2 * metrics["num_episodes"]
    last = np.cumsum(batch[Columns.SEQ_LENS]) - 1
    finals = batch[Columns.REWARDS][last]
    assert (finals != 0).sum() >= metrics["num_episodes"]  # random play rarely draws
    assert batch[Columns.REWARDS].sum() == 0.0
    assert (batch[Columns.REWARDS][np.setdiff1d(np.arange(len(batch[Columns.REWARDS])), last)] == 0).all()
    assert metrics["episode_return_mean"] == 0.0  # zero-sum
    # Players alternate: the lengths of the two segments of a game differ by at most one.
    lens = batch[Columns.SEQ_LENS]
    assert metrics["episode_len_mean"] == pytest.approx(lens.sum() / metrics["num_episodes"])


def test_connect_four_across_sample_calls_holds_back_moves_until_the_reward_is_known():
    runner = make_runner(connect_four, num_envs=2,
                         env_to_module_connector=lambda env: __import__(
                             "marl.connectors", fromlist=["FlattenObservations"]).FlattenObservations())
    obs_space, _ = runner.get_spaces()[DEFAULT_MODULE_ID]
    assert obs_space["observation"].shape == (84,)
    per_eps = defaultdict(list)
    num_episodes = 0
    for _ in range(20):
        batches, metrics = runner.sample(num_timesteps=2 * 5)
        num_episodes += metrics["num_episodes"]
        if not batches:
            continue
        batch = batches[DEFAULT_MODULE_ID]
        check_batch_layout(batch)
        assert batch[Columns.OBS]["observation"].dtype == np.float32
        _check_masks_and_game_rewards(batch)
        for start, end in segments(batch):
            eps = int(batch[Columns.EPS_ID][start])
            per_eps[eps].extend(zip(batch[Columns.REWARDS][start:end].tolist(),
                                    batch[Columns.TERMINATEDS][start:end].tolist()))
    assert num_episodes > 0
    finished = [rows for rows in per_eps.values() if rows[-1][1]]
    assert len(finished) >= 2 * num_episodes - 2
    for rows in finished:
        # Every reward sits on the player's last move, including the loser's -1,
        # which arrives only after the winner's move (possibly in the next call).
        assert all(r == 0 for r, _ in rows[:-1])
    total = sum(r for rows in finished for r, _ in rows)
    assert total == 0


# ---------------------------------------------------------------- multiwalker (continuous)


def multiwalker(config):
    from pettingzoo.sisl import multiwalker_v9

    return multiwalker_v9.parallel_env(n_walkers=2, max_cycles=15)


def test_multiwalker_box_actions_are_clipped_for_the_env_but_recorded_unclipped():
    sent = []

    def recording_creator(config):
        env = multiwalker(config)
        step = env.step

        def recording_step(actions):
            sent.extend(np.asarray(a) for a in actions.values())
            return step(actions)

        env.step = recording_step
        return env

    runner = make_runner(recording_creator, num_envs=2, model_config={"init_log_std": 1.0})
    batches, metrics = runner.sample(num_timesteps=2 * 10)
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    actions = batch[Columns.ACTIONS]
    assert actions.shape[1:] == (4,) and actions.dtype == np.float32
    assert (np.abs(actions) > 1).any(), "wide Gaussian must produce out-of-bounds samples"
    sent = np.stack(sent)
    assert sent.min() >= -1.0 and sent.max() <= 1.0
    # ACTION_LOGP belongs to the unclipped action.
    dist_cls = get_default_dist_cls(runner.module[DEFAULT_MODULE_ID].action_space)
    dist = dist_cls.from_logits(torch.as_tensor(batch[Columns.ACTION_DIST_INPUTS]))
    np.testing.assert_allclose(dist.logp(torch.as_tensor(actions)).numpy(),
                               batch[Columns.ACTION_LOGP], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- pistonball (images)


def small_pistonball(config):
    from envs.supersuit_presets import pistonball_preset

    return pistonball_preset({"n_pistons": 3, "max_cycles": 6, "size": 42, "frame_stack": 2})


def test_pistonball_preset_image_observations_batch():
    runner = make_runner(small_pistonball, num_envs=2)
    obs_space, act_space = runner.get_spaces()[DEFAULT_MODULE_ID]
    assert obs_space.shape == (42, 42, 2)
    batches, metrics = runner.sample(num_episodes=2)
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    assert batch[Columns.OBS].shape[1:] == (42, 42, 2)
    assert batch[BOOTSTRAP_OBS].shape == (len(batch[Columns.SEQ_LENS]), 42, 42, 2)
    assert metrics["num_episodes"] >= 2
    assert len(batch[Columns.SEQ_LENS]) == 3 * metrics["num_episodes"]
    assert _total_reward(batches) == pytest.approx(
        metrics["episode_return_mean"] * metrics["num_episodes"], rel=1e-4, abs=1e-3)
