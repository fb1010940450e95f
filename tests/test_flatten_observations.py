"""FlattenObservations: one-hot encoding, flat shapes, key order and the action-mask Dict."""

import pickle

import gymnasium as gym
import numpy as np
import pytest

from marl.connectors import FlattenObservations


def _piece(space, **kwargs):
    piece = FlattenObservations(**kwargs)
    piece.recompute_output_observation_space(space)
    return piece


def test_constructs_without_arguments_like_the_guide():
    piece = FlattenObservations()
    assert piece.observation_space is None and piece.get_state() == {}


def test_discrete_becomes_float32_one_hot():
    space = gym.spaces.Discrete(4)
    piece = _piece(space)
    assert piece.observation_space == gym.spaces.Box(0.0, 1.0, (4,), np.float32)
    out = piece(np.array([0, 3, 1]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[[0, 3, 1]])


def test_discrete_with_start_offsets_the_one_hot():
    out = _piece(gym.spaces.Discrete(3, start=5))(np.array([5, 7]))
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1]])


def test_discrete_out_of_range_is_an_error_not_a_wrapped_index():
    with pytest.raises(ValueError, match=r"\[-1\]"):
        _piece(gym.spaces.Discrete(3))(np.array([0, -1]))


def test_multidiscrete_concatenates_one_hots():
    piece = _piece(gym.spaces.MultiDiscrete([2, 3]))
    assert piece.observation_space.shape == (5,)
    out = piece(np.array([[0, 2], [1, 0]]))
    np.testing.assert_array_equal(out, [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]])


def test_multibinary_and_box_flatten_to_float32():
    piece = _piece(gym.spaces.MultiBinary((2, 2)))
    out = piece(np.array([[[1, 0], [0, 1]]], dtype=np.int8))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 0, 0, 1]])

    box = gym.spaces.Box(0, 255, (2, 3), np.uint8)
    piece = _piece(box)
    assert piece.observation_space == gym.spaces.Box(0.0, 255.0, (6,), np.float32)
    batch = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = piece(batch)
    assert out.dtype == np.float32 and out.shape == (2, 6)
    np.testing.assert_array_equal(out, batch.reshape(2, 6))


def test_box_batch_without_batch_dim_is_rejected_with_expected_shape():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        _piece(gym.spaces.Box(-1, 1, (3,)))(np.zeros(3, np.float32))


DICT_SPACE = gym.spaces.Dict({
    "c": gym.spaces.MultiDiscrete([2, 3]),
    "a": gym.spaces.Box(-10.0, 10.0, (), np.float32),
    "b": gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Box(-1.0, 1.0, (2, 1), np.float32)]),
})
OBS = [
    {"a": np.array(-10.0, np.float32), "b": (1, np.array([[-1.0], [-1.0]], np.float32)), "c": np.array([0, 2])},
    {"a": np.array(10.0, np.float32), "b": (0, np.array([[1.0], [1.0]], np.float32)), "c": np.array([1, 1])},
]
#                          a      b: disc(2)  b: box(2,1)  c: multidisc(2, 3)
EXPECTED = np.array([[-10.0, 0.0, 1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                     [10.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]], np.float32)


def test_dict_tuple_list_of_raw_observations_in_gymnasium_key_order():
    piece = _piece(DICT_SPACE)
    out = piece(OBS)
    np.testing.assert_array_equal(out, EXPECTED)
    np.testing.assert_array_equal(out, np.stack([gym.spaces.flatten(DICT_SPACE, o) for o in OBS]))
    assert out.shape[1:] == piece.observation_space.shape and out.dtype == np.float32


def test_dict_of_batched_arrays_gives_the_same_result():
    batched = {
        "b": (np.array([1, 0]), np.stack([o["b"][1] for o in OBS])),
        "a": np.array([-10.0, 10.0], np.float32),
        "c": np.stack([o["c"] for o in OBS]),
    }
    np.testing.assert_array_equal(_piece(DICT_SPACE)(batched), EXPECTED)


def test_flattened_space_bounds_follow_component_order():
    space = _piece(DICT_SPACE).observation_space
    np.testing.assert_array_equal(space.low, [-10, 0, 0, -1, -1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(space.high, [10, 1, 1, 1, 1, 1, 1, 1, 1, 1])


def test_tuple_order_is_positional():
    space = gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (1,), np.float32)])
    out = _piece(space)((np.array([1]), np.array([[0.5]], np.float32)))
    np.testing.assert_array_equal(out, [[0.0, 1.0, 0.5]])


def test_dict_batch_missing_key_names_it():
    with pytest.raises(KeyError, match="'c'"):
        _piece(DICT_SPACE)({"a": np.zeros(1), "b": (np.zeros(1, int), np.zeros((1, 2, 1)))})


def test_keys_to_exclude_drops_keys_before_flattening():
    piece = _piece(DICT_SPACE, keys_to_exclude=["a"])
    assert piece.observation_space.shape == (9,)
    np.testing.assert_array_equal(piece(OBS), EXPECTED[:, 1:])


def test_keys_to_exclude_unknown_key_is_an_error():
    with pytest.raises(KeyError, match="'zzz'"):
        _piece(DICT_SPACE, keys_to_exclude=["zzz"])


MASK_SPACE = gym.spaces.Dict({
    "observation": gym.spaces.Box(0, 1, (3, 3, 2), np.int8),
    "action_mask": gym.spaces.Box(0, 1, (9,), np.int8),
})


def test_action_mask_dict_keeps_structure_and_passes_mask_through():
    piece = _piece(MASK_SPACE)
    space = piece.observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space.spaces) == {"observation", "action_mask"}
    assert space["observation"] == gym.spaces.Box(0.0, 1.0, (18,), np.float32)
    assert space["action_mask"] == gym.spaces.Box(0.0, 1.0, (9,), np.float32)
    obs = [MASK_SPACE.sample() for _ in range(4)]
    out = piece(obs)
    assert out["observation"].shape == (4, 18) and out["observation"].dtype == np.float32
    assert out["action_mask"].dtype == np.float32
    np.testing.assert_array_equal(out["action_mask"], np.stack([o["action_mask"] for o in obs]))
    np.testing.assert_array_equal(out["observation"], np.stack([o["observation"].reshape(-1) for o in obs]))


def test_action_mask_dict_with_discrete_observation_one_hots_only_the_observation():
    space = gym.spaces.Dict({"observation": gym.spaces.Discrete(3), "action_mask": gym.spaces.MultiBinary(2)})
    out = _piece(space)({"observation": np.array([2]), "action_mask": np.array([[1, 0]], np.int8)})
    np.testing.assert_array_equal(out["observation"], [[0, 0, 1]])
    np.testing.assert_array_equal(out["action_mask"], [[1, 0]])


def test_excluding_action_mask_turns_the_special_case_off():
    piece = _piece(MASK_SPACE, keys_to_exclude=["action_mask"])
    assert piece.observation_space == gym.spaces.Box(0.0, 1.0, (18,), np.float32)


def test_unsupported_space_names_it():
    with pytest.raises(TypeError, match=r"Text.*supported"):
        FlattenObservations().recompute_output_observation_space(gym.spaces.Text(4))
    with pytest.raises(TypeError, match=r"Sequence.*'seq'"):
        FlattenObservations().recompute_output_observation_space(
            gym.spaces.Dict({"seq": gym.spaces.Sequence(gym.spaces.Discrete(2))})
        )


def test_call_without_a_space_explains_what_to_do():
    with pytest.raises(ValueError, match="recompute_output_observation_space"):
        FlattenObservations()(np.zeros((1, 2)))


def test_per_call_space_does_not_change_stored_space():
    piece = _piece(gym.spaces.Discrete(2))
    out = piece(np.array([1]), input_observation_space=gym.spaces.Discrete(5))
    assert out.shape == (1, 5)
    assert piece.observation_space.shape == (2,)


def test_transform_space_is_pure():
    piece = FlattenObservations()
    assert piece.transform_space(gym.spaces.Discrete(3)).shape == (3,)
    assert piece.observation_space is None and piece.input_observation_space is None


def test_output_matches_reported_space_for_random_samples():
    for space in (DICT_SPACE, gym.spaces.MultiDiscrete([4, 2, 3]), gym.spaces.Box(-2, 2, (2, 2))):
        piece = _piece(space)
        out = piece([space.sample() for _ in range(5)])
        assert out.shape == (5, *piece.observation_space.shape)
        assert all(piece.observation_space.contains(row) for row in out)


def test_pickles_and_has_empty_state():
    piece = _piece(DICT_SPACE)
    clone = pickle.loads(pickle.dumps(piece))
    np.testing.assert_array_equal(clone(OBS), EXPECTED)
    assert clone.get_state() == {}
    clone.set_state({})
    np.testing.assert_array_equal(clone(OBS), EXPECTED)


def test_discrete_one_hot_is_vectorised_for_large_batches():
    piece = _piece(gym.spaces.Discrete(10))
    idx = np.random.default_rng(0).integers(0, 10, size=100_000)
    out = piece(idx)
    assert out.shape == (100_000, 10)
    np.testing.assert_array_equal(out.argmax(1), idx)
    np.testing.assert_array_equal(out.sum(1), np.ones(100_000))
