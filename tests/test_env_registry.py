"""The env registry: every accepted form of ``env`` gives a working env in the common interface."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv
from gymnasium.spaces import Box, Discrete
from pettingzoo import ParallelEnv
from pettingzoo.butterfly import pistonball_v6
from pettingzoo.classic.tictactoe.tictactoe import raw_env as TicTacToeRaw

from envs import (
    MultiAgentCartPole,
    SingleAgentParallelEnv,
    TurnBasedParallelEnv,
    UnknownEnvError,
    make_env,
    make_env_creator,
    pistonball_preset,
    register_env,
)
from marl.core.constants import DEFAULT_AGENT_ID


def step_a_few_times(env: ParallelEnv, steps: int = 3, seed: int = 0) -> None:
    """reset + a few steps with sampled (masked where needed) actions; checks the dict contract."""
    obs, infos = env.reset(seed=seed)
    assert obs and set(obs) <= set(env.possible_agents)
    for _ in range(steps):
        if not env.agents:
            break
        actions = {}
        for agent in obs:
            if agent not in env.agents:
                continue
            space = env.action_space(agent)
            mask = obs[agent].get("action_mask") if isinstance(obs[agent], dict) else None
            actions[agent] = space.sample(mask=mask) if mask is not None else space.sample()
        obs, rewards, terms, truncs, infos = env.step(actions)
        assert set(actions) <= set(rewards), "every acting agent gets a reward entry"
        for agent, ob in obs.items():
            assert env.observation_space(agent).contains(ob), f"obs of {agent!r} not in its space"


# ---------------------------------------------------------------- gymnasium ids
def test_gym_id_gives_single_agent_env_with_env_config_as_make_kwargs():
    env = make_env("FrozenLake-v1", {"map_name": "8x8", "is_slippery": False})
    assert isinstance(env, SingleAgentParallelEnv)
    assert env.possible_agents == [DEFAULT_AGENT_ID]
    assert env.observation_space(DEFAULT_AGENT_ID) == Discrete(64), "env_config reached gym.make"
    step_a_few_times(env)


def test_gym_id_cartpole():
    env = make_env("CartPole-v1")
    assert env.observation_space(DEFAULT_AGENT_ID).shape == (4,)
    step_a_few_times(env)


def pong_rom_available() -> bool:
    """ale-py >= 0.9 bundles its ROMs; other builds may ship without them."""
    try:
        from ale_py import roms

        path = roms.get_rom_path("pong")
    except (ImportError, OSError):
        return False
    return path is not None and path.exists()


@pytest.mark.skipif(not pong_rom_available(), reason="ale_py or its Pong ROM is not installed")
def test_gym_module_prefixed_id_ale_pong():
    env = make_env("ale_py:ALE/Pong-v5", {"obs_type": "grayscale"})
    assert isinstance(env, SingleAgentParallelEnv)
    assert env.observation_space(DEFAULT_AGENT_ID).shape == (210, 160), "env_config reached gym.make"
    step_a_few_times(env)
    env.close()


# ------------------------------------------------------- PettingZoo module paths
@pytest.mark.parametrize(
    "name, config, agents",
    [
        ("mpe2.simple_spread_v3", {"N": 2}, ["agent_0", "agent_1"]),
        ("pettingzoo.butterfly.pistonball_v6", {"n_pistons": 3}, ["piston_0", "piston_1", "piston_2"]),
        ("pettingzoo.sisl.multiwalker_v9", {"n_walkers": 2}, ["walker_0", "walker_1"]),
    ],
)
def test_pettingzoo_module_path_uses_parallel_env_with_config(name, config, agents):
    env = make_env(name, config)
    assert isinstance(env, ParallelEnv) and not isinstance(env, TurnBasedParallelEnv)
    assert env.possible_agents == agents, "env_config reached parallel_env(**env_config)"
    step_a_few_times(env)


def test_turn_based_module_path_is_wrapped_from_its_aec_env():
    env = make_env("pettingzoo.classic.connect_four_v3")
    assert isinstance(env, TurnBasedParallelEnv)
    obs, _ = env.reset(seed=0)
    assert list(obs) == ["player_0"]
    step_a_few_times(env)


def test_pettingzoo_module_object_is_accepted_like_its_path():
    env = make_env(pistonball_v6, {"n_pistons": 4})
    assert len(env.possible_agents) == 4


# ------------------------------------------------------ PettingZoo registry names
@pytest.mark.parametrize(
    "name, config, agents",
    [
        ("butterfly/pistonball-v6", {"n_pistons": 3}, ["piston_0", "piston_1", "piston_2"]),
        ("mpe/simple_spread-v3", {"N": 2}, ["agent_0", "agent_1"]),
        ("sisl/multiwalker-v9", {"n_walkers": 2}, ["walker_0", "walker_1"]),
        ("classic/connect_four-v3", {}, ["player_0", "player_1"]),
    ],
)
def test_pettingzoo_registry_name(name, config, agents):
    env = make_env(name, config)
    assert env.possible_agents == agents
    assert isinstance(env, TurnBasedParallelEnv) == name.startswith("classic/")
    step_a_few_times(env)


# -------------------------------------------------------------- classes
def test_class_taking_config_gets_env_config_as_config():
    env = make_env(MultiAgentCartPole, env_config={"num_agents": 3})
    assert isinstance(env, MultiAgentCartPole) and env.possible_agents == [0, 1, 2]
    step_a_few_times(env)


def test_gym_env_class_gets_env_config_as_kwargs():
    env = make_env(CartPoleEnv, {"render_mode": "rgb_array"})
    assert isinstance(env, SingleAgentParallelEnv) and env.render_mode == "rgb_array"
    step_a_few_times(env)


def test_aec_env_class_is_wrapped_turn_based():
    env = make_env(TicTacToeRaw)
    assert isinstance(env, TurnBasedParallelEnv)
    step_a_few_times(env)


class TwoAgentParallelEnv(ParallelEnv):
    """A ParallelEnv subclass whose constructor takes plain keyword arguments."""

    metadata = {"name": "two_agent"}

    def __init__(self, horizon: int = 5):
        self.horizon = horizon
        self.possible_agents = ["x", "y"]

    def observation_space(self, agent):
        return Box(0, 100, (1,), np.float32)

    def action_space(self, agent):
        return Discrete(2)

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, list(self.possible_agents)
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        done = self.t >= self.horizon
        obs = {a: np.array([self.t], np.float32) for a in self.agents}
        out = obs, dict.fromkeys(obs, 1.0), dict.fromkeys(obs, done), dict.fromkeys(obs, False)
        if done:
            self.agents = []
        return (*out, {a: {} for a in obs})


def test_parallel_env_class_gets_env_config_as_kwargs_and_is_used_as_is():
    env = make_env(TwoAgentParallelEnv, {"horizon": 2})
    assert type(env) is TwoAgentParallelEnv and env.horizon == 2


# ------------------------------------------------------------ callables
def test_callable_receives_env_config_dict():
    seen = {}

    def creator(env_config):
        seen.update(env_config)
        return MultiAgentCartPole(env_config)

    env = make_env(creator, {"num_agents": 4})
    assert seen == {"num_agents": 4} and env.possible_agents == [0, 1, 2, 3]


def test_supersuit_pipeline_callable():
    env = make_env(pistonball_preset, {"n_pistons": 3, "max_cycles": 5, "size": 42})
    assert env.observation_space("piston_0").shape == (42, 42, 4)
    step_a_few_times(env)


def test_keyword_only_factory_gets_env_config_as_kwargs():
    env = make_env(pistonball_v6.parallel_env, {"n_pistons": 3})
    assert len(env.possible_agents) == 3


def test_import_path_of_a_factory_function():
    env = make_env("envs.supersuit_presets.pistonball_preset", {"n_pistons": 3, "size": 42})
    assert env.observation_space("piston_1").shape == (42, 42, 4)


# ---------------------------------------------------------- register_env
def test_register_env_makes_a_user_name_usable():
    register_env("test-env-registry/cartpoles", lambda cfg: MultiAgentCartPole(cfg))
    env = make_env("test-env-registry/cartpoles", {"num_agents": 5})
    assert env.possible_agents == [0, 1, 2, 3, 4]
    step_a_few_times(env)


def test_register_env_rejects_a_non_callable():
    with pytest.raises(TypeError, match="creator must be a callable"):
        register_env("broken", MultiAgentCartPole({"num_agents": 1}))


# ------------------------------------------------------- creators themselves
def test_creator_merges_call_config_over_its_default_config():
    creator = make_env_creator(MultiAgentCartPole, {"num_agents": 2})
    assert creator().possible_agents == [0, 1]
    assert creator({"num_agents": 3}).possible_agents == [0, 1, 2]


def test_creator_is_picklable_for_env_runner_processes():
    creator = pickle.loads(pickle.dumps(make_env_creator("mpe/simple_spread-v3", {"N": 2})))
    assert creator().possible_agents == ["agent_0", "agent_1"]


# ------------------------------------------------------------- errors
def test_unknown_name_error_names_the_string_and_lists_accepted_forms():
    with pytest.raises(ValueError) as info:
        make_env_creator("no-such-env-anywhere")
    message = str(info.value)
    assert isinstance(info.value, UnknownEnvError)
    assert "'no-such-env-anywhere'" in message
    for example in (
        "CartPole-v1",
        "ale_py:ALE/Pong-v5",
        "mpe2.simple_spread_v3",
        "butterfly/pistonball-v6",
        "register_env",
        "class",
        "callable env_config -> env",
    ):
        assert example in message, f"accepted form {example!r} missing from: {message}"


def test_typo_suggests_the_close_name():
    with pytest.raises(ValueError, match="Did you mean: 'CartPole-v1'"):
        make_env_creator("CartPol-v1")


def test_unknown_module_prefix_names_the_module():
    with pytest.raises(ValueError, match="module part 'not_a_module_xyz' cannot be imported"):
        make_env_creator("not_a_module_xyz:Foo-v0")


def test_module_without_env_functions_is_refused():
    with pytest.raises(ValueError, match="neither a `parallel_env` nor an `env`"):
        make_env_creator("pettingzoo.classic")


def test_env_object_of_unknown_type_is_a_type_error_naming_the_type():
    with pytest.raises(TypeError, match=r"builtins\.dict.*expected a pettingzoo\.ParallelEnv"):
        make_env(lambda cfg: {"not": "an env"})


def test_env_instance_instead_of_a_creator_is_a_type_error():
    with pytest.raises(TypeError, match="An env instance is not accepted"):
        make_env_creator(MultiAgentCartPole({"num_agents": 2}))
