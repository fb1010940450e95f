"""Learning tests: reward thresholds within env-step budgets (marked slow).

Each loop stops as soon as the threshold is met, so a healthy run finishes
well inside its budget; the budgets are the issue's acceptance numbers.
"""
import numpy as np
import pytest

from envs import MultiAgentCartPole, make_env
from marl import DefaultModelConfig, PPOConfig, VPGConfig
from marl.models import shared_encoder_module_spec
from tests.test_guide_algorithms import shared_encoder_config

pytestmark = pytest.mark.slow

SMALL_AC = DefaultModelConfig(fcnet_hiddens=[64, 64], vf_share_layers=False)
PPO_CARTPOLE = dict(lr=5e-4, train_batch_size_per_learner=2048, minibatch_size=256, num_epochs=10)


def train_until(algo, done, budget):
    """Train until ``done(result)`` or ``budget`` env steps; return the last result."""
    try:
        while True:
            result = algo.train()
            if done(result) or result["num_env_steps_sampled_lifetime"] >= budget:
                return result
    finally:
        algo.stop()


def test_ppo_cartpole_reaches_450_within_150k_steps():
    algo = (
        PPOConfig().environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=8)
        .training(**PPO_CARTPOLE)
        .rl_module(model_config=SMALL_AC)
        .debugging(seed=0)
        .build()
    )
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", 0) >= 450, 150_000)
    assert result["env_runners"]["episode_return_mean"] >= 450
    assert result["num_env_steps_sampled_lifetime"] <= 150_000 + 2048


def test_multi_agent_cartpole_two_policies_reach_400_each_within_300k_steps():
    algo = (
        PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
        .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, episode, **kw: f"p{aid}")
        .env_runners(num_envs_per_env_runner=8)
        .training(**PPO_CARTPOLE)
        .rl_module(model_config=SMALL_AC)
        .debugging(seed=0)
        .build()
    )

    def both_done(r):
        per_module = r["env_runners"].get("module_episode_returns_mean", {})
        return len(per_module) == 2 and min(per_module.values()) >= 400

    result = train_until(algo, both_done, 300_000)
    per_module = result["env_runners"]["module_episode_returns_mean"]
    assert per_module["p0"] >= 400 and per_module["p1"] >= 400, per_module


def test_guide_shared_encoder_vpg_reaches_combined_600_within_150k_steps():
    algo = (
        shared_encoder_config(VPGConfig)
        .env_runners(num_envs_per_env_runner=8)
        .training(lr=2e-3, train_batch_size_per_learner=2048)
        .debugging(seed=0)
        .build()
    )
    assert algo.learner_group.learner.shared_optimizer
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", 0) >= 600, 150_000)
    # MultiAgentCartPole's episode return is the sum of both agents' returns.
    assert result["env_runners"]["episode_return_mean"] >= 600


#: Best smoothed return of our reference run: IPPO with the ready-made shared
#: encoder on simple_spread (N=3, 25 cycles), same settings, 600k env steps
#: (see README "Learning results").
SIMPLE_SPREAD_REFERENCE_BEST = -46.1
SPREAD_CONFIG = {"N": 3, "max_cycles": 25, "continuous_actions": False}


def random_policy_return(episodes=50):
    env = make_env("mpe2.simple_spread_v3", SPREAD_CONFIG)
    returns = []
    for ep in range(episodes):
        env.reset(seed=ep)
        env.action_space(env.possible_agents[0]).seed(ep)
        total = 0.0
        while env.agents:
            _, rewards, _, _, _ = env.step({a: env.action_space(a).sample() for a in env.agents})
            total += sum(rewards.values())
        returns.append(total)
    return float(np.mean(returns))


def simple_spread_shared_encoder_config():
    agents = list(make_env("mpe2.simple_spread_v3", SPREAD_CONFIG).possible_agents)
    return (
        PPOConfig().environment("mpe2.simple_spread_v3", env_config=SPREAD_CONFIG)
        .multi_agent(policies=set(agents), policy_mapping_fn=lambda agent_id, episode, **kw: agent_id)
        .rl_module(
            rl_module_spec=shared_encoder_module_spec(
                agents, DefaultModelConfig(fcnet_hiddens=[64, 64], head_fcnet_hiddens=[64])
            )
        )
        .env_runners(num_envs_per_env_runner=8)
        .training(lr=1e-3, entropy_coeff=0.01, train_batch_size_per_learner=2000,
                  minibatch_size=250, num_epochs=5, gamma=0.95)
        .debugging(seed=0)
    )


def test_ippo_shared_encoder_simple_spread_closes_30_percent_of_the_gap():
    random_return = random_policy_return()
    gap = SIMPLE_SPREAD_REFERENCE_BEST - random_return
    assert gap > 10, (random_return, SIMPLE_SPREAD_REFERENCE_BEST)
    algo = simple_spread_shared_encoder_config().build()
    assert algo.learner_group.learner.shared_optimizer
    target = random_return + 0.3 * gap
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", -1e9) >= target, 150_000)
    final = result["env_runners"]["episode_return_mean"]
    assert final >= target, (final, random_return, SIMPLE_SPREAD_REFERENCE_BEST)
