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


def train_until(algo, done, budget):
    """Train until ``done(result)`` or ``budget`` env steps; return the last result."""
    try:
        while True:
            result = algo.train()
            if done(result) or result["num_env_steps_sampled_lifetime"] >= budget:
                return result
    finally:
        algo.stop()


def test_cleanrl_preset_learns_cartpole_450_within_200k_steps():
    """The named preset (CleanRL's ppo.py settings) learns as CleanRL's does.

    RLlib's own configs are the parity suite's job (tests/test_parity_learning.py).
    """
    algo = PPOConfig().preset("cleanrl").environment("CartPole-v1").debugging(seed=0).build()
    assert algo.config.value_clip_param == 0.2 and algo.config.vf_clip_param is None
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", 0) >= 450, 200_000)
    assert result["env_runners"]["episode_return_mean"] >= 450
    assert result["num_env_steps_sampled_lifetime"] <= 200_000


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
                  minibatch_size=250, num_epochs=5, gamma=0.95,
                  # The reference run's PPO: GAE 0.95, PPO2 value clipping, no value-loss clamp.
                  lambda_=0.95, clip_param=0.2, vf_loss_coeff=0.5, grad_clip=0.5,
                  vf_clip_param=None, value_clip_param=10.0)
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


# ------------------------------------------------------------------------ MAPPO
# scripts/compare_mappo.py, 3 seeds, 300k env steps, smoothed return (sum over
# agents per episode, latest 100 episodes): simple_spread MAPPO -55.4 vs IPPO
# -59.5 (IPPO -64.1 at 150k); simple_speaker_listener MAPPO -23.5 vs IPPO -62.3
# (IPPO's best anywhere in 300k: -41.1 on average). The tests below train
# MAPPO with that script's config on one seed and assert those IPPO figures.


def smoothed_return_at_least(threshold):
    return lambda r: r["env_runners"].get("smoothed_episode_return_mean", -1e9) >= threshold


def test_mappo_simple_spread_reaches_ippos_return_at_150k_steps():
    from scripts.compare_mappo import make_config

    algo = make_config("spread", "mappo", seed=0).build()
    ippo_at_150k = -64.1
    result = train_until(algo, smoothed_return_at_least(ippo_at_150k), 150_000)
    assert result["env_runners"]["smoothed_episode_return_mean"] >= ippo_at_150k


def test_mappo_speaker_listener_beats_ippos_best_within_100k_steps():
    from scripts.compare_mappo import make_config

    algo = make_config("speaker_listener", "mappo", seed=0).build()
    assert algo.get_module(None).non_policy_module_ids == ["central_critic"]
    ippo_best = -41.1
    result = train_until(algo, smoothed_return_at_least(ippo_best), 100_000)
    assert result["env_runners"]["smoothed_episode_return_mean"] >= ippo_best


# --------------------------------------------------------------- value-based
#: The tuned DQN settings of the value-based tests (RLlib's own CartPole example
#: uses n_step and epsilon to 0.02 as well): 3-step returns, 4 replayed rows per
#: sampled step (training_intensity), a [256] encoder and [256] Q heads.
TUNED_DQN = {"epsilon": [[0, 1.0], [10000, 0.02]], "n_step": 3, "training_intensity": 4}
DQN_MODEL = DefaultModelConfig(fcnet_hiddens=[256], head_fcnet_hiddens=[256])


def test_dqn_learns_cartpole_450_within_100k_steps():
    from marl import DQNConfig

    algo = (DQNConfig().environment("CartPole-v1").rl_module(model_config=DQN_MODEL)
            .training(**TUNED_DQN).debugging(seed=0)).build()
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", 0) >= 450, 100_000)
    assert result["env_runners"]["episode_return_mean"] >= 450


def test_iql_learns_multi_agent_cartpole_400_per_policy():
    from marl import DQNConfig

    algo = (DQNConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
            .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, ep, **kw: f"p{aid}")
            .rl_module(model_config=DQN_MODEL).training(**TUNED_DQN).debugging(seed=0)).build()

    def both_at_400(result):
        returns = result["env_runners"].get("module_episode_returns_mean", {})
        return bool(returns) and min(returns.get("p0", 0), returns.get("p1", 0)) >= 400

    result = train_until(algo, both_at_400, 150_000)
    assert both_at_400(result), result["env_runners"].get("module_episode_returns_mean")


@pytest.mark.parametrize("mixer", ["vdn", "qmix"])
def test_value_decomposition_closes_30_percent_of_the_gap_on_simple_spread(mixer):
    from marl import QMIXConfig
    from marl.experiment.presets import SIMPLE_SPREAD_VALUE_BASED

    random_return = random_policy_return()
    target = random_return + 0.3 * (SIMPLE_SPREAD_REFERENCE_BEST - random_return)
    algo = (QMIXConfig().environment("mpe2.simple_spread_v3", env_config=SPREAD_CONFIG)
            .env_runners(num_envs_per_env_runner=8)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
            .training(mixer=mixer, **SIMPLE_SPREAD_VALUE_BASED)
            .debugging(seed=0)).build()
    assert algo.get_module(None).non_policy_module_ids == ["mixer"]
    result = train_until(algo, smoothed_return_at_least(target), 150_000)
    assert result["env_runners"]["smoothed_episode_return_mean"] >= target, (random_return, target)


def test_recurrent_dqn_learns_cartpole_450_within_100k_steps():
    """The default LSTM as the Q-network: stored sequences of 20 from the recorded state, burn-in 4.

    Targets sync every 1,000 env steps (100 updates here). With RLlib's 500 (50 updates) seeds 0-2 all
    stayed below 210 in 100k steps; with 1,000 they reached 450 at 63k, 21k and 93k."""
    from marl import DQNConfig

    algo = (DQNConfig().environment("CartPole-v1")
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64], use_lstm=True, lstm_cell_size=64,
                                                       max_seq_len=20))
            .training(epsilon=[[0, 1.0], [10000, 0.02]], training_intensity=16, burn_in_len=4,
                      train_batch_size_per_learner=160, target_network_update_freq=1000)
            .debugging(seed=0)).build()
    assert algo.get_module().is_stateful()
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", 0) >= 450, 100_000)
    assert result["env_runners"]["episode_return_mean"] >= 450


# ------------------------------------------------------------ continuous control
#: SAC settings of the continuous-control tests: [64, 64] relu actor and critic streams, a [64, 64]
#: fusion net (RLlib's default [256, 256] fusion on these small streams: smoothed -75.1 at 100k on the
#: ISAC test, which needs -69.8; [64, 64]: the target within 17 s),
#: one update of 256 per two sampled steps (training_intensity 128), critic and
#: alpha learning rates 1e-3 and the actor's 3e-4 (RLlib's defaults: 3e-4 / 3e-5).
SAC_SETTINGS = {"training_intensity": 128, "num_steps_sampled_before_learning_starts": 1000,
                "actor_lr": 3e-4, "critic_lr": 1e-3, "alpha_lr": 1e-3}
SAC_MODEL = DefaultModelConfig(fcnet_hiddens=[64, 64], fcnet_activation="relu", fusionnet_hiddens=[64, 64])


def test_sac_learns_pendulum_to_minus_250_within_20k_steps():
    from marl import SACConfig

    algo = (SACConfig().environment("Pendulum-v1").rl_module(model_config=SAC_MODEL)
            .training(**SAC_SETTINGS).debugging(seed=0)).build()
    result = train_until(algo, lambda r: r["env_runners"].get("episode_return_mean", -1e9) >= -250, 20_000)
    assert result["env_runners"]["episode_return_mean"] >= -250


def test_isac_continuous_simple_spread_closes_30_percent_of_the_gap():
    from marl import SACConfig

    spread = {**SPREAD_CONFIG, "continuous_actions": True}
    random_return = random_policy_return()  # the discrete one: the same -79 as continuous random play
    target = random_return + 0.3 * (SIMPLE_SPREAD_REFERENCE_BEST - random_return)
    algo = (SACConfig().environment("mpe2.simple_spread_v3", env_config=spread)
            .env_runners(num_envs_per_env_runner=8).rl_module(model_config=SAC_MODEL)
            .training(**{**SAC_SETTINGS, "training_intensity": 16, "train_batch_size_per_learner": 256,
                         "num_steps_sampled_before_learning_starts": 2000})
            .debugging(seed=0)).build()
    result = train_until(algo, smoothed_return_at_least(target), 100_000)
    assert result["env_runners"]["smoothed_episode_return_mean"] >= target, (random_return, target)
