"""scripts/parity_update_sac.py, the parts that need no RLlib venv: the parameter-name map
against RLlib 2.60's SAC state-dict names, the noise patch and the scenarios."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from marl import DefaultModelConfig, DefaultSACTorchRLModule, RLModuleSpec
from scripts import parity_update_sac as sac_parity
from scripts.parity_cases import CASES


def rllib_sac_pendulum_shapes():
    """RLlib 2.60's ``DefaultSACTorchRLModule.state_dict()`` for the sac-pendulum case (as it prints)."""
    shapes = {"pi_encoder.net.mlp.0.weight": (256, 3), "pi_encoder.net.mlp.0.bias": (256,),
              "pi_encoder.net.mlp.2.weight": (256, 256), "pi_encoder.net.mlp.2.bias": (256,)}
    for critic in ("qf", "qf_twin", "target_qf", "target_qf_twin"):
        enc = f"{critic}_encoder"
        shapes.update({
            f"{enc}.base_encoders.actions.net.mlp.0.weight": (256, 1),
            f"{enc}.base_encoders.actions.net.mlp.0.bias": (256,),
            f"{enc}.base_encoders.actions.net.mlp.2.weight": (256, 256),
            f"{enc}.base_encoders.actions.net.mlp.2.bias": (256,),
            f"{enc}.base_encoders.obs.net.mlp.0.weight": (256, 3), f"{enc}.base_encoders.obs.net.mlp.0.bias": (256,),
            f"{enc}.base_encoders.obs.net.mlp.2.weight": (256, 256), f"{enc}.base_encoders.obs.net.mlp.2.bias": (256,),
            f"{enc}.fusion_layers.0.weight": (256, 512), f"{enc}.fusion_layers.0.bias": (256,),
            f"{enc}.fusion_layers.1.weight": (256, 768), f"{enc}.fusion_layers.1.bias": (256,),
            f"{enc}.output_layer.weight": (256, 768), f"{enc}.output_layer.bias": (256,),
        })
    for head, out in (("pi", 2), ("qf", 1), ("qf_twin", 1), ("target_qf", 1), ("target_qf_twin", 1)):
        shapes.update({f"{head}.log_std_clip_param_const": (1,), f"{head}.net.mlp.0.weight": (out, 256),
                       f"{head}.net.mlp.0.bias": (out,)})
    shapes["log_alpha"] = (1,)  # the script adds RLlib's learner-held log-alpha to the dump
    return shapes


@pytest.fixture(scope="module")
def marl_shapes():
    spec = RLModuleSpec(
        module_class=DefaultSACTorchRLModule,
        observation_space=gym.spaces.Box(np.array([-1, -1, -8], np.float32), np.array([1, 1, 8], np.float32)),
        action_space=gym.spaces.Box(-2.0, 2.0, (1,), np.float32),
        model_config=DefaultModelConfig(**CASES["sac-pendulum"]["model"]))
    return {k: tuple(v.shape) for k, v in spec.build().state_dict().items()}


def test_every_marl_parameter_maps_onto_the_rllib_one_of_its_shape(marl_shapes):
    pairs = sac_parity.pair_sac_parameters(marl_shapes, rllib_sac_pendulum_shapes())
    assert set(pairs) == set(marl_shapes) - {"log_alpha"}
    expected = {
        "pi.0.weight": "pi_encoder.net.mlp.0.weight", "pi.2.bias": "pi_encoder.net.mlp.2.bias",
        "pi.4.weight": "pi.net.mlp.0.weight", "pi.4.bias": "pi.net.mlp.0.bias",
        "qf.obs_encoder.2.weight": "qf_encoder.base_encoders.obs.net.mlp.2.weight",
        "qf_twin.action_encoder.0.bias": "qf_twin_encoder.base_encoders.actions.net.mlp.0.bias",
        "target_qf.fusion_layers.1.weight": "target_qf_encoder.fusion_layers.1.weight",
        "target_qf_twin.output_layer.bias": "target_qf_twin_encoder.output_layer.bias",
        "qf.head.0.weight": "qf.net.mlp.0.weight", "target_qf_twin.head.0.bias": "target_qf_twin.net.mlp.0.bias",
    }
    assert {k: pairs[k] for k in expected} == expected
    assert {sac_parity.group_of(k) for k in marl_shapes} == set(sac_parity.GROUP_ORDER)


def test_the_map_refuses_shape_mismatches_and_leftovers(marl_shapes):
    bad = rllib_sac_pendulum_shapes()
    bad["qf.net.mlp.0.weight"] = (2, 256)
    with pytest.raises(ValueError, match="qf.head.0.weight"):
        sac_parity.pair_sac_parameters(marl_shapes, bad)
    extra = {**rllib_sac_pendulum_shapes(), "qf_encoder.extra.weight": (3,)}
    with pytest.raises(ValueError, match="unpaired"):
        sac_parity.pair_sac_parameters(marl_shapes, extra)


def test_queued_noise_replaces_both_draws_and_is_accounted(monkeypatch):
    monkeypatch.setattr(Normal, "rsample", Normal.rsample)  # undone after the test
    monkeypatch.setattr(Normal, "sample", Normal.sample)
    noise = sac_parity.install_noise()
    loc = torch.tensor([[0.5], [-1.0]], requires_grad=True)
    scale = torch.tensor([[2.0], [0.5]])
    noise.arm(np.array([[1.0], [2.0]], np.float32), np.array([[-1.0], [0.0]], np.float32))
    current = Normal(loc, scale).rsample()
    following = Normal(loc, scale).sample()
    noise.check_consumed()
    assert current.tolist() == [[2.5], [0.0]] and current.requires_grad
    assert following.tolist() == [[-1.5], [-1.0]] and not following.requires_grad
    assert Normal(loc, scale).rsample().shape == (2, 1)  # nothing queued: torch's own draw
    noise.arm(np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32))
    Normal(loc, scale).rsample()
    with pytest.raises(RuntimeError, match="exactly twice"):
        noise.check_consumed()


def test_scenarios_are_pendulum_batches_with_the_cases_n_step():
    for name in sac_parity.SCENARIOS:
        data = sac_parity.make_scenario(name, rows=64, updates=3, seed=0)
        assert data["obs"].shape == data["new_obs"].shape == (64, 3)
        np.testing.assert_allclose(data["obs"][:, 0] ** 2 + data["obs"][:, 1] ** 2, 1.0, rtol=1e-6)
        assert set(np.unique(data["n_step"])) <= {2, 3, 4}
        assert np.all(np.abs(data["actions"]) <= 1.0) and not data["terminateds"].any()
        assert data["weights"].max() == 1.0 and data["eps"].shape == (3, 2, 64, 1)
    assert not sac_parity.make_scenario("zero-noise", 8, 1, 0)["eps"].any()
