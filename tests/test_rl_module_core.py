"""RLModule / TorchRLModule contract: construction, forwards, state, errors."""
import gymnasium as gym
import pytest
import torch

from marl import (
    DEFAULT_MODULE_ID,
    Columns,
    DefaultModelConfig,
    DefaultPPOTorchRLModule,
    MultiRLModule,
    RLModuleSpec,
    TorchRLModule,
)

OBS = gym.spaces.Box(-1.0, 1.0, (4,))
ACT = gym.spaces.Discrete(2)


class Linear(TorchRLModule):
    def setup(self):
        self.setup_calls = getattr(self, "setup_calls", 0) + 1
        self.net = torch.nn.Linear(self.observation_space.shape[0], self.action_space.n)

    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self.net(batch[Columns.OBS])}


class PhaseSpecific(Linear):
    def _forward_train(self, batch, **kwargs):
        return {"phase": "train"}

    def _forward_inference(self, batch, **kwargs):
        return {"phase": "inference"}


def test_constructor_sets_attributes_then_calls_setup_once():
    m = Linear(observation_space=OBS, action_space=ACT, model_config={"x": 1})
    assert m.setup_calls == 1
    assert m.observation_space is OBS and m.action_space is ACT
    assert m.model_config == {"x": 1} and m.inference_only is False
    assert isinstance(m, torch.nn.Module) and len(list(m.parameters())) == 2


def test_model_config_dataclass_becomes_a_dict():
    m = Linear(observation_space=OBS, action_space=ACT, model_config=DefaultModelConfig(fcnet_hiddens=[3]))
    assert isinstance(m.model_config, dict) and m.model_config["fcnet_hiddens"] == [3]
    assert Linear(observation_space=OBS, action_space=ACT).model_config == {}


def test_phase_specific_forwards_override_the_generic_one():
    m = PhaseSpecific(observation_space=OBS, action_space=ACT)
    batch = {Columns.OBS: torch.zeros(2, 4)}
    assert m.forward_train(batch) == {"phase": "train"}
    assert m.forward_inference(batch) == {"phase": "inference"}
    # Exploration not overridden: falls back to _forward.
    assert m.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS].shape == (2, 2)


def test_module_without_forward_raises_naming_the_class():
    class Empty(TorchRLModule):
        pass

    with pytest.raises(NotImplementedError, match="Empty"):
        Empty(observation_space=OBS, action_space=ACT).forward_train({Columns.OBS: torch.zeros(1, 4)})


def test_wrong_observation_shape_names_expected_shape():
    m = Linear(observation_space=OBS, action_space=ACT)
    with pytest.raises(ValueError, match=r"\(4,\)") as err:
        m.forward_exploration({Columns.OBS: torch.zeros(3, 5)})
    assert "(3, 5)" in str(err.value)


def test_inference_only_module_refuses_forward_train_and_has_no_value_head():
    full = DefaultPPOTorchRLModule(observation_space=OBS, action_space=ACT, model_config={"fcnet_hiddens": [8]})
    slim = DefaultPPOTorchRLModule(
        observation_space=OBS, action_space=ACT, inference_only=True, model_config={"fcnet_hiddens": [8]}
    )
    assert not hasattr(slim, "vf")
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(RuntimeError, match="inference_only"):
        slim.forward_train({Columns.OBS: torch.zeros(1, 4)})
    # A full module's state loads into the inference-only copy (value head skipped).
    slim.set_state(full.get_state())
    obs = torch.randn(3, 4)
    assert torch.equal(
        slim.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
        full.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
    )


def test_set_state_of_other_architecture_names_parameter_and_both_shapes():
    small = Linear(observation_space=OBS, action_space=ACT)
    big = Linear(observation_space=gym.spaces.Box(-1, 1, (6,)), action_space=ACT)
    with pytest.raises(ValueError) as err:
        small.set_state(big.get_state())
    msg = str(err.value)
    assert "net.weight" in msg and "(2, 4)" in msg and "(2, 6)" in msg


def test_set_state_with_missing_keys_names_them():
    m = Linear(observation_space=OBS, action_space=ACT)
    with pytest.raises(KeyError, match="net.bias"):
        m.set_state({"net.weight": torch.zeros(2, 4)})


def test_get_state_returns_copies():
    m = Linear(observation_space=OBS, action_space=ACT)
    state = m.get_state()
    state["net.weight"].add_(1.0)
    assert not torch.equal(state["net.weight"], m.net.weight)


def test_spec_without_module_class_raises():
    with pytest.raises(ValueError, match="module_class"):
        RLModuleSpec(observation_space=OBS, action_space=ACT).build()


def test_as_multi_rl_module_wraps_under_default_module_id():
    m = Linear(observation_space=OBS, action_space=ACT)
    multi = m.as_multi_rl_module()
    assert isinstance(multi, MultiRLModule)
    assert list(multi.keys()) == [DEFAULT_MODULE_ID] and multi[DEFAULT_MODULE_ID] is m
    out = multi.forward_inference({DEFAULT_MODULE_ID: {Columns.OBS: torch.zeros(2, 4)}})
    assert out[DEFAULT_MODULE_ID][Columns.ACTION_DIST_INPUTS].shape == (2, 2)


def test_initial_state_and_statefulness():
    assert Linear(observation_space=OBS, action_space=ACT).is_stateful() is False
    lstm = DefaultPPOTorchRLModule(
        observation_space=OBS, action_space=ACT, model_config={"use_lstm": True, "lstm_cell_size": 8, "fcnet_hiddens": [8]}
    )
    assert lstm.is_stateful()
    assert {k: tuple(v.shape) for k, v in lstm.get_initial_state().items()} == {"h": (8,), "c": (8,)}
