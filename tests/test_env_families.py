"""Every PettingZoo family gets a default model that fits its observations; env names that
are deprecated or misspelt get errors naming what to ask for instead."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.env_runner import infer_module_spaces
from envs.registry import UnknownEnvError, make_env, make_env_creator
from envs.sampling.buffers import ModuleStepBuffer
from marl import Columns, PPOConfig
from marl.algorithms.module_setup import board_conv_filters, build_module_spec
from marl.core.nested import tree_map
from tests.test_env_runner_support import make_runner
from marl.models.default_ppo_rl_module import DefaultPPOTorchRLModule


def default_module(env: str, env_config: dict | None = None):
    """The default PPO module the algorithm would build for ``env`` (without building the algorithm)."""
    instance = make_env(env, env_config)
    try:
        spaces = infer_module_spaces(instance)
        module = build_module_spec(PPOConfig(), {"default_policy"}, spaces).build()["default_policy"]
        obs, _ = instance.reset(seed=0)
        return module, next(iter(obs.values()))
    finally:
        instance.close()


# ------------------------------------------------------------- default models
@pytest.mark.parametrize("env, env_config, board", [
    ("classic/connect_four-v3", {}, (6, 7)),
    ("classic/tictactoe-v3", {}, (3, 3)),
    ("classic/go-v5", {"board_size": 9}, (9, 9)),
    ("sisl/pursuit-v5", {}, (7, 7)),
])
def test_small_boards_get_an_mlp_over_the_whole_board(env, env_config, board):
    module, obs = default_module(env, env_config)
    assert module.model_config["conv_filters"] == board_conv_filters(*board)
    assert module.encoder.obs_encoder.net.layers[0].kernel_size == board
    logits = module.forward_inference({Columns.OBS: tree_map(lambda x: torch.as_tensor(np.asarray(x)[None]), obs)})
    assert logits[Columns.ACTION_DIST_INPUTS].shape == (1, module.action_space.n)


@pytest.mark.parametrize("env, env_config", [
    ("mpe2.simple_spread_v3", {}),
    ("butterfly/knights_archers_zombies-v11", {}),  # (27, 5) vectors: flattened into the MLP
    ("sisl/multiwalker-v9", {}),
])
def test_vector_observations_keep_the_mlp(env, env_config):
    module, obs = default_module(env, env_config)
    assert module.model_config["conv_filters"] is None
    assert isinstance(module.encoder.obs_encoder.net.output_dim, int)


def test_pistonball_preset_gets_the_default_84x84_cnn():
    from envs import pistonball_preset

    module, _ = default_module(pistonball_preset, {"n_pistons": 2})
    assert module.model_config["conv_filters"] is None  # picked by size inside the CNN
    assert module.encoder.obs_encoder.obs_shape == (84, 84, 4)


def test_large_images_warn_with_their_size_and_the_preset():
    config = (PPOConfig().environment("butterfly/pistonball-v6", env_config={"n_pistons": 2})
              .training(train_batch_size_per_learner=4000)
              .rl_module(model_config={"conv_filters": [[8, 8, 8], [16, 4, 4]]}))
    with pytest.warns(UserWarning) as record:
        algo = config.build()
    algo.stop()
    message = next(str(w.message) for w in record if "images" in str(w.message))
    assert "457x120x3 uint8 images (164.5 kB each)" in message
    assert "4000 env steps holds 658.1 MB" in message
    assert "envs.pistonball_preset" in message and "envs.image_preset" in message


def test_small_images_do_not_warn():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*images.*")
        default_module("classic/connect_four-v3")


# ------------------------------------------------------------------- uint8
def test_uint8_observations_are_stored_as_uint8():
    runner = make_runner(
        make_env_creator("butterfly/pistonball-v6", {"n_pistons": 2, "max_cycles": 10, "continuous": False}),
        module_class=DefaultPPOTorchRLModule, model_config={"conv_filters": [[8, 8, 8], [16, 4, 4]]},
    )
    batches, _ = runner.sample(num_timesteps=10)
    obs = batches["default_policy"][Columns.OBS]
    assert obs.dtype == np.uint8 and obs.nbytes == obs.shape[0] * 457 * 120 * 3
    stored = runner._modules["default_policy"].buffer.columns[Columns.OBS]
    assert stored.dtype == np.uint8
    runner.stop()


def test_step_buffer_memory_follows_the_observation_dtype():
    def buffer_bytes(dtype) -> int:
        buffer = ModuleStepBuffer(capacity=8)
        buffer.append(8, np.zeros(8, np.int64), {Columns.OBS: np.zeros((8, 84, 84, 3), dtype)})
        return buffer.nbytes

    fixed = ModuleStepBuffer(capacity=8).nbytes
    assert buffer_bytes(np.uint8) - fixed == 8 * 84 * 84 * 3
    assert buffer_bytes(np.float32) - fixed == 4 * (buffer_bytes(np.uint8) - fixed)


# ------------------------------------------------------------------ env names
@pytest.mark.parametrize("name", [
    "butterfly/knights_archers_zombies-v10",
    "pettingzoo.butterfly.knights_archers_zombies_v10",
])
def test_deprecated_version_names_the_current_one_and_how_to_ask(name):
    with pytest.raises(UnknownEnvError) as info:
        make_env_creator(name)
    message = str(info.value)
    assert "v10 of butterfly/knights_archers_zombies is deprecated" in message
    assert "the current version is v11" in message
    assert "'butterfly/knights_archers_zombies-v11'" in message
    assert "'pettingzoo.butterfly.knights_archers_zombies_v11'" in message
    assert "DeprecatedModule" not in message


@pytest.mark.parametrize("name", ["mpe/simple_spread-v2", "pettingzoo.mpe.simple_spread_v3"])
def test_old_mpe_names_point_to_mpe2(name):
    with pytest.raises(UnknownEnvError, match=r"ask for 'mpe/simple_spread-v3' or 'mpe2.simple_spread_v3'"):
        make_env_creator(name)


@pytest.mark.parametrize("name, suggestion", [
    ("classic/conect_four-v3", "'classic/connect_four-v3'"),
    ("pettingzoo.classic.conect_four_v3", "'pettingzoo.classic.connect_four_v3'"),
    ("connect_four", "'classic/connect_four-v3'"),
    ("pistonball_v6", "'butterfly/pistonball-v6'"),
    ("mpe2.simple_sprea_v3", "'mpe2.simple_spread_v3'"),
])
def test_misspelt_names_get_did_you_mean(name, suggestion):
    with pytest.raises(UnknownEnvError, match="Did you mean: .*" + suggestion.replace(".", r"\.")):
        make_env_creator(name)


def test_current_names_of_turn_based_games_resolve():
    for name in ("classic/connect_four_v3", "classic/connect_four-v3", "pettingzoo.classic.connect_four_v3"):
        env = make_env(name)
        assert env.possible_agents == ["player_0", "player_1"]
        assert isinstance(env.observation_space("player_0"), gym.spaces.Dict)
