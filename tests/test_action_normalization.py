"""Box actions reach the env as RLlib's normalize_actions / clip_actions say."""
import gymnasium as gym
import numpy as np
import pytest

from envs import SingleAgentParallelEnv
from envs.env_runner import MultiAgentEnvRunner
from marl import Columns, DefaultModelConfig, DefaultPPOTorchRLModule, MultiRLModuleSpec, PPOConfig, RLModuleSpec

LOW, HIGH = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)


class RecordingEnv(gym.Env):
    """Two-dimensional Box actions on [-2, 2] x [0, 10]; keeps every action it receives."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)

    def __init__(self):
        self.received = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.received.append(np.asarray(action, np.float64).copy())
        return np.zeros(3, np.float32), 0.0, False, len(self.received) % 7 == 0, {}


def sample_actions(**runner_kwargs):
    envs = []

    def creator(cfg):
        env = RecordingEnv()
        envs.append(env)
        return SingleAgentParallelEnv(env)

    spec = MultiRLModuleSpec(rl_module_specs={"default_policy": RLModuleSpec(
        module_class=DefaultPPOTorchRLModule, model_config=DefaultModelConfig(fcnet_hiddens=[4]))})
    runner = MultiAgentEnvRunner(env_creator=creator, module_spec=spec, seed=0, **runner_kwargs)
    batch = runner.sample(num_timesteps=40)[0]["default_policy"]
    sent = np.stack([a for env in envs[-1:] for a in env.received])
    return np.asarray(batch[Columns.ACTIONS], np.float64), sent


def test_normalize_actions_maps_minus_one_one_onto_the_bounds_then_clips():
    module_actions, sent = sample_actions(normalize_actions=True)
    expected = np.clip(LOW + (module_actions + 1.0) * (HIGH - LOW) / 2.0, LOW, HIGH)
    np.testing.assert_allclose(sent, expected[: len(sent)], rtol=1e-5, atol=1e-5)
    # A unit Gaussian spreads well past [-1, 1]: some actions must have been clipped.
    assert np.any(np.abs(module_actions) > 1.0)


def test_clip_actions_without_normalization_clips_raw_actions():
    module_actions, sent = sample_actions(normalize_actions=False, clip_actions=True)
    np.testing.assert_allclose(sent, np.clip(module_actions, LOW, HIGH)[: len(sent)], rtol=1e-5, atol=1e-6)


def test_neither_passes_the_modules_action_unchanged():
    module_actions, sent = sample_actions(normalize_actions=False, clip_actions=False)
    np.testing.assert_allclose(sent, module_actions[: len(sent)], rtol=1e-5, atol=1e-6)
    assert np.any(sent[:, 1] < 0.0)  # outside the space: the user asked for raw actions


def test_config_keys_reach_the_env_runner():
    algo = (PPOConfig().environment("Pendulum-v1").env_runners(normalize_actions=False, clip_actions=True)
            .training(train_batch_size_per_learner=64).build())
    try:
        runner = algo.env_runner_group.local_runner
        assert (runner.normalize_actions, runner.clip_actions) == (False, True)
    finally:
        algo.stop()


@pytest.mark.parametrize("key", ["normalize_actions", "clip_actions"])
def test_keys_are_env_runner_options(key):
    config = PPOConfig().env_runners(**{key: False})
    assert getattr(config, key) is False
