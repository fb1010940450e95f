"""PPO's meaning pinned against RLlib 2.60: defaults, loss terms, KL rule, advantages.

The loss tests compare with sums written out element by element, so a change
of semantics (squared-error clamp vs prediction clipping, where the KL term
is averaged, the sign of the entropy bonus) fails here before it costs a
learning run.
"""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from learners import PPOTorchLearner
from learners.ppo_learner import ppo_loss
from marl import Columns, DefaultModelConfig, MultiRLModuleSpec, PPOConfig, RLModuleSpec
from marl.algorithms.algorithm_config import ConfigError
from marl.models import DefaultPPOTorchRLModule
from tests.test_learners import fake_samples

#: RLlib 2.60's PPOConfig / AlgorithmConfig defaults for every key both share.
RLLIB_PPO_DEFAULTS = {
    "lr": 5e-5, "gamma": 0.99, "train_batch_size_per_learner": 4000, "minibatch_size": 128,
    "num_epochs": 30, "shuffle_batch_per_epoch": True, "lambda_": 1.0, "use_gae": True,
    "use_critic": True, "use_kl_loss": True, "kl_coeff": 0.2, "kl_target": 0.01, "vf_loss_coeff": 1.0,
    "entropy_coeff": 0.0, "clip_param": 0.3, "vf_clip_param": 10.0, "grad_clip": None,
    "grad_clip_by": "global_norm", "rollout_fragment_length": "auto", "num_envs_per_env_runner": 1,
    "normalize_actions": True, "clip_actions": False, "explore": True,
}

# Four samples chosen to hit every branch: ratio above and below the clip
# range for positive and negative advantages, value errors below and above
# the clamp.
LOGP = [-0.5, -1.0, -0.2, -2.0]
OLD_LOGP = [-0.7, -0.6, -0.2, -1.0]
ADV = [1.0, -2.0, 0.5, 3.0]
VALUES = [1.0, 5.0, -2.0, 0.0]
TARGETS = [1.5, 0.0, 2.0, 0.1]
OLD_VALUES = [0.8, 4.0, -1.0, 0.5]
ENTROPY = [0.6, 0.5, 0.4, 0.3]
KL = [0.01, 0.02, 0.03, 0.04]


def loss_terms(mask=None, **overrides):
    kw = dict(clip_param=0.2, vf_clip_param=10.0, value_clip_param=None, vf_loss_coeff=0.5,
              entropy_coeff=0.01, kl_coeff=0.2)
    kw.update(overrides)
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return ppo_loss(logp=t(LOGP), old_logp=t(OLD_LOGP), advantages=t(ADV), values=t(VALUES),
                    value_targets=t(TARGETS), old_values=t(OLD_VALUES), entropy=t(ENTROPY),
                    kl=t(KL) if kw.pop("with_kl", True) else None, mask=mask, **kw)


def hand_surrogates(clip):
    out = []
    for lp, old, a in zip(LOGP, OLD_LOGP, ADV):
        r = math.exp(lp - old)
        out.append(min(r * a, min(max(r, 1 - clip), 1 + clip) * a))
    return out


def test_ppo_config_defaults_are_rllibs():
    config = PPOConfig()
    actual = {k: getattr(config, k) for k in RLLIB_PPO_DEFAULTS}
    assert actual == RLLIB_PPO_DEFAULTS
    assert config.value_clip_param is None  # marl's own PPO2 clipping is off unless asked for


def test_surrogate_value_clamp_entropy_and_kl_match_a_hand_computation():
    terms = loss_terms()
    surr = hand_surrogates(0.2)
    # 1.2214 is clipped to 1.2 (A > 0); 0.6703 * -2 is beaten by 0.8 * -2 (A < 0).
    assert surr[0] == pytest.approx(1.2) and surr[1] == pytest.approx(-1.6)
    vf = [min((v - t) ** 2, 10.0) for v, t in zip(VALUES, TARGETS)]
    assert vf == pytest.approx([0.25, 10.0, 10.0, 0.01])
    n = len(LOGP)
    expected_total = (
        sum(-s + 0.5 * e - 0.01 * h for s, e, h in zip(surr, vf, ENTROPY)) / n + 0.2 * sum(KL) / n
    )
    assert float(terms["total_loss"]) == pytest.approx(expected_total, rel=1e-12)
    assert float(terms["policy_loss"]) == pytest.approx(-sum(surr) / n, rel=1e-12)
    assert float(terms["vf_loss"]) == pytest.approx(sum(vf) / n, rel=1e-12)
    assert float(terms["vf_loss_unclipped"]) == pytest.approx(
        sum((v - t) ** 2 for v, t in zip(VALUES, TARGETS)) / n, rel=1e-12)
    assert float(terms["entropy"]) == pytest.approx(sum(ENTROPY) / n)
    assert float(terms["mean_kl_loss"]) == pytest.approx(sum(KL) / n)


def test_without_kl_loss_the_kl_term_is_absent_and_none_means_no_value_clamp():
    with_kl, without = loss_terms(), loss_terms(with_kl=False)
    assert float(with_kl["total_loss"] - without["total_loss"]) == pytest.approx(0.2 * sum(KL) / 4)
    unclamped = loss_terms(vf_clip_param=None)
    assert float(unclamped["vf_loss"]) == pytest.approx(float(unclamped["vf_loss_unclipped"]))


def test_value_clamp_bounds_each_samples_value_loss_and_stops_its_gradient():
    values = torch.tensor(VALUES, dtype=torch.float64, requires_grad=True)
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    terms = ppo_loss(logp=t(LOGP), old_logp=t(OLD_LOGP), advantages=t(ADV), values=values,
                     value_targets=t(TARGETS), old_values=None, entropy=t(ENTROPY), kl=None, mask=None,
                     clip_param=0.2, vf_clip_param=10.0, value_clip_param=None, vf_loss_coeff=1.0,
                     entropy_coeff=0.0, kl_coeff=0.0)
    terms["total_loss"].backward()
    # d/dv of mean((v - t)^2) is 2 (v - t) / n below the clamp and 0 above it.
    expected = [2 * (v - tg) / 4 if (v - tg) ** 2 < 10.0 else 0.0 for v, tg in zip(VALUES, TARGETS)]
    np.testing.assert_allclose(values.grad.numpy(), expected)


def test_value_clip_param_is_ppo2_prediction_clipping():
    terms = loss_terms(vf_clip_param=None, value_clip_param=0.5)
    expected = []
    for v, tg, old in zip(VALUES, TARGETS, OLD_VALUES):
        clipped = old + min(max(v - old, -0.5), 0.5)
        expected.append(max((v - tg) ** 2, (clipped - tg) ** 2))
    assert float(terms["vf_loss"]) == pytest.approx(sum(expected) / 4, rel=1e-12)


def test_loss_mask_averages_over_real_steps_only():
    mask = torch.tensor([True, True, False, True])
    terms = loss_terms(mask=mask)
    keep = [0, 1, 3]
    surr = hand_surrogates(0.2)
    vf = [min((VALUES[i] - TARGETS[i]) ** 2, 10.0) for i in keep]
    expected = (sum(-surr[i] + 0.5 * e - 0.01 * ENTROPY[i] for i, e in zip(keep, vf)) / 3
                + 0.2 * sum(KL[i] for i in keep) / 3)
    assert float(terms["total_loss"]) == pytest.approx(expected, rel=1e-12)


def cartpole_learner(**training):
    spec = MultiRLModuleSpec(rl_module_specs={"p0": RLModuleSpec(
        module_class=DefaultPPOTorchRLModule, observation_space=gym.spaces.Box(-1.0, 1.0, (4,)),
        action_space=gym.spaces.Discrete(2), model_config=DefaultModelConfig(fcnet_hiddens=[8]))})
    learner = PPOTorchLearner(config=PPOConfig().training(**training), module_spec=spec)
    learner.build()
    return learner


def test_learner_loss_is_ppo_loss_of_the_module_outputs():
    """The learner wires logits, old logits, actions and values into ppo_loss as RLlib does."""
    torch.manual_seed(0)
    learner = cartpole_learner(entropy_coeff=0.01, vf_loss_coeff=0.5, clip_param=0.2)
    batch = learner.build_train_batches({"p0": fake_samples()})["p0"]
    tb = {k: torch.as_tensor(v) for k, v in batch.items()}
    out = learner.module.forward_train({"p0": tb})["p0"]
    loss = learner.compute_loss_for_module("p0", learner.config, tb, out)

    logits = out[Columns.ACTION_DIST_INPUTS].double()
    new = torch.distributions.Categorical(logits=logits)
    old = torch.distributions.Categorical(logits=tb[Columns.ACTION_DIST_INPUTS].double())
    ratio = torch.exp(new.log_prob(tb[Columns.ACTIONS]) - tb[Columns.ACTION_LOGP].double())
    adv = tb[Columns.ADVANTAGES].double()
    surr = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    vf = ((out[Columns.VF_PREDS].double() - tb[Columns.VALUE_TARGETS].double()) ** 2).clamp(max=10.0)
    kl = torch.distributions.kl_divergence(old, new).mean()
    expected = (-surr + 0.5 * vf - 0.01 * new.entropy()).mean() + 0.2 * kl
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_advantages_are_standardised_per_module_over_the_whole_batch():
    learner = cartpole_learner()
    adv = learner.build_train_batches({"p0": fake_samples(n_segments=6)})["p0"][Columns.ADVANTAGES]
    assert abs(float(np.mean(adv))) < 1e-5 and float(np.std(adv)) == pytest.approx(1.0, abs=1e-4)
    raw = cartpole_learner(normalize_advantages=False).build_train_batches(
        {"p0": fake_samples(n_segments=6)})["p0"][Columns.ADVANTAGES]
    assert float(np.std(raw)) != pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("last_kl, mean_kl, factor", [(0.03, 0.001, 1.5), (0.001, 0.03, 0.5), (0.01, 0.5, 1.0)])
def test_kl_coefficient_follows_the_last_minibatchs_kl_like_rllib(last_kl, mean_kl, factor):
    learner = cartpole_learner(kl_coeff=0.2, kl_target=0.01)
    learner._last_minibatch_metrics = {"p0": {"mean_kl_loss": last_kl}}
    results = {"p0": {"mean_kl_loss": mean_kl}}
    learner.after_update(results)
    assert learner.kl_coeffs["p0"] == pytest.approx(0.2 * factor)
    assert results["p0"]["curr_kl_coeff"] == pytest.approx(0.2 * factor)


def test_update_records_the_last_minibatch_kl():
    learner = cartpole_learner(minibatch_size=8, num_epochs=2)
    learner.update_from_samples({"p0": fake_samples()})
    # 32 rows in minibatches of 8 over 2 epochs: 8 values; the rule uses the last.
    assert set(learner._last_minibatch_metrics["p0"]) >= {"mean_kl_loss", "vf_loss", "policy_loss"}
    assert learner._last_minibatch_metrics["p0"]["mean_kl_loss"] >= 0.0


@pytest.mark.parametrize("key, value", [("vf_clip_param", -1.0), ("value_clip_param", 0), ("vf_loss_coeff", -0.5),
                                        ("use_critic", False)])
def test_invalid_ppo_values_are_named(key, value):
    config = PPOConfig().environment("CartPole-v1").training(**{key: value})
    with pytest.raises(ConfigError, match=key):
        config.validate()


def rllib_elongated_advantages(values, boot, rewards, terminated, seq_lens, gamma, lam):
    """RLlib's procedure, written out: one artificial step after each segment, GAE over
    all rows (RLlib's compute_value_targets), standardised over all rows, real rows kept."""
    V, R, T, TR, real = [], [], [], [], []
    start = 0
    for i, n in enumerate(seq_lens):
        V += list(values[start:start + n]) + [boot[i]]
        R += list(rewards[start:start + n]) + [0.0]
        T += [False] * (n - 1) + [bool(terminated[start + n - 1])] + [False]
        TR += [False] * (n - 1) + [not bool(terminated[start + n - 1])] + [False]
        real += [True] * n + [False]
        start += n
    V, R, T, TR, real = map(np.asarray, (V, R, T, TR, real))
    next_v = np.append(V[1:], 0.0)
    td = R + gamma * (1.0 - T) * next_v - V
    adv, running = np.zeros(len(R)), 0.0
    for t in reversed(range(len(R))):
        running = td[t] + gamma * lam * (1.0 - T[t]) * (1.0 - TR[t]) * running
        adv[t] = running
    adv = (adv - adv.mean()) / max(1e-4, adv.std())
    return adv[real]


@pytest.mark.parametrize("lam", [1.0, 0.9])
def test_bootstrap_step_statistics_reproduce_rllibs_standardised_advantages(lam):
    from learners.value_estimates import flat_and_bootstrap_values

    samples = fake_samples(n_segments=5, seg_len=6, seed=3)
    samples[Columns.TERMINATEDS][5] = False  # one segment cut by the sample boundary
    learner = cartpole_learner(lambda_=lam, gamma=0.95, advantage_stats_include_bootstrap_steps=True)
    adv = learner.build_train_batches({"p0": samples})["p0"][Columns.ADVANTAGES]
    values, boot = flat_and_bootstrap_values(learner.module, {"p0": samples}, max_seq_len=20)["p0"]
    expected = rllib_elongated_advantages(values, boot, samples[Columns.REWARDS], samples[Columns.TERMINATEDS],
                                          samples[Columns.SEQ_LENS], 0.95, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-4, atol=1e-5)
    plain = cartpole_learner(lambda_=lam, gamma=0.95).build_train_batches({"p0": samples})["p0"][Columns.ADVANTAGES]
    assert not np.allclose(plain, expected, atol=1e-3)  # the statistics really differ


def test_minibatches_cycle_each_module_like_rllibs_cyclic_iterator():
    from learners.batching import iter_minibatches

    batches = {"small": {Columns.OBS: torch.arange(10)}, "big": {Columns.OBS: torch.arange(25)}}
    steps = list(iter_minibatches(batches, {"small": 5, "big": 5}, num_epochs=2, generator=torch.Generator()))
    # Until the biggest module has made 2 passes: 2 x 25 / 5 steps, each with 5 rows of every module.
    assert len(steps) == 10
    assert all(len(s["small"][Columns.OBS]) == 5 and len(s["big"][Columns.OBS]) == 5 for s in steps)
    small = torch.cat([s["small"][Columns.OBS] for s in steps])
    big = torch.cat([s["big"][Columns.OBS] for s in steps])
    assert torch.bincount(small).tolist() == [5] * 10  # the smaller module made 5 full passes
    assert torch.bincount(big).tolist() == [2] * 25
    for p in range(5):  # every pass is a permutation of all rows
        assert sorted(small[p * 10:(p + 1) * 10].tolist()) == list(range(10))


def test_minibatches_keep_sampled_order_without_shuffle():
    from learners.batching import iter_minibatches

    steps = list(iter_minibatches({"m": {Columns.OBS: torch.arange(7)}}, {"m": 3}, num_epochs=2,
                                  generator=torch.Generator(), shuffle=False))
    # Every step is a full minibatch: the last one wraps into the next pass, as RLlib's does.
    assert [s["m"][Columns.OBS].tolist() for s in steps] == [[0, 1, 2], [3, 4, 5], [6, 0, 1], [2, 3, 4], [5, 6, 0]]


def test_bootstrap_slots_take_places_in_minibatches_as_rllib_rows_do():
    from learners.batching import iter_minibatches

    # Segments of 3 and 4 steps: RLlib's batch is [0 1 2 b 3 4 5 6 b] (b: masked bootstrap rows).
    after = torch.tensor([False, False, True, False, False, False, True])
    steps = list(iter_minibatches({"m": {Columns.OBS: torch.arange(7)}}, {"m": 3}, num_epochs=2,
                                  generator=torch.Generator(), shuffle=False, slots_after={"m": after}))
    assert [s["m"][Columns.OBS].tolist() for s in steps] == [[0, 1, 2], [3, 4], [5, 6]] * 2
    plain = list(iter_minibatches({"m": {Columns.OBS: torch.arange(7)}}, {"m": 3}, num_epochs=2,
                                  generator=torch.Generator(), shuffle=False))
    assert len(plain) == 5  # without the slots: 14 rows in steps of 3


def test_first_epoch_runs_in_sampled_order_and_later_ones_are_reshuffled():
    from learners.batching import iter_minibatches

    def first_two_passes(**kwargs):
        steps = list(iter_minibatches({"m": {Columns.OBS: torch.arange(20)}}, {"m": 5}, num_epochs=2,
                                      generator=torch.Generator().manual_seed(3), shuffle=True, **kwargs))
        rows = torch.cat([s["m"][Columns.OBS] for s in steps]).tolist()
        return rows[:20], rows[20:]

    first, second = first_two_passes()
    assert first == list(range(20))  # RLlib's first epoch: the batch as sampled
    assert sorted(second) == list(range(20)) and second != first
    first, second = first_two_passes(shuffle_first_epoch=True)
    assert sorted(first) == list(range(20)) and first != list(range(20))


@pytest.mark.parametrize("include", [True, False])
def test_ppo_gradient_steps_count_rllibs_bootstrap_rows(include):
    # 4 segments of 10 steps, minibatch 8, 3 epochs: RLlib walks 44 rows per epoch.
    learner = cartpole_learner(minibatch_size=8, num_epochs=3, minibatches_include_bootstrap_steps=include)
    n, segments = 40, 4
    result = learner.update_from_samples({"p0": fake_samples(n_segments=segments, seg_len=10)})
    slots = n + segments if include else n
    assert result["__all_modules__"]["num_gradient_steps"] == -(-3 * slots // 8)  # 17 with the slots, 15 without
    assert result["p0"]["num_module_steps_trained"] == n


@pytest.mark.parametrize("masked", [False, True])
def test_fast_categorical_terms_equal_torch_distributions_bit_for_bit(masked):
    from learners.ppo_learner import categorical_logp_entropy_kl
    from marl.distributions import TorchCategorical

    torch.manual_seed(0)
    logits = torch.randn(64, 5, requires_grad=True)
    old = torch.randn(64, 5)
    if masked:  # an action mask as the default modules apply it
        mask = torch.rand(64, 5) < 0.3
        mask[:, 0] = False
        logits_in = logits.masked_fill(mask, torch.finfo(torch.float32).min)
        old = old.masked_fill(mask, torch.finfo(torch.float32).min)
    else:
        logits_in = logits
    actions = torch.distributions.Categorical(logits=old).sample()

    def generic():
        dist, old_dist = TorchCategorical.from_logits(logits_in), TorchCategorical.from_logits(old)
        return dist.logp(actions), dist.entropy(), old_dist.kl(dist)

    for fast, slow in zip(categorical_logp_entropy_kl(logits_in, old, actions, with_kl=True), generic()):
        assert torch.equal(fast, slow)
        g_fast, = torch.autograd.grad(fast.sum(), logits, retain_graph=True)
        g_slow, = torch.autograd.grad(slow.sum(), logits, retain_graph=True)
        assert torch.equal(g_fast, g_slow)
    assert categorical_logp_entropy_kl(logits_in, old, actions, with_kl=False)[2] is None
