"""Config values are checked at build(): a bad one is refused naming the key, the
value and what is expected, before any env, module or worker exists."""
import math

import numpy as np
import pytest

from marl import PPOConfig, VPGConfig
from marl.algorithms.algorithm_config import ConfigError
from marl.algorithms.ppo import PPO, RLLIB_PPO_TRAINING_DEFAULTS


def cartpole(config_class=PPOConfig, **values):
    config = config_class().environment("CartPole-v1")
    return config.update_from_dict(values)


BAD_VALUES = [
    # gradient clipping: 0 freezes the weights, a negative value flips the gradients
    ("grad_clip", 0), ("grad_clip", 0.0), ("grad_clip", -0.5), ("grad_clip", "x"), ("grad_clip", math.nan),
    ("grad_clip_by", "l2"),
    # learning rate and discount
    ("lr", 0), ("lr", -1e-3), ("lr", "x"), ("lr", math.inf), ("lr", math.nan),
    ("gamma", "x"), ("gamma", -0.01), ("gamma", 1.01), ("gamma", None), ("gamma", True),
    # loss coefficients
    ("entropy_coeff", -0.01), ("entropy_coeff", "x"), ("entropy_coeff", math.inf),
    ("vf_loss_coeff", -0.5), ("vf_loss_coeff", "1.0"),
    ("kl_coeff", -0.2), ("kl_coeff", None),
    ("kl_target", 0), ("kl_target", -0.01),
    ("clip_param", 0), ("clip_param", -0.3),
    ("vf_clip_param", 0), ("vf_clip_param", -10.0),
    ("value_clip_param", -0.1),
    ("lambda_", -0.1), ("lambda_", 1.5), ("lambda_", "x"),
    # switches: a truthy string must not silently mean True
    ("use_kl_loss", "false"), ("normalize_advantages", 1), ("shuffle_batch_per_epoch", "yes"),
    ("advantage_stats_include_bootstrap_steps", "no"), ("minibatches_include_bootstrap_steps", "no"),
    ("shuffle_first_epoch", "yes"),
    # batch sizes
    ("train_batch_size_per_learner", 0), ("train_batch_size_per_learner", "4000"),
    ("minibatch_size", 0), ("num_epochs", 0), ("num_epochs", 1.5),
    # evaluation
    ("evaluation_interval", -1), ("evaluation_interval", 1.5), ("evaluation_interval", "x"),
    ("evaluation_duration", 0), ("evaluation_duration", -5), ("evaluation_duration", "auto"),
    ("evaluation_duration_unit", "steps"), ("evaluation_explore", "no"),
    # env runners
    ("num_env_runners", -1), ("num_env_runners", 1.0),
    ("num_envs_per_env_runner", 0),
    ("rollout_fragment_length", 0), ("rollout_fragment_length", "max"), ("rollout_fragment_length", 2.5),
    ("normalize_actions", "yes"),
    # learners and debugging
    ("num_learners", -1), ("shared_optimizer", "yes"),
    ("seed", "abc"), ("seed", -1), ("seed", 1.5),
]


@pytest.mark.parametrize("key, value", BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_bad_value_is_refused_at_build_naming_key_value_and_expectation(key, value):
    config = cartpole(**{key: value})
    with pytest.raises(ConfigError) as err:
        config.build()
    message = str(err.value)
    assert message.startswith(f"{key}={value!r}: expected "), message


@pytest.mark.parametrize("key, value", [("grad_clip", 0), ("entropy_coeff", -0.01), ("seed", "abc")])
def test_vpg_checks_the_common_keys_too(key, value):
    with pytest.raises(ConfigError, match=f"^{key}="):
        cartpole(VPGConfig, **{key: value}).build()


def test_the_algorithm_validates_a_config_it_is_handed_directly():
    with pytest.raises(ConfigError, match=r"^gamma='x': expected a number in \[0, 1\]"):
        PPO(config=cartpole(gamma="x"))


def test_grad_clip_message_says_why_zero_and_negative_are_wrong():
    with pytest.raises(ConfigError) as err:
        cartpole(grad_clip=0).build()
    assert "None (no clipping)" in str(err.value) and "freeze" in str(err.value)


@pytest.mark.parametrize("key", ["lr", "entropy_coeff"])
def test_rllib_schedules_are_refused_saying_marl_does_not_implement_them(key):
    # RLlib accepts [[timestep, value], ...] here; marl's learner uses one number,
    # so the schedule is refused at build rather than failing inside the loss.
    with pytest.raises(ConfigError) as err:
        cartpole(**{key: [[0, 0.01], [100_000, 0.0]]}).build()
    assert str(err.value).startswith(f"{key}=[[0, 0.01], [100000, 0.0]]: expected")
    assert "schedules are not implemented" in str(err.value)


def test_sample_timeout_is_checked_when_the_config_has_it():
    config = cartpole()
    config.sample_timeout_s = 0
    with pytest.raises(ConfigError, match=r"^sample_timeout_s=0: expected None \(no time limit\)"):
        config.build()
    config.sample_timeout_s = None
    config.validate()
    config.sample_timeout_s = 60.0
    config.validate()


GOOD_EDGE_VALUES = [
    ("grad_clip", None), ("grad_clip", math.inf), ("grad_clip", 1e-8),
    ("kl_coeff", 0.0), ("kl_coeff", 0),
    ("lambda_", 1.0), ("lambda_", 0.0), ("gamma", 1.0), ("gamma", 0.0), ("gamma", 1),
    ("entropy_coeff", 0.0), ("vf_loss_coeff", 0.0),
    ("vf_clip_param", None), ("vf_clip_param", math.inf), ("value_clip_param", None),
    ("evaluation_interval", None), ("evaluation_interval", 0), ("evaluation_interval", 1),
    ("evaluation_duration", 1), ("evaluation_duration_unit", "timesteps"),
    ("rollout_fragment_length", "auto"), ("rollout_fragment_length", 1),
    ("num_env_runners", 0), ("minibatch_size", None), ("seed", None), ("seed", 0),
    ("lr", np.float32(1e-4)), ("num_epochs", np.int64(3)), ("use_kl_loss", np.bool_(False)),
]


@pytest.mark.parametrize("key, value", GOOD_EDGE_VALUES, ids=[f"{k}={v!r}" for k, v in GOOD_EDGE_VALUES])
def test_edge_values_with_a_meaning_are_accepted(key, value):
    cartpole(**{key: value}).validate()


def test_rllib_defaults_and_presets_pass_validation():
    config = cartpole()
    for key, value in RLLIB_PPO_TRAINING_DEFAULTS.items():
        assert getattr(config, key) == value
    config.validate()
    cartpole().preset("cleanrl").validate()
    cartpole(VPGConfig).validate()


def test_edge_values_build_and_train():
    config = cartpole(
        grad_clip=None, kl_coeff=0.0, lambda_=1.0, gamma=1.0, evaluation_interval=0, vf_clip_param=math.inf,
        train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1, seed=0,
    )
    algo = config.build()
    try:
        result = algo.train()
        assert "evaluation" not in result
        assert math.isfinite(result["learners"]["default_policy"]["total_loss"])
    finally:
        algo.stop()
