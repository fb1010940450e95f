"""SuperSuit presets: image preprocessing (pistonball) and padding of heterogeneous agents."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.spaces import Box, Discrete
from pettingzoo import ParallelEnv

from envs import image_preset, pad_heterogeneous, pistonball_preset


# ------------------------------------------------------------------ pistonball
@pytest.mark.parametrize("size", [84, 42])
def test_pistonball_preset_observations_have_the_advertised_shape_and_dtype(size):
    env = pistonball_preset({"n_pistons": 3, "max_cycles": 20, "size": size})
    expected_space = Box(0.0, 1.0, (size, size, 4), np.float32)
    assert env.possible_agents == ["piston_0", "piston_1", "piston_2"]
    for agent in env.possible_agents:
        assert env.observation_space(agent) == expected_space
    obs, _ = env.reset(seed=0)
    steps = 0
    while env.agents:
        for agent, ob in obs.items():
            assert ob.shape == (size, size, 4) and ob.dtype == np.float32
            assert expected_space.contains(ob)
        obs, *_ = env.step({a: env.action_space(a).sample() for a in env.agents})
        steps += 1
    assert 1 <= steps <= 20, "max_cycles reached the env"
    # The newest frame is not blank: pixels really are scaled into [0, 1].
    assert 0.0 < obs["piston_0"][..., -1].max() <= 1.0


def test_pistonball_preset_discrete_actions_and_unknown_keys():
    env = pistonball_preset({"n_pistons": 3, "continuous": False, "size": 42})
    assert env.action_space("piston_0") == Discrete(3)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['n_piston'\]"):
        pistonball_preset({"n_piston": 3})


class ClockImages(ParallelEnv):
    """Three agents see an RGB image filled with the step count ``t`` (t = 0 at reset)."""

    metadata = {"name": "clock_images"}
    render_mode = None

    def __init__(self):
        self.possible_agents = ["a", "b", "c"]

    def observation_space(self, agent):
        return Box(0, 255, (16, 16, 3), np.uint8)

    def action_space(self, agent):
        return Discrete(2)

    def _obs(self):
        return {a: np.full((16, 16, 3), self.t, np.uint8) for a in self.agents}

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        obs = self._obs()
        return obs, dict.fromkeys(obs, 0.0), dict.fromkeys(obs, False), dict.fromkeys(obs, False), {a: {} for a in obs}


def test_image_preset_stacks_every_agents_current_frame_last():
    """SuperSuit's AEC-side frame stack lags for all agents but the first; ours must not."""
    env = image_preset(ClockImages(), size=42, frame_stack=3)
    env.reset(seed=0)
    for _ in range(4):
        obs, *_ = env.step({a: 0 for a in env.agents})
    for agent in ("a", "b", "c"):
        # Frames of steps 2, 3, 4 (gray of a constant image is the constant), scaled by 255.
        np.testing.assert_allclose(obs[agent][0, 0], np.array([2, 3, 4]) / 255.0, rtol=1e-5)


def test_image_preset_rgb_and_uint8_options():
    env = image_preset(ClockImages(), size=42, frame_stack=2, grayscale=False, scale_to_unit=False)
    assert env.observation_space("a") == Box(0, 255, (42, 42, 6), np.uint8)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step({a: 0 for a in env.agents})
    assert obs["b"].dtype == np.uint8 and obs["b"].shape == (42, 42, 6)
    assert obs["b"][0, 0].tolist() == [0, 0, 0, 1, 1, 1]


def test_image_preset_refuses_non_image_observations_naming_the_agent():
    with pytest.raises(ValueError, match="agent 'x' has observation space"):
        image_preset(HeterogeneousEnv())


# --------------------------------------------------------------- padding
class HeterogeneousEnv(ParallelEnv):
    """Two agents with different Box observation shapes and action spaces; records actions."""

    metadata = {"name": "heterogeneous"}
    render_mode = None

    def __init__(self, box_actions: bool = False):
        self.possible_agents = ["x", "y"]
        self._obs_spaces = {"x": Box(-1, 1, (3,), np.float32), "y": Box(-2, 2, (5,), np.float32)}
        if box_actions:
            self._act_spaces = {"x": Box(-1, 1, (1,), np.float32), "y": Box(-1, 1, (2,), np.float32)}
        else:
            self._act_spaces = {"x": Discrete(2), "y": Discrete(4)}
        self.received = []

    def observation_space(self, agent):
        return self._obs_spaces[agent]

    def action_space(self, agent):
        return self._act_spaces[agent]

    def _obs(self):
        return {a: np.full(self._obs_spaces[a].shape, self.t + 0.5, np.float32) for a in self.agents}

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        for agent, action in actions.items():
            assert self._act_spaces[agent].contains(action), (agent, action)
        self.received.append(dict(actions))
        self.t += 1
        obs = self._obs()
        return obs, dict.fromkeys(obs, 1.0), dict.fromkeys(obs, self.t >= 3), dict.fromkeys(obs, False), {a: {} for a in obs}


def test_pad_heterogeneous_gives_every_agent_the_same_spaces_and_pads_obs_with_zeros():
    base = HeterogeneousEnv()
    env = pad_heterogeneous(base)
    assert env.observation_space("x") == env.observation_space("y")
    assert env.observation_space("x").shape == (5,)
    assert env.action_space("x") == env.action_space("y") == Discrete(4)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["x"], [0.5, 0.5, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(obs["y"], [0.5] * 5)
    obs, rewards, terms, _, _ = env.step({"x": 3, "y": 3})
    # x's padded action 3 does not exist in Discrete(2): SuperSuit maps it to 0.
    assert base.received[-1] == {"x": 0, "y": 3}
    assert rewards == {"x": 1.0, "y": 1.0}
    env.step({"x": 1, "y": 2})
    assert base.received[-1] == {"x": 1, "y": 2}
    for agent, ob in obs.items():
        assert env.observation_space(agent).contains(ob)


def test_pad_heterogeneous_slices_padded_box_actions_back_to_each_agents_shape():
    base = HeterogeneousEnv(box_actions=True)
    env = pad_heterogeneous(base)
    assert env.action_space("x").shape == env.action_space("y").shape == (2,)
    env.reset(seed=0)
    env.step({"x": np.array([0.25, 0.75], np.float32), "y": np.array([-0.5, 0.5], np.float32)})
    np.testing.assert_array_equal(base.received[-1]["x"], [0.25])
    np.testing.assert_array_equal(base.received[-1]["y"], [-0.5, 0.5])


class DiscreteObsEnv(HeterogeneousEnv):
    """Discrete observations of different sizes (SuperSuit's padding breaks on these)."""

    def __init__(self):
        super().__init__()
        self._obs_spaces = {"x": Discrete(3), "y": Discrete(6)}

    def _obs(self):
        return {a: (self.t + (a == "y") * 3) % self._obs_spaces[a].n for a in self.agents}


def test_pad_heterogeneous_keeps_discrete_observation_values():
    env = pad_heterogeneous(DiscreteObsEnv())
    assert env.observation_space("x") == env.observation_space("y") == Discrete(6)
    obs, _ = env.reset(seed=0)
    assert obs == {"x": 0, "y": 3}
    obs, *_ = env.step({"x": 1, "y": 1})
    assert obs == {"x": 1, "y": 4}


def test_pad_heterogeneous_refuses_mixed_space_kinds_naming_the_agents():
    env = HeterogeneousEnv()
    env._obs_spaces["y"] = Discrete(4)
    with pytest.raises(ValueError, match=r"agents 'x' .* and 'y' .* cannot be padded"):
        pad_heterogeneous(env)
