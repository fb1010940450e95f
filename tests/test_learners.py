"""Learners: advantage estimators, optimizer layout, updates, NaN handling."""
import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from marl import SHARED_ENCODER_ID, Columns, DefaultModelConfig, MultiRLModuleSpec, PPOConfig, RLModuleSpec, VPGConfig
from marl.models import DefaultPPOTorchRLModule, shared_encoder_module_spec
from learners import NonFiniteLossError, PPOTorchLearner, VPGTorchLearner
from learners.advantages import compute_gae, compute_returns_to_go
from learners.batching import chunk_into_sequences
from tests.guide_examples import shared_encoder_corrected as guide
from tests.state_compare import assert_same

OBS = gym.spaces.Box(-1.0, 1.0, (4,))
ACT = gym.spaces.Discrete(2)


def reference_gae(rewards, values, terminated_last, bootstrap, gamma, lam):
    """Textbook GAE over ONE segment."""
    n = len(rewards)
    adv = np.zeros(n)
    nxt_adv = 0.0
    for t in reversed(range(n)):
        if t == n - 1:
            next_v = 0.0 if terminated_last else bootstrap
        else:
            next_v = values[t + 1]
        delta = rewards[t] + gamma * next_v - values[t]
        nxt_adv = delta + gamma * lam * (nxt_adv if t < n - 1 else 0.0)
        adv[t] = nxt_adv
    return adv


def test_gae_matches_reference_per_segment_with_bootstrap_only_on_non_termination():
    rng = np.random.default_rng(0)
    seq_lens = np.array([3, 5, 1, 4])
    n = seq_lens.sum()
    rewards, values = rng.normal(size=n), rng.normal(size=n)
    boot = rng.normal(size=4)
    terminated = np.zeros(n, bool)
    ends = np.cumsum(seq_lens) - 1
    terminated[ends[0]] = True  # first segment terminated, others truncated/cut
    terminated[ends[2]] = True
    adv, targets = compute_gae(rewards, values, terminated, seq_lens, boot, 0.9, 0.8)
    start = 0
    for i, length in enumerate(seq_lens):
        sl = slice(start, start + length)
        ref = reference_gae(rewards[sl], values[sl], terminated[ends[i]], boot[i], 0.9, 0.8)
        np.testing.assert_allclose(adv[sl], ref, rtol=1e-5, atol=1e-5)
        start += length
    np.testing.assert_allclose(targets, adv + values, rtol=1e-5, atol=1e-5)


def test_returns_to_go_reset_at_segment_ends():
    rewards = np.array([1.0, 1.0, 1.0, 2.0, 2.0])
    terminated = np.array([False, False, True, False, True])
    out = compute_returns_to_go(rewards, terminated, np.array([3, 2]), None, gamma=0.5)
    np.testing.assert_allclose(out, [1.75, 1.5, 1.0, 3.0, 2.0])


def test_sequences_are_cut_padded_and_masked():
    batch = {
        Columns.OBS: np.arange(7, dtype=np.float32)[:, None],
        Columns.STATE_IN: {"h": np.arange(7, dtype=np.float32)[:, None] * 10},
        Columns.SEQ_LENS: np.array([5, 2]),
    }
    seq = chunk_into_sequences(batch, max_seq_len=3)
    assert seq[Columns.OBS].shape == (3, 3, 1)
    np.testing.assert_array_equal(seq[Columns.LOSS_MASK], [[1, 1, 1], [1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(seq[Columns.OBS][1, :2, 0], [3, 4])
    np.testing.assert_array_equal(seq[Columns.STATE_IN]["h"][:, 0], [0, 30, 50])  # state at chunk start


def fake_samples(n_segments=4, seg_len=8, obs_dim=4, seed=0):
    rng = np.random.default_rng(seed)
    n = n_segments * seg_len
    logits = rng.normal(size=(n, 2)).astype(np.float32)
    actions = rng.integers(0, 2, size=n)
    logp = logits[np.arange(n), actions] - np.log(np.exp(logits).sum(-1))
    terminated = np.zeros(n, bool)
    terminated[seg_len - 1 :: seg_len] = True
    return {
        Columns.OBS: rng.uniform(-1, 1, size=(n, obs_dim)).astype(np.float32),
        Columns.ACTIONS: actions,
        Columns.ACTION_LOGP: logp.astype(np.float32),
        Columns.ACTION_DIST_INPUTS: logits,
        Columns.REWARDS: rng.normal(size=n).astype(np.float32),
        Columns.TERMINATEDS: terminated,
        Columns.TRUNCATEDS: np.zeros(n, bool),
        Columns.SEQ_LENS: np.full(n_segments, seg_len),
        "bootstrap_obs": rng.uniform(-1, 1, size=(n_segments, obs_dim)).astype(np.float32),
    }


def ready_made_spec():
    spec = shared_encoder_module_spec(["p0", "p1"], DefaultModelConfig(fcnet_hiddens=[16], head_fcnet_hiddens=[8]))
    spec.observation_space, spec.action_space = OBS, ACT
    return spec


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_shared_encoder_gets_one_optimizer_and_one_update_moves_encoder_and_every_head():
    config = PPOConfig().training(minibatch_size=16, num_epochs=2)
    learner = PPOTorchLearner(config=config, module_spec=ready_made_spec())
    learner.build()
    assert learner.shared_optimizer and list(learner.optimizers) == ["__all_modules__/default_optimizer"]
    ids = [id(p) for o in learner.optimizers.values() for g in o.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(learner.module.parameters()))
    before = {mid: snapshot(learner.module[mid]) for mid in learner.module.keys()}
    results = learner.update_from_samples({"p0": fake_samples(seed=1), "p1": fake_samples(seed=2)})
    for mid in (SHARED_ENCODER_ID, "p0", "p1"):
        after = learner.module[mid].state_dict()
        assert any(not torch.equal(after[k], before[mid][k]) for k in after), mid
    assert {"policy_loss", "vf_loss", "entropy", "mean_kl_loss"} <= set(results["p0"])
    assert results["p0"]["num_module_steps_trained"] == 32


def test_per_module_mode_refuses_shared_parameters_and_says_how_to_switch():
    config = PPOConfig().learners(shared_optimizer=False)
    spec = ready_made_spec()
    learner = PPOTorchLearner(config=config, module_spec=spec)
    # Tie p1's policy head to p0's: a parameter reachable from two modules.
    learner._module = spec.build()
    learner._module["p1"].pi = learner._module["p0"].pi
    with pytest.raises(ValueError, match="shared_optimizer=True") as err:
        learner.build()
    assert "two optimizers" in str(err.value)


def test_independent_modules_get_one_optimizer_each():
    spec = MultiRLModuleSpec(
        rl_module_specs={
            mid: RLModuleSpec(DefaultPPOTorchRLModule, OBS, ACT, model_config={"fcnet_hiddens": [8]})
            for mid in ("p0", "p1")
        }
    )
    learner = PPOTorchLearner(config=PPOConfig(), module_spec=spec)
    learner.build()
    assert not learner.shared_optimizer
    assert sorted(learner.optimizers) == ["p0/default_optimizer", "p1/default_optimizer"]


def test_policies_to_train_excludes_frozen_modules_from_updates():
    spec = MultiRLModuleSpec(
        rl_module_specs={
            mid: RLModuleSpec(DefaultPPOTorchRLModule, OBS, ACT, model_config={"fcnet_hiddens": [8]})
            for mid in ("p0", "p1")
        }
    )
    config = PPOConfig().multi_agent(policies_to_train=["p0"])
    learner = PPOTorchLearner(config=config, module_spec=spec)
    learner.build()
    frozen = snapshot(learner.module["p1"])
    learner.update_from_samples({"p0": fake_samples(), "p1": fake_samples(seed=3)})
    assert all(torch.equal(v, frozen[k]) for k, v in learner.module["p1"].state_dict().items())
    assert list(learner.optimizers) == ["p0/default_optimizer"]


def test_nan_loss_stops_the_update_naming_module_and_term():
    spec = MultiRLModuleSpec(
        rl_module_specs={"p0": RLModuleSpec(DefaultPPOTorchRLModule, OBS, ACT, model_config={"fcnet_hiddens": [8]})}
    )
    learner = PPOTorchLearner(config=PPOConfig(), module_spec=spec)
    learner.build()
    before = snapshot(learner.module["p0"])
    samples = fake_samples()
    samples[Columns.REWARDS][3] = np.nan
    with pytest.raises(NonFiniteLossError) as err:
        learner.update_from_samples({"p0": samples})
    assert "'p0'" in str(err.value) and "vf_loss" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in learner.module["p0"].state_dict().items())


def test_ppo_refuses_modules_without_value_function_naming_the_api():
    spec = MultiRLModuleSpec(
        multi_rl_module_class=guide.VPGMultiRLModuleWithSharedEncoder,
        rl_module_specs={
            SHARED_ENCODER_ID: RLModuleSpec(guide.SharedEncoder, OBS, None, model_config={"embedding_dim": 8}),
            "p0": RLModuleSpec(guide.VPGPolicyAfterSharedEncoder, OBS, ACT, model_config={"embedding_dim": 8, "hidden_dim": 8}),
        },
    )
    learner = PPOTorchLearner(config=PPOConfig(), module_spec=spec)
    with pytest.raises(TypeError, match="ValueFunctionAPI") as err:
        learner.update_from_samples({"p0": fake_samples()})
    assert "VPG" in str(err.value)
    vpg = VPGTorchLearner(config=VPGConfig(), module_spec=spec)
    vpg.build()
    enc_before = snapshot(vpg.module[SHARED_ENCODER_ID])
    vpg.update_from_samples({"p0": fake_samples()})
    assert vpg.shared_optimizer
    assert any(not torch.equal(v, enc_before[k]) for k, v in vpg.module[SHARED_ENCODER_ID].state_dict().items())


def test_learner_state_round_trip_restores_weights_and_optimizer():
    spec = ready_made_spec()
    a = PPOTorchLearner(config=PPOConfig(), module_spec=spec)
    a.update_from_samples({"p0": fake_samples(), "p1": fake_samples(seed=1)})
    b = PPOTorchLearner(config=PPOConfig(), module_spec=ready_made_spec())
    b.set_state(a.get_state())
    for mid in a.module.keys():
        for k, v in a.module[mid].state_dict().items():
            assert torch.equal(v, b.module[mid].state_dict()[k])
    # Same next update from the same state => same weights.
    samples = {"p0": fake_samples(seed=7), "p1": fake_samples(seed=8)}
    a.update_from_samples(samples)
    b.update_from_samples(samples)
    for k, v in a.module["p0"].state_dict().items():
        assert torch.equal(v, b.module["p0"].state_dict()[k])


def test_recurrent_module_trains_on_sequences_with_loss_mask():
    spec = MultiRLModuleSpec(
        rl_module_specs={
            "p0": RLModuleSpec(
                DefaultPPOTorchRLModule, OBS, ACT,
                model_config={"fcnet_hiddens": [8], "use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 5},
            )
        }
    )
    learner = PPOTorchLearner(config=PPOConfig().training(minibatch_size=10), module_spec=spec)
    learner.build()
    samples = fake_samples(n_segments=3, seg_len=7)
    n = len(samples[Columns.REWARDS])
    samples[Columns.STATE_IN] = {"h": np.zeros((n, 8), np.float32), "c": np.zeros((n, 8), np.float32)}
    samples["bootstrap_state_in"] = {"h": np.zeros((3, 8), np.float32), "c": np.zeros((3, 8), np.float32)}
    before = snapshot(learner.module["p0"])
    results = learner.update_from_samples({"p0": samples})
    assert results["p0"]["num_module_steps_trained"] == 21  # padding masked out
    assert any(not torch.equal(v, before[k]) for k, v in learner.module["p0"].state_dict().items())


# ------------------------------------------------ non-finite losses and gradients
def two_module_learner(**training):
    spec = MultiRLModuleSpec(
        rl_module_specs={
            mid: RLModuleSpec(DefaultPPOTorchRLModule, OBS, ACT, model_config={"fcnet_hiddens": [8]})
            for mid in ("p0", "p1")
        }
    )
    learner = PPOTorchLearner(config=PPOConfig().training(**training), module_spec=spec)
    learner.build()
    # One clean update first, so the Adam states the tests compare are not empty.
    learner.update_from_samples({"p0": fake_samples(seed=1), "p1": fake_samples(seed=2)})
    return learner


def full_state(learner):
    """Every weight, every optimizer state, the KL coefficients and the shuffling RNG."""
    return {
        "weights": snapshot(learner.module),
        "optimizers": {name: copy.deepcopy(opt.state_dict()) for name, opt in learner.optimizers.items()},
        "kl_coeffs": dict(learner.kl_coeffs),
        "generator": learner._generator.get_state(),
    }


def poison(learner, monkeypatch, module_id, how, at_call=1):
    """Make ``module_id``'s loss go wrong on its ``at_call``-th computation of the update."""
    original = type(learner).compute_loss_for_module
    calls = {"n": 0}

    def poisoned(self, mid, config, batch, fwd_out):
        loss = original(self, mid, config, batch, fwd_out)
        if mid != module_id:
            return loss
        calls["n"] += 1
        if calls["n"] < at_call:
            return loss
        if how == "nan_loss":
            self.register_metrics(mid, {"entropy": torch.tensor(float("nan"))})
            return loss * float("nan")
        if how == "nan_gradient":  # value stays finite; d sqrt(x)/dx at 0 is inf, times 0: NaN
            zero = sum(p.sum() for p in self.module[mid].parameters()) * 0.0
            return loss + torch.sqrt(zero) * 0.0
        raise KeyboardInterrupt

    monkeypatch.setattr(type(learner), "compute_loss_for_module", poisoned)


def test_nan_loss_of_the_second_module_leaves_every_weight_and_optimizer_state_as_before(monkeypatch):
    learner = two_module_learner()
    assert sorted(learner.optimizers) == ["p0/default_optimizer", "p1/default_optimizer"]
    before = full_state(learner)
    poison(learner, monkeypatch, "p1", "nan_loss")
    with pytest.raises(NonFiniteLossError) as err:
        learner.update_from_samples({"p0": fake_samples(seed=3), "p1": fake_samples(seed=4)})
    assert "'p1'" in str(err.value) and "entropy" in str(err.value) and "'p0'" not in str(err.value)
    assert err.value.module_ids == ["p1"] and "entropy" in err.value.terms["p1"]
    assert "no step had been taken" in str(err.value)
    assert_same(full_state(learner), before)


def test_nan_gradient_of_a_finite_loss_is_caught_before_any_optimizer_step(monkeypatch):
    learner = two_module_learner()
    before = full_state(learner)
    poison(learner, monkeypatch, "p1", "nan_gradient")
    with pytest.raises(NonFiniteLossError) as err:
        learner.update_from_samples({"p0": fake_samples(seed=3), "p1": fake_samples(seed=4)})
    message = str(err.value)
    assert "'p1'" in message and "gradient" in message and "every loss is finite" in message
    assert err.value.module_ids == ["p1"] and err.value.terms["p1"]  # the parameters' names
    assert_same(full_state(learner), before)


def test_nan_in_a_later_minibatch_rolls_back_the_whole_update(monkeypatch):
    learner = two_module_learner(minibatch_size=8, num_epochs=2)
    before = full_state(learner)
    poison(learner, monkeypatch, "p0", "nan_loss", at_call=3)
    with pytest.raises(NonFiniteLossError) as err:
        learner.update_from_samples({"p0": fake_samples(seed=3), "p1": fake_samples(seed=4)})
    assert "gradient step 3 of this update" in str(err.value)
    assert "its 2 earlier gradient step(s) undone" in str(err.value)
    assert_same(full_state(learner), before)


def test_an_interrupt_during_the_update_leaves_no_half_update(monkeypatch):
    learner = two_module_learner(minibatch_size=8, num_epochs=2)
    before = full_state(learner)
    poison(learner, monkeypatch, "p1", "interrupt", at_call=4)
    with pytest.raises(KeyboardInterrupt):
        learner.update_from_samples({"p0": fake_samples(seed=3), "p1": fake_samples(seed=4)})
    assert_same(full_state(learner), before)
