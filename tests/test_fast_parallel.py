"""The lean AEC -> parallel conversion gives exactly PettingZoo's results on seeded runs."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from envs.fast_parallel import CycleParallelEnv, fast_parallel
from envs.registry import make_env
from tests.state_compare import assert_same


def run(env, seed, steps, action_seed):
    rng = np.random.default_rng(action_seed)
    trace = []
    obs, infos = env.reset(seed=seed)
    trace.append(("reset", obs, infos, list(env.agents)))
    for t in range(steps):
        if not env.agents:
            obs, infos = env.reset(seed=seed + t + 1)
            trace.append(("reset", obs, infos, list(env.agents)))
            continue
        actions = {}
        for agent in env.agents:
            space = env.action_space(agent)
            space.seed(int(rng.integers(1 << 30)))
            actions[agent] = space.sample()
        out = env.step(actions)
        trace.append(("step", *out, list(env.agents)))
    return trace


@pytest.mark.parametrize("module, kwargs", [
    ("mpe2.simple_spread_v3", {"max_cycles": 25}),
    ("mpe2.simple_spread_v3", {"N": 4, "continuous_actions": True, "max_cycles": 20}),
    ("mpe2.simple_tag_v3", {"max_cycles": 25}),
    ("mpe2.simple_world_comm_v3", {"max_cycles": 15}),
    ("mpe2.simple_reference_v3", {"max_cycles": 25}),
    ("pettingzoo.butterfly.pistonball_v6", {"n_pistons": 4, "max_cycles": 30}),
    ("pettingzoo.butterfly.cooperative_pong_v6", {"max_cycles": 30}),
    ("pettingzoo.butterfly.knights_archers_zombies_v11", {"max_cycles": 30}),
    ("pettingzoo.sisl.multiwalker_v9", {"max_cycles": 30}),
    ("pettingzoo.sisl.pursuit_v5", {"max_cycles": 30}),
])
def test_same_observations_rewards_and_dones_as_pettingzoos_converter(module, kwargs):
    reference = importlib.import_module(module).parallel_env(**kwargs)
    fast = fast_parallel(importlib.import_module(module).parallel_env(**kwargs))
    assert isinstance(fast, CycleParallelEnv)
    assert fast.possible_agents == reference.possible_agents
    steps = 70 if module.startswith("mpe2.") else 40
    expected = run(reference, seed=3, steps=steps, action_seed=9)
    got = run(fast, seed=3, steps=steps, action_seed=9)
    assert sum(1 for entry in got if entry[0] == "reset") >= 2, "episodes ended and restarted"
    assert_same(got, expected, module, strict_types=True)
    np.testing.assert_array_equal(fast.state(), reference.state())


def test_mpe2_module_paths_get_the_lean_conversion_and_others_keep_pettingzoos():
    assert isinstance(make_env("mpe2.simple_spread_v3"), CycleParallelEnv)
    assert isinstance(make_env("mpe/simple_spread-v3"), CycleParallelEnv)
    assert isinstance(make_env("pettingzoo.sisl.multiwalker_v9"), CycleParallelEnv)
    assert not isinstance(make_env("pettingzoo.classic.connect_four_v3"), CycleParallelEnv)  # turn-based


def test_anything_but_pettingzoos_converter_over_check_wrappers_is_left_alone():
    from envs.multi_agent_cartpole import MultiAgentCartPole

    env = MultiAgentCartPole({"num_agents": 2})
    assert fast_parallel(env) is env
