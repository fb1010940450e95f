"""The default RLModules (PPO and BC): architecture from the config, outputs, masking, LSTM."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from marl.core.apis import InferenceOnlyAPI, ValueFunctionAPI
from marl.core.columns import Columns
from marl.core.rl_module import RLModule
from marl.distributions import get_default_dist_cls
from marl.models import DefaultBCTorchRLModule, DefaultModelConfig, DefaultPPOTorchRLModule

VEC = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
IMG = gym.spaces.Box(0, 255, (10, 10, 3), np.uint8)
DISCRETE = gym.spaces.Discrete(3)
MULTI_DISCRETE = gym.spaces.MultiDiscrete([2, 4])
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
SMALL = dict(fcnet_hiddens=[16, 8], head_fcnet_hiddens=[6])
B = 4


def linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def mlp_params(in_dim, hiddens, out_dim=None):
    sizes = [in_dim, *hiddens] + ([out_dim] if out_dim else [])
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def obs_batch(space, *lead):
    if space.dtype == np.uint8:
        return torch.randint(0, 256, (*lead, *space.shape), dtype=torch.uint8)
    return torch.randn(*lead, *space.shape)


def ppo(obs=VEC, act=DISCRETE, **cfg):
    return DefaultPPOTorchRLModule(obs, act, model_config={**SMALL, **cfg})


# ------------------------------------------------------------ architecture
def test_module_config_is_the_full_resolved_dict():
    module = DefaultPPOTorchRLModule(VEC, DISCRETE, model_config=DefaultModelConfig(
        fcnet_hiddens=[8], post_fcnet_hiddens=[4]))
    assert module.model_config["head_fcnet_hiddens"] == [4]
    assert module.model_config["lstm_cell_size"] == 256  # defaults filled in
    assert isinstance(module, (ValueFunctionAPI, InferenceOnlyAPI))


def test_layer_sizes_follow_fcnet_and_head_hiddens():
    module = ppo()
    shapes = lambda m: [(l.in_features, l.out_features) for l in linears(m)]  # noqa: E731
    assert shapes(module.encoder) == [(5, 16), (16, 8)]
    assert shapes(module.pi) == [(8, 6), (6, 3)]
    assert shapes(module.vf) == [(8, 6), (6, 1)]
    assert n_params(module) == (mlp_params(5, [16, 8]) + mlp_params(8, [6], 3)
                                + mlp_params(8, [6], 1))


def test_post_fcnet_hiddens_alias_sizes_the_heads():
    for cfg in (DefaultModelConfig(fcnet_hiddens=[8], post_fcnet_hiddens=[7]),
                {"fcnet_hiddens": [8], "post_fcnet_hiddens": [7]}):
        module = DefaultPPOTorchRLModule(VEC, DISCRETE, model_config=cfg)
        assert linears(module.pi)[0].out_features == 7
        assert linears(module.vf)[0].out_features == 7


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="'fcnet_hidden'"):
        DefaultPPOTorchRLModule(VEC, DISCRETE, model_config={"fcnet_hidden": [8]})


def test_activations_follow_the_config():
    module = ppo(fcnet_activation="relu", head_fcnet_activation="tanh")
    enc_acts = {type(m) for m in module.encoder.modules() if not m._modules}
    head_acts = {type(m) for m in module.pi.modules() if not m._modules}
    assert enc_acts == {nn.Linear, nn.ReLU}
    assert head_acts == {nn.Linear, nn.Tanh}


def test_initializers_follow_the_config():
    torch.manual_seed(0)
    module = ppo(fcnet_bias_initializer="constant_", fcnet_bias_initializer_kwargs={"val": 0.5},
                 head_fcnet_kernel_initializer="orthogonal")
    assert all(torch.all(l.bias == 0.5) for l in linears(module.encoder))
    assert not torch.all(linears(module.pi)[0].bias == 0.5)  # heads use their own settings
    for lin in linears(module.pi) + linears(module.vf):
        w = lin.weight
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)


def test_image_observations_use_conv_filters():
    module = DefaultPPOTorchRLModule(IMG, DISCRETE, model_config={
        "conv_filters": [[4, 3, 2], [8, 3, 2]], "head_fcnet_hiddens": [6]})
    convs = [m for m in module.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(4, 3, 3, 3), (8, 4, 3, 3)]
    # 10 -> 5 -> 3 ("same"), flattened into the heads; fcnet_hiddens is unused.
    assert linears(module.pi)[0].in_features == 3 * 3 * 8
    assert not linears(module.encoder)


def test_image_without_default_filters_names_the_shape():
    odd = gym.spaces.Box(0, 255, (50, 37, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(50, 37, 3\).*conv_filters"):
        DefaultPPOTorchRLModule(odd, DISCRETE, model_config=SMALL)


def test_other_box_ranks_are_flattened():
    module = ppo(obs=gym.spaces.Box(-1, 1, (2, 3), np.float32))
    assert linears(module.encoder)[0].in_features == 6
    out = module.forward_inference({Columns.OBS: torch.randn(B, 2, 3)})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (B, 3)


def test_unsupported_spaces_raise_type_errors():
    with pytest.raises(TypeError, match=r"Discrete\(4\).*FlattenObservations"):
        DefaultPPOTorchRLModule(gym.spaces.Discrete(4), DISCRETE, model_config=SMALL)
    with pytest.raises(TypeError, match=r"Tuple"):
        DefaultBCTorchRLModule(VEC, gym.spaces.Tuple([DISCRETE, DISCRETE]), model_config=SMALL)


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize("module_cls", [DefaultPPOTorchRLModule, DefaultBCTorchRLModule])
@pytest.mark.parametrize("obs_space", [VEC, IMG], ids=["vector", "image"])
@pytest.mark.parametrize("act_space", [DISCRETE, MULTI_DISCRETE, BOX],
                         ids=["discrete", "multidiscrete", "box"])
def test_forward_outputs(module_cls, obs_space, act_space):
    module = module_cls(obs_space, act_space, model_config=SMALL)
    width = get_default_dist_cls(act_space).required_input_dim(act_space)
    batch = {Columns.OBS: obs_batch(obs_space, B)}
    for out in (module.forward_inference(batch), module.forward_exploration(batch)):
        assert set(out) == {Columns.ACTION_DIST_INPUTS}
        assert out[Columns.ACTION_DIST_INPUTS].shape == (B, width)
    train = module.forward_train(batch)
    assert train[Columns.ACTION_DIST_INPUTS].shape == (B, width)
    assert train[Columns.ACTION_DIST_INPUTS].requires_grad
    if module_cls is DefaultPPOTorchRLModule:
        assert set(train) == {Columns.ACTION_DIST_INPUTS, Columns.VF_PREDS, Columns.EMBEDDINGS}
        assert train[Columns.VF_PREDS].shape == (B,)
        assert torch.allclose(module.compute_values(batch), train[Columns.VF_PREDS])
    else:
        assert set(train) == {Columns.ACTION_DIST_INPUTS}
        assert not hasattr(module, "vf")
    dist = get_default_dist_cls(act_space).from_logits(train[Columns.ACTION_DIST_INPUTS])
    assert dist.logp(dist.sample()).shape == (B,)


def test_bc_has_no_value_branch():
    bc = DefaultBCTorchRLModule(VEC, DISCRETE, model_config=SMALL)
    assert n_params(bc) == mlp_params(5, [16, 8]) + mlp_params(8, [6], 3)
    assert not isinstance(bc, ValueFunctionAPI)


def test_train_pass_runs_the_shared_encoder_once():
    module = ppo()
    calls = []
    module.encoder.register_forward_hook(lambda *a: calls.append(1))
    out = module.forward_train({Columns.OBS: obs_batch(VEC, B)})
    assert len(calls) == 1
    assert torch.allclose(module.compute_values({}, embeddings=out[Columns.EMBEDDINGS]),
                          out[Columns.VF_PREDS])
    assert len(calls) == 1  # embeddings were reused


def test_compute_values_uses_given_embeddings():
    module = ppo()
    emb = torch.zeros(B, 8)
    expected = module.vf(emb).squeeze(-1)
    assert torch.equal(module.compute_values({Columns.OBS: obs_batch(VEC, B)}, emb), expected)


# --------------------------------------------------------- value branch
def test_inference_only_builds_no_value_branch():
    full = ppo()
    lean = DefaultPPOTorchRLModule(VEC, DISCRETE, inference_only=True, model_config=SMALL)
    assert not hasattr(lean, "vf")
    assert n_params(full) - n_params(lean) == mlp_params(8, [6], 1)
    with pytest.raises(RuntimeError, match="inference_only"):
        lean.compute_values({Columns.OBS: obs_batch(VEC, B)})
    assert lean.get_non_inference_attributes() == ["vf"]
    # The full module's weights load into the lean one (value weights skipped).
    lean.set_state(full.get_state())
    batch = {Columns.OBS: obs_batch(VEC, B)}
    assert torch.equal(lean.forward_inference(batch)[Columns.ACTION_DIST_INPUTS],
                       full.forward_inference(batch)[Columns.ACTION_DIST_INPUTS])


def test_separate_value_encoder_when_not_sharing_layers():
    module = ppo(vf_share_layers=False)
    assert [(l.in_features, l.out_features) for l in linears(module.value_encoder)] == \
        [(5, 16), (16, 8)]
    assert n_params(module) == (2 * mlp_params(5, [16, 8]) + mlp_params(8, [6], 3)
                                + mlp_params(8, [6], 1))
    assert module.get_non_inference_attributes() == ["value_encoder", "vf"]
    lean = DefaultPPOTorchRLModule(VEC, DISCRETE, inference_only=True,
                                   model_config={**SMALL, "vf_share_layers": False})
    assert not hasattr(lean, "value_encoder")
    # The value loss no longer reaches the policy encoder.
    module.forward_train({Columns.OBS: obs_batch(VEC, B)})[Columns.VF_PREDS].sum().backward()
    assert all(p.grad is None for p in module.encoder.parameters())
    assert all(p.grad is not None for p in module.value_encoder.parameters())


def test_shared_layers_let_the_value_loss_reach_the_encoder():
    module = ppo()
    module.forward_train({Columns.OBS: obs_batch(VEC, B)})[Columns.VF_PREDS].sum().backward()
    assert all(p.grad is not None for p in module.encoder.parameters())


# ------------------------------------------------------ continuous actions
def test_free_log_std_is_a_parameter_broadcast_over_the_batch():
    module = ppo(act=BOX, free_log_std=True)
    assert isinstance(module.pi.log_std, nn.Parameter) and module.pi.log_std.shape == (2,)
    assert linears(module.pi)[-1].out_features == 2  # the MLP outputs only the mean
    with torch.no_grad():
        module.pi.log_std.copy_(torch.tensor([0.3, -0.7]))
    logits = module.forward_inference({Columns.OBS: obs_batch(VEC, B)})[Columns.ACTION_DIST_INPUTS]
    assert logits.shape == (B, 4)
    assert torch.allclose(logits[:, 2:], torch.tensor([[0.3, -0.7]]).expand(B, 2))
    assert "pi.log_std" in dict(module.named_parameters())


@pytest.mark.parametrize("free", [True, False])
def test_log_std_is_clipped(free):
    module = ppo(act=BOX, free_log_std=free, log_std_clip_param=2.0)
    with torch.no_grad():
        if free:
            module.pi.log_std.fill_(100.0)
        else:
            linears(module.pi)[-1].bias[2:] = 100.0
    logits = module.forward_inference({Columns.OBS: obs_batch(VEC, B)})[Columns.ACTION_DIST_INPUTS]
    assert torch.all(logits[:, 2:] == 2.0)


# ---------------------------------------------------------- action masks
def masked_space(n=4):
    return gym.spaces.Dict({"observation": VEC,
                            "action_mask": gym.spaces.Box(0, 1, (n,), np.int8)})


def test_action_mask_sets_masked_logits_to_finfo_min():
    torch.manual_seed(0)
    module = DefaultPPOTorchRLModule(masked_space(), gym.spaces.Discrete(4), model_config=SMALL)
    with torch.no_grad():  # make the masked action 3 the favourite
        linears(module.pi)[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]))
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]] * 2, dtype=torch.int8)
    batch = {Columns.OBS: {"observation": obs_batch(VEC, B), "action_mask": mask}}
    for out in (module.forward_inference(batch), module.forward_exploration(batch),
                module.forward_train(batch)):
        logits = out[Columns.ACTION_DIST_INPUTS]
        assert torch.all(logits[mask == 0] == torch.finfo(logits.dtype).min)
        assert torch.all(logits[mask == 1] > -1e6)
        assert torch.all(mask.gather(1, logits.argmax(-1, keepdim=True)) == 1)
    draws = torch.distributions.Categorical(logits=logits.detach()).sample((5000,))  # [N, B]
    assert torch.all(mask[torch.arange(B).expand_as(draws), draws] == 1)
    assert set(draws.unique().tolist()) == {0, 1, 2}  # every allowed action still drawn
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.all(torch.isfinite(entropy))


def test_action_mask_with_multidiscrete_actions():
    module = DefaultBCTorchRLModule(masked_space(6), MULTI_DISCRETE, model_config=SMALL)
    mask = torch.ones(B, 6, dtype=torch.int8)
    mask[:, 3] = 0
    batch = {Columns.OBS: {"observation": obs_batch(VEC, B), "action_mask": mask}}
    logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    assert torch.all(logits[:, 3] == torch.finfo(logits.dtype).min)


def test_action_mask_shape_must_match_the_action_space():
    with pytest.raises(ValueError, match=r"action_mask.*\(3,\)"):
        DefaultPPOTorchRLModule(masked_space(4), DISCRETE, model_config=SMALL)


# ------------------------------------------------------------------- LSTM
LSTM_CFG = dict(fcnet_hiddens=[8], head_fcnet_hiddens=[], use_lstm=True, lstm_cell_size=6)


def lstm_ppo(**cfg):
    torch.manual_seed(0)
    return DefaultPPOTorchRLModule(VEC, DISCRETE, model_config={**LSTM_CFG, **cfg})


def test_lstm_initial_state_and_layer_sizes():
    module = lstm_ppo()
    state = module.get_initial_state()
    assert set(state) == {"h", "c"} and state["h"].shape == (6,) and torch.all(state["c"] == 0)
    assert module.is_stateful()
    assert module.encoder.lstm.lstm.input_size == 8 and module.encoder.lstm.lstm.hidden_size == 6
    assert linears(module.pi)[0].in_features == 6
    assert not DefaultPPOTorchRLModule(VEC, DISCRETE, model_config=SMALL).is_stateful()


def test_lstm_carries_state_across_calls():
    module = lstm_ppo()
    obs = obs_batch(VEC, B)
    first = module.forward_exploration({Columns.OBS: obs})
    assert first[Columns.STATE_OUT]["h"].shape == (B, 6)
    zeros = {k: v.expand(B, -1) for k, v in module.get_initial_state().items()}
    from_zeros = module.forward_exploration({Columns.OBS: obs, Columns.STATE_IN: zeros})
    assert torch.allclose(from_zeros[Columns.ACTION_DIST_INPUTS], first[Columns.ACTION_DIST_INPUTS])
    carried = module.forward_exploration({Columns.OBS: obs,
                                          Columns.STATE_IN: first[Columns.STATE_OUT]})
    assert not torch.allclose(carried[Columns.ACTION_DIST_INPUTS],
                              first[Columns.ACTION_DIST_INPUTS])


def test_lstm_sequence_pass_equals_stepwise_passes():
    module = lstm_ppo(lstm_use_prev_action=True, lstm_use_prev_reward=True)
    T = 5
    obs = obs_batch(VEC, B, T)
    prev_a = torch.randint(0, 3, (B, T))
    prev_r = torch.randn(B, T)
    state0 = {"h": torch.randn(B, 6), "c": torch.randn(B, 6)}
    train = module.forward_train({Columns.OBS: obs, Columns.STATE_IN: state0,
                                  Columns.PREV_ACTIONS: prev_a, Columns.PREV_REWARDS: prev_r})
    assert train[Columns.ACTION_DIST_INPUTS].shape == (B, T, 3)
    assert train[Columns.VF_PREDS].shape == (B, T)
    state, steps, values = state0, [], []
    for t in range(T):
        step = {Columns.OBS: obs[:, t], Columns.STATE_IN: state,
                Columns.PREV_ACTIONS: prev_a[:, t], Columns.PREV_REWARDS: prev_r[:, t]}
        out = module.forward_exploration(step)
        steps.append(out[Columns.ACTION_DIST_INPUTS])
        values.append(module.compute_values(step))
        state = out[Columns.STATE_OUT]
    assert torch.allclose(train[Columns.ACTION_DIST_INPUTS], torch.stack(steps, 1), atol=1e-5)
    assert torch.allclose(train[Columns.VF_PREDS], torch.stack(values, 1), atol=1e-5)
    assert torch.allclose(train[Columns.STATE_OUT]["h"], state["h"], atol=1e-5)


def test_lstm_prev_action_and_reward_feed_the_lstm():
    module = lstm_ppo(lstm_use_prev_action=True, lstm_use_prev_reward=True)
    assert module.encoder.lstm.lstm.input_size == 8 + 3 + 1  # features + one-hot + reward
    obs = obs_batch(VEC, B)
    a0 = {Columns.OBS: obs, Columns.PREV_ACTIONS: torch.zeros(B, dtype=torch.long),
          Columns.PREV_REWARDS: torch.zeros(B)}
    a2 = {**a0, Columns.PREV_ACTIONS: torch.full((B,), 2)}
    r1 = {**a0, Columns.PREV_REWARDS: torch.ones(B)}
    base = module.forward_inference(a0)[Columns.ACTION_DIST_INPUTS]
    assert not torch.allclose(base, module.forward_inference(a2)[Columns.ACTION_DIST_INPUTS])
    assert not torch.allclose(base, module.forward_inference(r1)[Columns.ACTION_DIST_INPUTS])


def test_missing_prev_actions_names_column_and_flag():
    module = lstm_ppo(lstm_use_prev_action=True)
    with pytest.raises(KeyError, match=r"prev_actions.*lstm_use_prev_action"):
        module.forward_exploration({Columns.OBS: obs_batch(VEC, B)})
    module = lstm_ppo(lstm_use_prev_reward=True)
    with pytest.raises(KeyError, match=r"prev_rewards.*lstm_use_prev_reward"):
        module.forward_train({Columns.OBS: obs_batch(VEC, B, 3)})


def test_lstm_with_separate_value_layers_and_images():
    module = DefaultPPOTorchRLModule(IMG, BOX, model_config={
        **LSTM_CFG, "vf_share_layers": False, "free_log_std": True})
    assert set(module.get_initial_state()) == {"h", "c"}
    assert hasattr(module.value_encoder, "lstm")
    out = module.forward_train({Columns.OBS: obs_batch(IMG, 2, 3)})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (2, 3, 4)
    assert out[Columns.VF_PREDS].shape == (2, 3)
    assert out[Columns.STATE_OUT]["c"].shape == (2, 6)


# ------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_rebuilds_the_same_module(tmp_path):
    module = DefaultPPOTorchRLModule(VEC, BOX, model_config=DefaultModelConfig(
        fcnet_hiddens=[8], post_fcnet_hiddens=[4], free_log_std=True, use_lstm=True,
        lstm_cell_size=5))
    path = module.save_to_path(str(tmp_path / "module"))
    restored = RLModule.from_checkpoint(path)
    assert type(restored) is DefaultPPOTorchRLModule
    assert restored.model_config == module.model_config
    batch = {Columns.OBS: obs_batch(VEC, B, 2)}
    assert torch.equal(restored.forward_train(batch)[Columns.VF_PREDS],
                       module.forward_train(batch)[Columns.VF_PREDS])
