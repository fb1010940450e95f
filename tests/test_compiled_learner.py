"""torch_compile_learner: compiled updates equal eager ones, compile once, fall back safely."""
from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import learners.compiled_step as compiled_step
from envs import MultiAgentCartPole
from marl import DefaultModelConfig, PPOConfig
from marl.algorithms.algorithm_config import ConfigError


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def config(what: str = "complete_update", compile: bool = True) -> PPOConfig:
    return (PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
            .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, ep, **kw: f"p{aid}")
            .env_runners(num_envs_per_env_runner=2)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16, 16]))
            .training(train_batch_size_per_learner=200, minibatch_size=64, num_epochs=2, lr=1e-3)
            .framework(torch_compile_learner=compile, torch_compile_learner_what_to_compile=what)
            .debugging(seed=3))


def weights_of(algo) -> dict:
    state = algo.learner.module.state_dict()
    return {k: v.detach().clone() for k, v in state.items()}


def one_update(algo, samples) -> dict:
    return algo.learner.update_from_samples(samples)


@pytest.mark.parametrize("what", ["complete_update", "forward_train"])
def test_compiled_update_equals_the_eager_update_on_the_same_batch(what):
    eager, compiled = config(compile=False).build(), config(what=what).build()
    try:
        compiled.learner.set_state(eager.learner.get_state())
        samples, _ = eager.env_runner_group.sample(200)
        for _ in range(2):  # the second update runs with the KL coefficients the first adapted
            eager_results = one_update(eager, samples)
            compiled_results = one_update(compiled, samples)
        assert compiled.learner.is_compiled and not eager.learner.is_compiled
        assert counters["stats"]["unique_graphs"] >= 1  # something was really compiled
        before, after = weights_of(eager), weights_of(compiled)
        assert before.keys() == after.keys()
        for key in before:
            torch.testing.assert_close(after[key], before[key], rtol=1e-4, atol=1e-5, msg=key)
        for mid in ("p0", "p1"):
            for key in ("total_loss", "policy_loss", "vf_loss", "entropy", "mean_kl_loss", "curr_kl_coeff"):
                assert compiled_results[mid][key] == pytest.approx(eager_results[mid][key], rel=1e-4, abs=1e-6), key
    finally:
        eager.stop()
        compiled.stop()


def test_compiles_once_and_never_recompiles_across_iterations():
    algo = config().build()
    try:
        algo.train()  # compiles (the full minibatch shape, and once more for a smaller shape if any)
        graphs, frames = counters["stats"]["unique_graphs"], counters["frames"]["total"]
        assert graphs >= 1
        kl_coeffs = []
        for _ in range(3):
            algo.train()
            kl_coeffs.append(dict(algo.learner.kl_coeffs))
        assert any(c != {"p0": 0.2, "p1": 0.2} for c in kl_coeffs)  # the KL coefficients moved meanwhile
        assert counters["stats"]["unique_graphs"] == graphs
        assert counters["frames"]["total"] == frames
        assert not counters["recompiles"]
    finally:
        algo.stop()


def test_no_compiler_trains_eagerly_after_a_one_line_warning(monkeypatch, caplog):
    monkeypatch.setattr(compiled_step, "missing_compiler_reason", lambda backend: "no C++ compiler found")
    algo = config().build()
    try:
        with caplog.at_level(logging.WARNING, logger="marl"):
            result = algo.train()
        assert not algo.learner.is_compiled
        assert counters["stats"]["unique_graphs"] == 0
        assert result["learners"]["p0"]["num_module_steps_trained"] > 0
        notices = [r.getMessage() for r in caplog.records if "torch_compile_learner" in r.getMessage()]
        assert len(notices) == 1 and "training eagerly" in notices[0] and "no C++ compiler" in notices[0]
    finally:
        algo.stop()


def test_a_compile_that_fails_on_first_call_falls_back_to_the_eager_update(monkeypatch, caplog):
    class InductorFailure(RuntimeError):
        pass

    InductorFailure.__module__ = "torch._inductor.exc"

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise InductorFailure("C++ compile error: cc1plus not found")
        return run

    monkeypatch.setattr(compiled_step.torch, "compile", broken_compile)
    eager, failing = config(compile=False).build(), config().build()
    try:
        failing.learner.set_state(eager.learner.get_state())
        samples, _ = eager.env_runner_group.sample(200)
        with caplog.at_level(logging.WARNING, logger="marl"):
            one_update(failing, samples)
        one_update(eager, samples)
        assert not failing.learner.is_compiled
        assert any("cc1plus not found" in r.getMessage() for r in caplog.records)
        before, after = weights_of(eager), weights_of(failing)
        for key in before:  # the failed compile cost no step and took none twice
            assert torch.equal(after[key], before[key]), key
    finally:
        eager.stop()
        failing.stop()


def test_an_error_in_the_users_loss_is_raised_not_blamed_on_the_compiler(monkeypatch):
    algo = config().build()
    try:
        samples, _ = algo.env_runner_group.sample(200)

        def bad_loss(*args, **kwargs):
            raise ValueError("the user's loss is broken")

        monkeypatch.setattr(algo.learner, "compute_loss_for_module", bad_loss)
        with pytest.raises(ValueError, match="the user's loss is broken"):
            one_update(algo, samples)
    finally:
        algo.stop()


@pytest.mark.parametrize("key, value, named", [
    ("torch_compile_learner_what_to_compile", "everything", "'everything'"),
    ("torch_compile_learner", "yes", "'yes'"),
    ("torch_compile_learner_dynamo_mode", "fastest", "'fastest'"),
])
def test_bad_compile_settings_are_named(key, value, named):
    cfg = config().framework(**{key: value})
    with pytest.raises(ConfigError, match=key) as err:
        cfg.build()
    assert named in str(err.value)


def test_an_unknown_framework_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="torch_compile_lerner.*did you mean 'torch_compile_learner'"):
        PPOConfig().framework(torch_compile_lerner=True)
