"""Episode-return result keys: RLlib 2.60's per-iteration meaning, plus marl's smoothed keys.

RLlib 2.60's ``env_runners/episode_return_mean`` averages the episodes that
completed in the current ``train()`` call (at most the latest
``metrics_num_episodes_for_smoothing``); its window is emptied on every
reduce. RLlib's tuned-example thresholds are defined on that value, so ours
must mean the same. ``smoothed_*`` average across iterations.
"""
import gymnasium as gym
import numpy as np
import pytest

from marl import DefaultModelConfig, PPOConfig
from marl.algorithms.algorithm_config import ConfigError

EPISODE_LEN = 5


class GrowingReturnEnv(gym.Env):
    """Episode k (per instance) returns k; every finished return is logged, in order."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    finished: list = []

    def __init__(self, config=None):
        self.k, self.t = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = self.k + 1, 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == EPISODE_LEN
        if done:
            GrowingReturnEnv.finished.append(float(self.k))
        return np.zeros(2, np.float32), self.k / EPISODE_LEN, done, False, {}


def build(window, batch=4 * EPISODE_LEN):
    GrowingReturnEnv.finished = []
    return (PPOConfig().environment(GrowingReturnEnv)
            .training(train_batch_size_per_learner=batch, minibatch_size=batch, num_epochs=1)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[4]))
            .reporting(metrics_num_episodes_for_smoothing=window).debugging(seed=0).build())


def finished_since(start):
    return GrowingReturnEnv.finished[start:]


def test_episode_return_mean_covers_this_iterations_episodes_only():
    algo = build(window=100)
    try:
        seen, history = 0, []
        for _ in range(3):
            before = len(GrowingReturnEnv.finished)
            r = algo.train()["env_runners"]
            mine = finished_since(before)
            history += mine
            assert r["num_episodes"] == len(mine) == 4
            assert r["episode_return_mean"] == pytest.approx(np.mean(mine))
            assert r["episode_return_min"] == min(mine) and r["episode_return_max"] == max(mine)
            assert r["module_episode_returns_mean"]["default_policy"] == pytest.approx(np.mean(mine))
            # The smoothed keys average everything so far (12 episodes < the window).
            assert r["smoothed_episode_return_mean"] == pytest.approx(np.mean(history))
            seen += len(mine)
        assert r["smoothed_num_episodes"] == seen == 12
    finally:
        algo.stop()


def test_window_caps_both_keys_at_the_latest_episodes():
    algo = build(window=3)
    try:
        for _ in range(2):
            before = len(GrowingReturnEnv.finished)
            r = algo.train()["env_runners"]
            mine = finished_since(before)
            assert r["num_episodes"] == 4  # counted, though only 3 enter the mean
            assert r["episode_return_mean"] == pytest.approx(np.mean(mine[-3:]))
            assert r["smoothed_episode_return_mean"] == pytest.approx(np.mean(mine[-3:]))
    finally:
        algo.stop()


def test_no_finished_episode_means_no_per_iteration_return():
    algo = build(window=100, batch=EPISODE_LEN - 2)
    try:
        r = algo.train()["env_runners"]
        assert r["num_episodes"] == 0 and "episode_return_mean" not in r
        r = algo.train()["env_runners"]  # the first episode ends in this call
        assert r["num_episodes"] == 1 and r["episode_return_mean"] == pytest.approx(1.0)
        r = algo.train()["env_runners"]
        assert "episode_return_mean" not in r
        assert r["smoothed_episode_return_mean"] == pytest.approx(1.0)  # carried across iterations
    finally:
        algo.stop()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_window_is_named(bad):
    with pytest.raises(ConfigError, match="metrics_num_episodes_for_smoothing"):
        PPOConfig().environment("CartPole-v1").reporting(metrics_num_episodes_for_smoothing=bad).validate()
