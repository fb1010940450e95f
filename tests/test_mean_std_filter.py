"""MeanStdFilter: running observation statistics, as RLlib's connector piece keeps them."""
import json

import gymnasium as gym
import numpy as np
import pytest

from marl import Columns, MeanStdFilter, PPOConfig

BOX = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def batches(seed=0, n=5):
    rng = np.random.default_rng(seed)
    return [rng.normal(loc=[1.0, -5.0, 100.0], scale=[0.1, 2.0, 30.0], size=(rng.integers(1, 9), 3))
            for _ in range(n)]


def test_statistics_equal_numpys_over_everything_seen_and_outputs_are_standardised():
    f = MeanStdFilter(clip_by_value=None)
    f.recompute_output_observation_space(BOX)
    seen = []
    for b in batches():
        out = f(b, BOX)
        seen.append(b)
        everything = np.concatenate(seen)
        np.testing.assert_allclose(f.mean, everything.mean(0), rtol=1e-10)
        if len(everything) > 1:
            np.testing.assert_allclose(f.std, everything.std(0, ddof=1), rtol=1e-10)
            np.testing.assert_allclose(out, (b - f.mean) / (f.std + 1e-8), rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32


def test_clip_by_value_bounds_outputs_and_the_output_space():
    f = MeanStdFilter(clip_by_value=2.0)
    assert f.recompute_output_observation_space(BOX) == gym.spaces.Box(-2.0, 2.0, (3,), np.float32)
    f(np.zeros((50, 3)))
    out = f(np.full((1, 3), 1e6))
    assert np.all(out <= 2.0) and np.all(out >= -2.0)


def test_frozen_filter_does_not_update():
    f = MeanStdFilter()
    f(batches()[0])
    state = f.get_state()
    f.update = False
    f(np.full((4, 3), 1e3))
    assert f.get_state() == state


def test_state_is_json_and_round_trips_to_identical_outputs():
    f = MeanStdFilter()
    for b in batches():
        f(b)
    g = MeanStdFilter()
    g.set_state(json.loads(json.dumps(f.get_state())))
    probe = batches(seed=9, n=1)[0]
    f.update = g.update = False
    np.testing.assert_array_equal(f(probe), g(probe))


def test_pooling_another_copys_statistics_equals_one_filter_over_all_data():
    a, b, both = MeanStdFilter(), MeanStdFilter(), MeanStdFilter()
    for i, x in enumerate(batches(n=6)):
        (a if i % 2 else b)(x)
        both(x)
    a.apply_deltas([b.get_state()])
    assert a.count == both.count
    np.testing.assert_allclose(a.mean, both.mean, rtol=1e-10)
    np.testing.assert_allclose(a.std, both.std, rtol=1e-10)


def test_bad_space_and_bad_shape_are_named():
    with pytest.raises(TypeError, match="Discrete"):
        MeanStdFilter().recompute_output_observation_space(gym.spaces.Discrete(3))
    f = MeanStdFilter()
    f(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        f(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="count"):
        f.set_state({"mean": [0.0]})


def test_training_batches_hold_the_filtered_observations():
    algo = (PPOConfig().environment("Pendulum-v1")
            .env_runners(env_to_module_connector=lambda env: MeanStdFilter())
            .training(train_batch_size_per_learner=400).debugging(seed=0).build())
    try:
        runner = algo.env_runner_group.local_runner
        batch, _ = runner.sample(num_timesteps=400)
        obs = np.asarray(next(iter(batch.values()))[Columns.OBS])
        # Pendulum's raw angular velocity spans [-8, 8]; filtered columns are near unit scale.
        assert np.all(np.abs(obs.mean(0)) < 1.0) and np.all(obs.std(0) < 3.0)
        (piece,) = runner._modules["default_policy"].pipeline.pieces
        assert piece.count >= 400
        assert runner.get_state()["env_to_module"]["default_policy"][0]["count"] == piece.count
    finally:
        algo.stop()


def test_worker_processes_share_filter_statistics_after_every_sample():
    from envs.worker_pool import EnvRunnerGroup

    algo = (PPOConfig().environment("Pendulum-v1")
            .env_runners(num_env_runners=2, env_to_module_connector=lambda env: MeanStdFilter())
            .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
            .debugging(seed=0).build())
    try:
        group: EnvRunnerGroup = algo.env_runner_group
        for _ in range(2):
            algo.train()
        states = [s["env_to_module"]["default_policy"][0] for s in group._broadcast("get_state")]
        # Both hold every observation filtered anywhere: 2 x 200 steps plus the
        # observations seen at reset.
        assert states[0]["count"] == states[1]["count"] >= 400
        np.testing.assert_allclose(states[0]["mean"], states[1]["mean"], rtol=1e-12)
        np.testing.assert_allclose(states[0]["m2"], states[1]["m2"], rtol=1e-12)
    finally:
        algo.stop()


def test_deltas_pool_to_the_statistics_of_all_observations():
    a, b, both = MeanStdFilter(), MeanStdFilter(), MeanStdFilter()
    xs = batches(n=4)
    a(xs[0]); b(xs[1]); both(xs[0]); both(xs[1])
    da, db = a.pop_delta(), b.pop_delta()
    a.apply_deltas([db]); b.apply_deltas([da])
    for f in (a, b):
        assert f.count == both.count
        np.testing.assert_allclose(f.mean, both.mean, rtol=1e-10)
        np.testing.assert_allclose(f.std, both.std, rtol=1e-10)
    assert a.pop_delta() is None  # nothing new since
    a(xs[2])
    assert a.pop_delta()["count"] == len(xs[2])


def test_evaluation_runners_start_from_the_training_filters_statistics():
    algo = (PPOConfig().environment("Pendulum-v1")
            .env_runners(env_to_module_connector=lambda env: MeanStdFilter(), normalize_actions=False)
            .training(train_batch_size_per_learner=400, minibatch_size=200, num_epochs=1)
            .evaluation(evaluation_duration=1).debugging(seed=0).build())
    try:
        algo.train()
        training = algo.env_runner_group.get_state()["env_to_module"]["default_policy"][0]
        fresh = algo.build_local_env_runner()
        assert not fresh.normalize_actions  # configured like the training runners
        fresh.sample(num_timesteps=1)
        (piece,) = fresh._modules["default_policy"].pipeline.pieces
        assert piece.count > training["count"]  # the training statistics plus what it just saw
        algo.evaluate()  # one 200-step episode on top of the training statistics
        (eval_piece,) = algo._eval_runner._modules["default_policy"].pipeline.pieces
        assert eval_piece.count >= training["count"] + 200
    finally:
        algo.stop()
