"""The default model config and the plain builders (MLP, CNN, LSTM, activations, initializers)."""
import dataclasses

import pytest
import torch
from torch import nn

from marl.models import (
    DefaultModelConfig,
    build_cnn,
    build_mlp,
    default_conv_filters,
    resolve_default_model_config,
)
from marl.models.activations import get_activation
from marl.models.initializers import get_initializer
from marl.models.lstm import LSTMCore


def linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- config
def test_config_defaults_match_rllib():
    cfg = DefaultModelConfig()
    assert cfg.fcnet_hiddens == [256, 256]
    assert cfg.fcnet_activation == "tanh"
    assert cfg.conv_filters is None and cfg.conv_activation == "relu"
    assert cfg.head_fcnet_hiddens == [] and cfg.head_fcnet_activation == "relu"
    assert cfg.free_log_std is False and cfg.log_std_clip_param == 20.0
    assert cfg.vf_share_layers is True
    assert cfg.use_lstm is False and cfg.max_seq_len == 20 and cfg.lstm_cell_size == 256
    assert cfg.lstm_use_prev_action is False and cfg.lstm_use_prev_reward is False
    assert cfg.fcnet_use_layernorm is False and cfg.head_fcnet_use_layernorm is False
    assert cfg.fusionnet_hiddens == [256, 256] and cfg.fusionnet_activation == "tanh"
    for prefix in ("fcnet", "conv", "head_fcnet", "lstm", "fusionnet"):
        for part in ("kernel", "bias"):
            assert getattr(cfg, f"{prefix}_{part}_initializer") is None
            assert getattr(cfg, f"{prefix}_{part}_initializer_kwargs") is None


def test_config_default_lists_are_not_shared():
    a, b = DefaultModelConfig(), DefaultModelConfig()
    a.fcnet_hiddens.append(1)
    assert b.fcnet_hiddens == [256, 256]


def test_asdict_yields_only_canonical_keys():
    d = dataclasses.asdict(DefaultModelConfig(post_fcnet_hiddens=[64]))
    assert not any(k.startswith("post_fcnet") for k in d)
    assert d["head_fcnet_hiddens"] == [64]
    assert d == DefaultModelConfig(post_fcnet_hiddens=[64]).to_dict()
    assert set(d) == set(resolve_default_model_config(None))


def test_post_fcnet_aliases_set_head_fields():
    cfg = DefaultModelConfig(post_fcnet_hiddens=[64], post_fcnet_activation="tanh")
    assert cfg.head_fcnet_hiddens == [64] and cfg.head_fcnet_activation == "tanh"
    assert cfg.post_fcnet_hiddens == [64]  # readable under the guide's name
    cfg.post_fcnet_hiddens = [8]
    assert cfg.head_fcnet_hiddens == [8]


def test_alias_and_canonical_conflict_raises():
    with pytest.raises(ValueError, match="post_fcnet_hiddens"):
        DefaultModelConfig(head_fcnet_hiddens=[32], post_fcnet_hiddens=[64])
    with pytest.raises(ValueError, match="post_fcnet_activation"):
        resolve_default_model_config({"head_fcnet_activation": "tanh",
                                      "post_fcnet_activation": "relu"})


def test_resolve_fills_defaults_and_maps_aliases():
    cfg = resolve_default_model_config({"fcnet_hiddens": [3], "post_fcnet_hiddens": [5]})
    assert cfg["fcnet_hiddens"] == [3]
    assert cfg["head_fcnet_hiddens"] == [5]
    assert cfg["lstm_cell_size"] == 256
    assert "post_fcnet_hiddens" not in cfg


def test_resolve_copies_its_input():
    given = {"fcnet_hiddens": [3]}
    cfg = resolve_default_model_config(given)
    cfg["fcnet_hiddens"].append(4)
    assert given == {"fcnet_hiddens": [3]}


def test_resolve_unknown_key_names_it_and_suggests():
    with pytest.raises(ValueError) as info:
        resolve_default_model_config({"fcnet_hidden": [3]})
    msg = str(info.value)
    assert "'fcnet_hidden'" in msg
    assert "Did you mean 'fcnet_hiddens'" in msg
    assert "lstm_cell_size" in msg  # lists the valid keys


# ------------------------------------------------------------ activations
@pytest.mark.parametrize("name,cls", [
    ("tanh", nn.Tanh), ("relu", nn.ReLU), ("swish", nn.SiLU), ("silu", nn.SiLU),
    ("elu", nn.ELU), ("gelu", nn.GELU), ("linear", nn.Identity), (None, nn.Identity),
    ("ReLU", nn.ReLU),
])
def test_get_activation(name, cls):
    assert type(get_activation(name)) is cls


def test_unknown_activation_names_it_and_valid_ones():
    with pytest.raises(ValueError, match=r"'sigmoidd'.*relu"):
        get_activation("sigmoidd")


# ----------------------------------------------------------- initializers
def test_initializer_name_variants_resolve_to_torch_functions():
    for spec in ("xavier_uniform_", "xavier_uniform", "Xavier_Uniform"):
        assert get_initializer(spec) is nn.init.xavier_uniform_
    assert get_initializer("orthogonal") is nn.init.orthogonal_
    assert get_initializer(None) is None
    fn = lambda t: None  # noqa: E731
    assert get_initializer(fn) is fn


def test_unknown_initializer_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'glorot'.*xavier_uniform"):
        get_initializer("glorot")


def test_mlp_applies_kernel_and_bias_initializers():
    torch.manual_seed(0)
    mlp = build_mlp(8, [6, 4], "tanh", kernel_initializer="orthogonal",
                    bias_initializer="constant_", bias_initializer_kwargs={"val": 0.5},
                    output_dim=3)
    for lin in linears(mlp):
        assert torch.all(lin.bias == 0.5)
        w = lin.weight  # [out, in] with out <= in: orthonormal rows
        assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-5)


def test_initializer_kwargs_are_passed():
    mlp = build_mlp(4, [5], "relu", kernel_initializer="constant",
                    kernel_initializer_kwargs={"val": -2.0})
    assert torch.all(linears(mlp)[0].weight == -2.0)


def test_initializer_failure_names_the_tensor():
    with pytest.raises(ValueError, match=r"'orthogonal'.*bias"):
        build_mlp(4, [5], "relu", bias_initializer="orthogonal")


# ------------------------------------------------------------------- MLP
def test_mlp_layer_sizes_activations_and_output_dim():
    mlp = build_mlp(5, [7, 3], "tanh", output_dim=2)
    assert [(l.in_features, l.out_features) for l in linears(mlp)] == [(5, 7), (7, 3), (3, 2)]
    assert sum(isinstance(m, nn.Tanh) for m in mlp) == 2  # hidden layers only
    assert isinstance(mlp[-1], nn.Linear)  # logits stay linear
    assert mlp.output_dim == 2
    assert n_params(mlp) == (5 * 7 + 7) + (7 * 3 + 3) + (3 * 2 + 2)
    assert mlp(torch.zeros(4, 5)).shape == (4, 2)


def test_mlp_encoder_activates_its_last_layer_and_reports_width():
    mlp = build_mlp(5, [7], "relu")
    assert isinstance(mlp[-1], nn.ReLU) and mlp.output_dim == 7


def test_layernorm_settings_put_a_layernorm_before_each_hidden_activation():
    """RLlib's *_use_layernorm: LayerNorm(eps=1e-3) between each hidden Linear and its activation;
    an encoder's layers are all hidden, a head's output layer stays plain."""
    from marl.models.encoders import ObservationEncoder
    from marl.models.policy_head import build_head
    import gymnasium as gym

    cfg = resolve_default_model_config({"fcnet_hiddens": [8, 4], "fcnet_use_layernorm": True,
                                        "head_fcnet_hiddens": [5], "head_fcnet_use_layernorm": True})
    encoder = ObservationEncoder(gym.spaces.Box(-1, 1, (3,)), cfg).net
    assert [type(m).__name__ for m in encoder] == ["Linear", "LayerNorm", "Tanh", "Linear", "LayerNorm", "Tanh"]
    assert all(m.eps == 1e-3 for m in encoder if isinstance(m, nn.LayerNorm))
    head = build_head(4, 2, cfg)
    assert [type(m).__name__ for m in head] == ["Linear", "LayerNorm", "ReLU", "Linear"]
    plain = ObservationEncoder(gym.spaces.Box(-1, 1, (3,)), resolve_default_model_config({"fcnet_hiddens": [8]})).net
    assert not any(isinstance(m, nn.LayerNorm) for m in plain)


def test_empty_mlp_is_identity():
    mlp = build_mlp(5, [], "relu")
    x = torch.randn(2, 5)
    assert mlp.output_dim == 5 and torch.equal(mlp(x), x)


def test_mlp_rejects_bad_sizes():
    with pytest.raises(ValueError, match="-3"):
        build_mlp(5, [8, -3], "relu")


# ------------------------------------------------------------------- CNN
@pytest.mark.parametrize("shape,out_dim", [
    ((84, 84, 3), 256), ((64, 64, 3), 4 * 4 * 256), ((42, 42, 1), 256),
    ((96, 96, 3), 256), ((10, 10, 3), 3 * 3 * 32),
])
def test_default_conv_filters_give_small_maps(shape, out_dim):
    cnn = build_cnn(shape, None, "relu")
    assert cnn.output_dim == out_dim
    out = cnn(torch.randint(0, 255, (2, *shape), dtype=torch.uint8))
    assert out.shape == (2, out_dim)
    assert default_conv_filters(shape[0], shape[1])[0][0] == \
        [m for m in cnn.modules() if isinstance(m, nn.Conv2d)][0].out_channels


def test_odd_image_size_without_filters_names_the_shape():
    with pytest.raises(ValueError, match=r"50x37.*conv_filters"):
        default_conv_filters(50, 37)
    with pytest.raises(ValueError, match=r"\(50, 37, 3\)"):
        build_cnn((50, 37, 3), None, "relu")


def test_conv_layers_follow_conv_filters():
    filters = [[4, 3, 2], [6, [3, 2], [1, 2], "valid"], [5, 1, 1, 1]]
    cnn = build_cnn((9, 8, 2), filters, "tanh")
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(4, 2, 3, 3), (6, 4, 3, 2), (5, 6, 1, 1)]
    assert [c.stride for c in convs] == [(2, 2), (1, 2), (1, 1)]
    assert sum(isinstance(m, nn.Tanh) for m in cnn.modules()) == 3
    # same: 9x8 -> 5x4; valid 3x2 / (1,2): 3x2; padding 1, kernel 1: 5x4
    assert cnn.output_dim == 5 * 5 * 4
    expected = sum(f[0] * c_in * k[0] * k[1] + f[0] for f, c_in, k in
                   [(filters[0], 2, (3, 3)), (filters[1], 4, (3, 2)), (filters[2], 6, (1, 1))])
    assert n_params(cnn) == expected


def test_cnn_takes_channels_last_input():
    cnn = build_cnn((6, 6, 1), [[1, 1, 1, "valid"]], "linear",
                    kernel_initializer="ones", bias_initializer="zeros")
    img = torch.arange(36.0).reshape(1, 6, 6, 1)
    assert torch.equal(cnn(img), img.reshape(1, 36))  # identity conv, HWC flatten order


def test_cnn_initializers_apply():
    cnn = build_cnn((10, 10, 3), None, "relu", bias_initializer="constant_",
                    bias_initializer_kwargs={"val": 0.5})
    assert all(torch.all(m.bias == 0.5) for m in cnn.modules() if isinstance(m, nn.Conv2d))


def test_filters_that_shrink_below_one_pixel_raise():
    with pytest.raises(ValueError, match="below 1x1"):
        build_cnn((4, 4, 1), [[2, 5, 1, "valid"]], "relu")


def test_bad_filter_spec_raises():
    with pytest.raises(ValueError, match=r"\[16, 4\]"):
        build_cnn((10, 10, 3), [[16, 4]], "relu")


# ------------------------------------------------------------------ LSTM
def test_lstm_core_initializers_and_state_layout():
    core = LSTMCore(3, 4, kernel_initializer="orthogonal", bias_initializer="constant",
                    bias_initializer_kwargs={"val": 0.5})
    assert torch.all(core.lstm.bias_ih_l0 == 0.5) and torch.all(core.lstm.bias_hh_l0 == 0.5)
    w = core.lstm.weight_hh_l0  # [16, 4]: orthonormal columns
    assert torch.allclose(w.T @ w, torch.eye(4), atol=1e-5)
    out, state = core(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4) and state["h"].shape == (2, 4) and state["c"].shape == (2, 4)
    assert torch.allclose(out[:, -1], state["h"])
