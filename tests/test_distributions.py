"""Action distributions: agreement with torch.distributions, shapes, dtypes and defaults."""

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.distributions as td

from marl.distributions import (
    Distribution,
    TorchCategorical,
    TorchDeterministic,
    TorchDiagGaussian,
    TorchMultiCategorical,
    TorchMultiDistribution,
    TorchSquashedGaussian,
    get_default_dist_cls,
)

B = 7


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _gauss_ref(logits):
    mean, log_std = logits.chunk(2, dim=-1)
    return td.Independent(td.Normal(mean, log_std.exp()), 1)


def _squashed_ref(logits, low, high):
    mean, log_std = logits.chunk(2, dim=-1)
    low = torch.as_tensor(low, dtype=logits.dtype)
    high = torch.as_tensor(high, dtype=logits.dtype)
    transforms = [td.TanhTransform(), td.AffineTransform(loc=(high + low) / 2, scale=(high - low) / 2)]
    return td.Independent(td.TransformedDistribution(td.Normal(mean, log_std.exp()), transforms), 1)


# ----------------------------------------------------------------- base class


def test_distribution_is_abstract():
    with pytest.raises(TypeError):
        Distribution()


def test_all_classes_subclass_distribution():
    for cls in (TorchCategorical, TorchDiagGaussian, TorchSquashedGaussian, TorchDeterministic,
                TorchMultiCategorical, TorchMultiDistribution):
        assert issubclass(cls, Distribution)


# ---------------------------------------------------------------- categorical


def test_categorical_logp_entropy_kl_match_torch():
    logits, other_logits = torch.randn(B, 5), torch.randn(B, 5)
    actions = torch.randint(0, 5, (B,))
    dist, other = TorchCategorical.from_logits(logits), TorchCategorical.from_logits(other_logits)
    ref, ref_other = td.Categorical(logits=logits), td.Categorical(logits=other_logits)
    torch.testing.assert_close(dist.logp(actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    torch.testing.assert_close(dist.kl(other), td.kl_divergence(ref, ref_other))
    assert dist.logp(actions).shape == dist.entropy().shape == dist.kl(other).shape == (B,)


def test_categorical_sample_shape_and_dtype():
    dist = TorchCategorical.from_logits(torch.randn(B, 4))
    s = dist.sample()
    assert s.shape == (B,) and s.dtype == torch.int64
    assert ((s >= 0) & (s < 4)).all()
    assert dist.sample((3,)).shape == (3, B)


def test_categorical_rsample_raises_explaining_why():
    with pytest.raises(NotImplementedError, match="rsample.*(discrete|reparameter)"):
        TorchCategorical.from_logits(torch.randn(B, 3)).rsample()


def test_categorical_deterministic_sample_is_argmax():
    logits = torch.randn(B, 6)
    det = TorchCategorical.from_logits(logits).to_deterministic()
    s = det.sample()
    assert torch.equal(s, logits.argmax(-1)) and s.dtype == torch.int64


def test_categorical_masked_logits_never_sampled_and_entropy_finite():
    logits = torch.randn(B, 4)
    logits[:, 1:3] = torch.finfo(logits.dtype).min
    dist = TorchCategorical.from_logits(logits)
    samples = dist.sample((200,))
    assert not ((samples == 1) | (samples == 2)).any()
    assert torch.isfinite(dist.entropy()).all()


def test_categorical_required_input_dim_and_wrong_space():
    assert TorchCategorical.required_input_dim(gym.spaces.Discrete(9)) == 9
    with pytest.raises(TypeError, match="Box"):
        TorchCategorical.required_input_dim(gym.spaces.Box(-1, 1, (2,)))


def test_kl_with_wrong_type_names_both():
    cat = TorchCategorical.from_logits(torch.randn(B, 2))
    gauss = TorchDiagGaussian.from_logits(torch.randn(B, 4))
    with pytest.raises(TypeError, match="TorchCategorical.*TorchDiagGaussian"):
        cat.kl(gauss)


# ---------------------------------------------------------------- gaussian


def test_diag_gaussian_logp_entropy_kl_match_torch():
    logits, other_logits = torch.randn(B, 6), torch.randn(B, 6)
    actions = torch.randn(B, 3)
    dist, other = TorchDiagGaussian.from_logits(logits), TorchDiagGaussian.from_logits(other_logits)
    ref, ref_other = _gauss_ref(logits), _gauss_ref(other_logits)
    torch.testing.assert_close(dist.logp(actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    torch.testing.assert_close(dist.kl(other), td.kl_divergence(ref, ref_other))
    assert dist.logp(actions).shape == (B,)


def test_diag_gaussian_sample_shape_dtype():
    dist = TorchDiagGaussian.from_logits(torch.randn(B, 4))
    assert dist.sample().shape == (B, 2) and dist.sample().dtype == torch.float32
    assert dist.sample((5,)).shape == (5, B, 2)


def test_diag_gaussian_rsample_is_differentiable_and_sample_is_not():
    logits = torch.randn(B, 4, requires_grad=True)
    dist = TorchDiagGaussian.from_logits(logits)
    dist.rsample().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert not dist.sample().requires_grad


def test_diag_gaussian_deterministic_sample_is_mean():
    logits = torch.randn(B, 4)
    torch.testing.assert_close(TorchDiagGaussian.from_logits(logits).to_deterministic().sample(), logits[:, :2])


def test_diag_gaussian_odd_logits_rejected():
    with pytest.raises(ValueError, match="odd"):
        TorchDiagGaussian.from_logits(torch.randn(B, 5))


def test_diag_gaussian_multi_dim_box_reshapes_and_sums_over_all_dims():
    space = gym.spaces.Box(-1, 1, (2, 3))
    cls = get_default_dist_cls(space)
    assert issubclass(cls, TorchDiagGaussian)
    assert cls.required_input_dim(space) == 12
    logits = torch.randn(B, 12)
    dist = cls.from_logits(logits)
    s = dist.sample()
    assert s.shape == (B, 2, 3)
    ref = _gauss_ref(logits)
    torch.testing.assert_close(dist.logp(s), ref.log_prob(s.reshape(B, 6)))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    assert dist.to_deterministic().sample().shape == (B, 2, 3)


# ---------------------------------------------------------------- squashed


@pytest.mark.parametrize("low,high", [(-1.0, 1.0), ([-2.0, 0.0], [3.0, 0.5])])
def test_squashed_logp_matches_tanh_affine_transform(low, high):
    logits = (torch.randn(B, 4) * 0.5).double()
    dist = TorchSquashedGaussian.from_logits(logits, low=low, high=high)
    actions = dist.sample()
    ref = _squashed_ref(logits, low, high)
    torch.testing.assert_close(dist.logp(actions), ref.log_prob(actions), rtol=1e-6, atol=1e-6)


def test_squashed_samples_inside_bounds_with_shape_dtype():
    dist = TorchSquashedGaussian.from_logits(torch.randn(B, 4) * 3, low=-2.0, high=5.0)
    s = dist.sample((50,))
    assert s.shape == (50, B, 2) and s.dtype == torch.float32
    assert (s >= -2.0).all() and (s <= 5.0).all()


def test_squashed_logp_finite_at_bounds():
    dist = TorchSquashedGaussian.from_logits(torch.zeros(2, 2), low=-1.0, high=1.0)
    assert torch.isfinite(dist.logp(torch.tensor([[1.0], [-1.0]]))).all()


def test_squashed_rsample_differentiable():
    logits = torch.randn(B, 2, requires_grad=True)
    TorchSquashedGaussian.from_logits(logits).rsample().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_squashed_deterministic_is_squashed_scaled_mean():
    logits = torch.randn(B, 4)
    det = TorchSquashedGaussian.from_logits(logits, low=0.0, high=4.0).to_deterministic()
    torch.testing.assert_close(det.sample(), (torch.tanh(logits[:, :2]) + 1.0) * 2.0)


def test_squashed_entropy_raises_clearly():
    with pytest.raises(NotImplementedError, match="closed-form"):
        TorchSquashedGaussian.from_logits(torch.randn(B, 2)).entropy()


def test_squashed_kl_equals_gaussian_kl_for_shared_bounds():
    a_logits, b_logits = torch.randn(B, 4), torch.randn(B, 4)
    a = TorchSquashedGaussian.from_logits(a_logits, low=-3.0, high=3.0)
    b = TorchSquashedGaussian.from_logits(b_logits, low=-3.0, high=3.0)
    torch.testing.assert_close(a.kl(b), td.kl_divergence(_gauss_ref(a_logits), _gauss_ref(b_logits)))


def test_squashed_kl_rejects_different_bounds():
    a = TorchSquashedGaussian.from_logits(torch.randn(B, 2), low=-1.0, high=1.0)
    b = TorchSquashedGaussian.from_logits(torch.randn(B, 2), low=-2.0, high=2.0)
    with pytest.raises(ValueError, match="low/high"):
        a.kl(b)


def test_squashed_rejects_bad_bounds():
    with pytest.raises(ValueError, match="high > low"):
        TorchSquashedGaussian.from_logits(torch.randn(B, 2), low=1.0, high=1.0)


# ---------------------------------------------------------------- deterministic


def test_deterministic_sample_entropy_and_self():
    loc = torch.randn(B, 3)
    det = TorchDeterministic.from_logits(loc)
    assert torch.equal(det.sample(), loc)
    assert det.sample((2,)).shape == (2, B, 3)
    assert torch.equal(det.entropy(), torch.zeros(B))
    assert det.to_deterministic() is det
    assert TorchDeterministic.required_input_dim(gym.spaces.Box(-1, 1, (2, 2))) == 4


def test_deterministic_logp_and_kl_raise():
    det = TorchDeterministic.from_logits(torch.randn(B, 3))
    with pytest.raises(NotImplementedError, match="density"):
        det.logp(torch.zeros(B, 3))
    with pytest.raises(NotImplementedError):
        det.kl(det)


def test_deterministic_rsample_passes_gradient_to_loc():
    loc = torch.randn(B, 2, requires_grad=True)
    TorchDeterministic.from_logits(loc).rsample().sum().backward()
    assert torch.equal(loc.grad, torch.ones(B, 2))


# ---------------------------------------------------------------- multi-categorical


def test_multi_categorical_matches_sum_of_categoricals():
    lens = [2, 3, 4]
    logits, other_logits = torch.randn(B, 9), torch.randn(B, 9)
    dist = TorchMultiCategorical.from_logits(logits, input_lens=lens)
    other = TorchMultiCategorical.from_logits(other_logits, input_lens=lens)
    refs = [td.Categorical(logits=x) for x in logits.split(lens, -1)]
    ref_others = [td.Categorical(logits=x) for x in other_logits.split(lens, -1)]
    actions = torch.stack([torch.randint(0, n, (B,)) for n in lens], dim=-1)
    torch.testing.assert_close(dist.logp(actions), sum(r.log_prob(actions[:, i]) for i, r in enumerate(refs)))
    torch.testing.assert_close(dist.entropy(), sum(r.entropy() for r in refs))
    torch.testing.assert_close(dist.kl(other), sum(td.kl_divergence(r, o) for r, o in zip(refs, ref_others)))


def test_multi_categorical_sample_shape_dtype_range():
    dist = TorchMultiCategorical.from_logits(torch.randn(B, 5), input_lens=[2, 3])
    s = dist.sample()
    assert s.shape == (B, 2) and s.dtype == torch.int64
    assert (s[:, 0] < 2).all() and (s[:, 1] < 3).all()
    assert dist.sample((4,)).shape == (4, B, 2)


def test_multi_categorical_deterministic_is_per_component_argmax():
    logits = torch.randn(B, 5)
    det = TorchMultiCategorical.from_logits(logits, input_lens=[2, 3]).to_deterministic()
    expected = torch.stack([logits[:, :2].argmax(-1), logits[:, 2:].argmax(-1)], dim=-1)
    assert torch.equal(det.sample(), expected)


def test_multi_categorical_partial_class_keeps_classmethods():
    cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=[3, 2])
    assert isinstance(cls, type) and issubclass(cls, TorchMultiCategorical)
    assert cls.required_input_dim(gym.spaces.MultiDiscrete([3, 2])) == 5
    assert cls.from_logits(torch.randn(B, 5)).sample().shape == (B, 2)


def test_multi_categorical_needs_input_lens_and_matching_width():
    with pytest.raises(ValueError, match="input_lens"):
        TorchMultiCategorical.from_logits(torch.randn(B, 5))
    with pytest.raises(ValueError, match="sum to 6"):
        TorchMultiCategorical.from_logits(torch.randn(B, 5), input_lens=[3, 3])


def test_multi_categorical_rsample_raises():
    with pytest.raises(NotImplementedError, match="rsample"):
        TorchMultiCategorical.from_logits(torch.randn(B, 5), input_lens=[2, 3]).rsample()


def test_multi_dim_multidiscrete_default_keeps_shape():
    space = gym.spaces.MultiDiscrete([[2, 3], [4, 5]])
    cls = get_default_dist_cls(space)
    dist = cls.from_logits(torch.randn(B, cls.required_input_dim(space)))
    s = dist.sample()
    assert s.shape == (B, 2, 2)
    assert dist.logp(s).shape == (B,)
    assert all(space.contains(a) for a in s.numpy())


# ---------------------------------------------------------------- multi-distribution


def test_multi_distribution_dict_sample_logp_entropy_kl():
    space = gym.spaces.Dict({"move": gym.spaces.Box(-1, 1, (2,)), "fire": gym.spaces.Discrete(3)})
    cls = get_default_dist_cls(space)
    dim = cls.required_input_dim(space)
    assert dim == 3 + 4  # gymnasium sorts keys: "fire" then "move"
    logits, other_logits = torch.randn(B, dim), torch.randn(B, dim)
    dist, other = cls.from_logits(logits), cls.from_logits(other_logits)
    s = dist.sample()
    assert list(s) == ["fire", "move"] == list(space.spaces)
    assert s["fire"].dtype == torch.int64 and s["move"].shape == (B, 2)
    fire, move = td.Categorical(logits=logits[:, :3]), _gauss_ref(logits[:, 3:])
    fire_o, move_o = td.Categorical(logits=other_logits[:, :3]), _gauss_ref(other_logits[:, 3:])
    torch.testing.assert_close(dist.logp(s), fire.log_prob(s["fire"]) + move.log_prob(s["move"]))
    torch.testing.assert_close(dist.entropy(), fire.entropy() + move.entropy())
    torch.testing.assert_close(
        dist.kl(other), td.kl_divergence(fire, fire_o) + td.kl_divergence(move, move_o)
    )


def test_multi_distribution_tuple_returns_tuple_and_nested_dict():
    space = gym.spaces.Tuple([
        gym.spaces.MultiDiscrete([2, 2]),
        gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (3,)), "y": gym.spaces.Discrete(4)}),
    ])
    cls = get_default_dist_cls(space)
    assert cls.required_input_dim(space) == 4 + (6 + 4)
    dist = cls.from_logits(torch.randn(B, 14))
    s = dist.sample()
    assert isinstance(s, tuple) and len(s) == 2
    assert s[0].shape == (B, 2) and s[0].dtype == torch.int64
    assert isinstance(s[1], dict) and s[1]["x"].shape == (B, 3) and s[1]["y"].shape == (B,)
    assert dist.logp(s).shape == dist.entropy().shape == (B,)
    assert space.contains((s[0][0].numpy(), {"x": np.clip(s[1]["x"][0].numpy(), -1, 1), "y": int(s[1]["y"][0])}))


def test_multi_distribution_logp_ignores_dict_order_of_actions():
    space = gym.spaces.Dict({"a": gym.spaces.Discrete(3), "b": gym.spaces.Discrete(5)})
    dist = get_default_dist_cls(space).from_logits(torch.randn(B, 8))
    s = dist.sample()
    torch.testing.assert_close(dist.logp({"b": s["b"], "a": s["a"]}), dist.logp(s))


def test_multi_distribution_deterministic_is_child_modes():
    space = gym.spaces.Dict({"a": gym.spaces.Discrete(3), "b": gym.spaces.Box(-1, 1, (2,))})
    logits = torch.randn(B, 7)
    det = get_default_dist_cls(space).from_logits(logits).to_deterministic()
    s = det.sample()
    assert torch.equal(s["a"], logits[:, :3].argmax(-1))
    torch.testing.assert_close(s["b"], logits[:, 3:5])


def test_multi_distribution_rsample_raises_for_discrete_child():
    space = gym.spaces.Dict({"a": gym.spaces.Discrete(3), "b": gym.spaces.Box(-1, 1, (2,))})
    with pytest.raises(NotImplementedError, match="rsample"):
        get_default_dist_cls(space).from_logits(torch.randn(B, 7)).rsample()


def test_multi_distribution_explicit_partial_with_custom_children():
    space = gym.spaces.Tuple([gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2)])
    cls = TorchMultiDistribution.get_partial_dist_cls(
        space=space, child_distribution_cls_struct=(TorchSquashedGaussian, TorchCategorical), input_lens=[4, 2]
    )
    assert cls.required_input_dim(space) == 6
    s = cls.from_logits(torch.randn(B, 6) * 5).sample()
    assert (s[0].abs() <= 1).all() and s[1].shape == (B,)


def test_multi_distribution_rejects_wrong_logits_width():
    space = gym.spaces.Dict({"a": gym.spaces.Discrete(3)})
    with pytest.raises(ValueError, match="last dim 4"):
        get_default_dist_cls(space).from_logits(torch.randn(B, 4))


# ---------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "space,expected_cls,dim",
    [
        (gym.spaces.Discrete(4), TorchCategorical, 4),
        (gym.spaces.MultiDiscrete([3, 5]), TorchMultiCategorical, 8),
        (gym.spaces.Box(-1, 1, (3,)), TorchDiagGaussian, 6),
        (gym.spaces.Box(-1, 1, (2, 2)), TorchDiagGaussian, 8),
        (gym.spaces.Dict({"a": gym.spaces.Discrete(2), "b": gym.spaces.Box(-1, 1, (1,))}), TorchMultiDistribution, 4),
        (gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Tuple([gym.spaces.MultiDiscrete([2, 3])])]),
         TorchMultiDistribution, 7),
    ],
)
def test_default_dist_cls_per_space_works_with_flat_logits(space, expected_cls, dim):
    cls = get_default_dist_cls(space)
    assert issubclass(cls, expected_cls)
    assert cls.required_input_dim(space) == dim
    dist = cls.from_logits(torch.randn(B, dim))
    assert dist.logp(dist.sample()).shape == (B,)
    assert dist.entropy().shape == (B,)


def test_default_dist_cls_exact_classes_for_simple_spaces():
    assert get_default_dist_cls(gym.spaces.Discrete(2)) is TorchCategorical
    assert get_default_dist_cls(gym.spaces.Box(-1, 1, (2,))) is TorchDiagGaussian


def test_default_dist_cls_rejects_unsupported_space_by_name():
    with pytest.raises(TypeError, match=r"Text.*supported.*Discrete"):
        get_default_dist_cls(gym.spaces.Text(5))
    with pytest.raises(TypeError, match="MultiBinary"):
        get_default_dist_cls(gym.spaces.MultiBinary(3))


def test_default_dist_cls_names_unsupported_space_nested_in_dict():
    with pytest.raises(TypeError, match=r"'bad'.*Text"):
        get_default_dist_cls(gym.spaces.Dict({"ok": gym.spaces.Discrete(2), "bad": gym.spaces.Text(3)}))


def test_partial_classes_pickle_round_trip():
    space = gym.spaces.Dict({"a": gym.spaces.MultiDiscrete([2, 3]), "b": gym.spaces.Box(-1, 1, (2,))})
    cls = pickle.loads(pickle.dumps(get_default_dist_cls(space)))
    assert issubclass(cls, TorchMultiDistribution)
    assert cls.required_input_dim(space) == 9
    assert cls.from_logits(torch.randn(B, 9)).sample()["a"].shape == (B, 2)
    assert pickle.loads(pickle.dumps(TorchCategorical)) is TorchCategorical


def test_partial_kwargs_can_be_overridden_per_call():
    cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=[2, 2])
    assert cls.from_logits(torch.randn(B, 5), input_lens=[2, 3]).sample().shape == (B, 2)
    assert cls.from_logits(torch.randn(B, 6), input_lens=[1, 2, 3]).sample().shape == (B, 3)


# ------------------------------------------------- squashed gaussian near the bounds
def _reference_logp(x, loc, std, low, high):
    """float64 change of variables: log N(x) - log(1 - tanh(x)^2) - log((high - low) / 2)."""
    x = x.double()
    log_normal = -0.5 * ((x - loc) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return log_normal - torch.log1p(-torch.tanh(x) ** 2) - math.log((high - low) / 2)


def test_squashed_gaussian_density_matches_a_histogram_of_its_samples():
    torch.manual_seed(0)
    dist = TorchSquashedGaussian(torch.tensor([[1.2]]), torch.tensor([[0.6]]), low=-2.0, high=3.0)
    actions = dist.sample((400_000,)).reshape(-1)
    edges = torch.linspace(-2.0, 3.0, 51)
    counts = torch.histc(actions, bins=50, min=-2.0, max=3.0)
    width = float(edges[1] - edges[0])
    # The density averaged over each bin (40 points per bin), against the share of samples in it.
    points = edges[:-1, None] + (torch.arange(40) + 0.5)[None, :] * width / 40
    density = torch.exp(dist.logp(points.reshape(-1, 1, 1))).reshape(50, 40).mean(dim=1)
    empirical = counts / counts.sum() / width
    busy = counts > 2000  # bins with enough samples for a 5% comparison
    assert busy.sum() > 10
    torch.testing.assert_close(density[busy], empirical[busy].float(), rtol=0.06, atol=0.0)


def test_a_saturated_squashed_gaussian_has_its_true_positive_density():
    loc, log_std = 10.0, -2.0
    dist = TorchSquashedGaussian(torch.full((1000, 1), loc), torch.full((1000, 1), math.exp(log_std)))
    torch.manual_seed(1)
    actions, logp = dist.rsample_and_logp()
    torch.manual_seed(1)
    x = dist._dist.rsample()
    reference = _reference_logp(x, loc, math.exp(log_std), -1.0, 1.0).reshape(-1)
    torch.testing.assert_close(logp.double(), reference, rtol=1e-4, atol=1e-3)
    assert (logp > 10).all()  # a spike at the bound: a large positive log-density, not ~-365
    # logp(action) stays finite for actions rounded onto the bound, and exact just inside.
    assert torch.isfinite(dist.logp(actions)).all()
    inside = TorchSquashedGaussian(torch.tensor([[4.0]]), torch.tensor([[0.5]]))
    x_in = torch.tensor([[[4.2]]])
    torch.testing.assert_close(inside.logp(torch.tanh(x_in)).double().reshape(-1),
                               _reference_logp(x_in, 4.0, 0.5, -1.0, 1.0).reshape(-1), rtol=1e-3, atol=1e-3)


def test_rsample_and_logp_is_differentiable_in_the_parameters():
    loc = torch.tensor([[0.5, -0.3]], requires_grad=True)
    dist = TorchSquashedGaussian(loc, torch.tensor([[0.4, 0.9]]))
    actions, logp = dist.rsample_and_logp()
    (actions.sum() + logp.sum()).backward()
    assert torch.isfinite(loc.grad).all() and loc.grad.abs().sum() > 0
