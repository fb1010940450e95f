"""Data-parallel learners (num_learners > 0): K learners on K shards take the
step one learner takes on the whole batch; checkpoints cross between setups."""
from __future__ import annotations

import builtins
import math

import pytest
import torch

from marl import DefaultModelConfig, PPOConfig
from marl.algorithms.algorithm_config import ConfigError
from marl.algorithms.dqn import DQNConfig
from marl.models import shared_encoder_module_spec

from learners.learner import NonFiniteLossError
from learners.learner_group import LearnerGroup, resolve_learner_backend
from learners.learner_worker import unpack_state
from learners.ppo_learner import PPOTorchLearner

SPREAD = "mpe2.simple_spread_v3"
AGENTS = ["agent_0", "agent_1", "agent_2"]
ROWS = 100  # env steps per sample: every agent acts every step, so each module has 100 rows


def agent_policy(agent_id, episode, **kw):
    return agent_id


def spread_config(*, num_learners: int, shared_encoder: bool = False, learner_class=None) -> PPOConfig:
    config = (
        PPOConfig()
        .environment(SPREAD, env_config={"N": 3, "max_cycles": 25})
        .multi_agent(policies=set(AGENTS), policy_mapping_fn=agent_policy)
        .training(train_batch_size_per_learner=ROWS // max(1, num_learners), num_epochs=3, lr=1e-3,
                  use_kl_loss=True, kl_target=1e-4)
        .learners(num_learners=num_learners, backend="processes")
        .debugging(seed=3)
    )
    model = DefaultModelConfig(fcnet_hiddens=[16])
    if shared_encoder:
        config.rl_module(rl_module_spec=shared_encoder_module_spec(AGENTS, model))
    else:
        config.rl_module(model_config=model)
    if learner_class is not None:
        config.training(learner_class=learner_class)
    return config


def weights(state):
    return {f"{mid}.{k}": v for mid, s in state["rl_module"].items() for k, v in s.items()}


def assert_same_weights(a, b, atol=1e-5):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(torch.as_tensor(wa[key]), torch.as_tensor(wb[key]), atol=atol, rtol=0), key


def remote_states(group: LearnerGroup):
    return [unpack_state(blob) for blob in group._remote.call_all("get_state")]


@pytest.mark.parametrize("shared_encoder", [False, True], ids=["per-module-optimizers", "single-optimizer"])
def test_two_learners_on_half_batches_take_one_learners_step(shared_encoder):
    single = spread_config(num_learners=0, shared_encoder=shared_encoder).build()
    try:
        samples, _ = single.env_runner_group.sample(ROWS)
        assert {len(b["actions"]) for b in samples.values()} == {ROWS}
        config = spread_config(num_learners=2, shared_encoder=shared_encoder)
        group = LearnerGroup(config=config, learner_class=config.get_learner_class(), module_spec=single.module_spec)
        try:
            assert group.learner.shared_optimizer is shared_encoder
            start = single.learner_group.get_state()
            group.set_state(start)
            ddp_results = group.update_from_samples(samples)
            one_results = single.learner_group.update_from_samples(samples)

            after = single.learner_group.get_state()
            moved = max(float((weights(after)[k] - weights(start)[k]).abs().max()) for k in weights(start))
            assert moved > 1e-3  # the update did change the weights
            assert_same_weights(group.get_state(), after)
            for rank_state in remote_states(group):  # every learner holds the same weights
                assert_same_weights(rank_state, after)
            for mid in AGENTS:
                one, ddp = one_results[mid], ddp_results[mid]
                assert math.isclose(ddp["total_loss"], one["total_loss"], rel_tol=1e-4, abs_tol=1e-6)
                # averaged, not summed, gradients (Adam's step alone could not tell them apart)
                assert math.isclose(ddp["gradients_global_norm"], one["gradients_global_norm"], rel_tol=1e-4)
                assert ddp["num_module_steps_trained"] == one["num_module_steps_trained"] == ROWS
                # KL coefficients adapted from the averaged KL: the same on both setups
                assert group.learner.kl_coeffs[mid] == single.learner.kl_coeffs[mid]
                assert ddp["curr_kl_coeff"] == one["curr_kl_coeff"]
        finally:
            group.stop()
    finally:
        single.stop()


def test_an_update_interrupted_by_ctrl_c_never_counts():
    """The remote learners finish an update whose caller was interrupted; the next update
    starts from the local copy (the state before it), so one update is one step."""
    single = spread_config(num_learners=0).build()
    config = spread_config(num_learners=2)
    group = LearnerGroup(config=config, learner_class=config.get_learner_class(), module_spec=single.module_spec)
    try:
        samples, _ = single.env_runner_group.sample(ROWS)
        group.set_state(single.learner_group.get_state())
        remote = group._remote
        real_call_all = remote.call_all

        def interrupted_after_the_update(method, *args):
            result = real_call_all(method, *args)
            if method == "update_from_samples":
                remote.call_all = real_call_all
                raise KeyboardInterrupt
            return result

        remote.call_all = interrupted_after_the_update
        with pytest.raises(KeyboardInterrupt):
            group.update_from_samples(samples)
        assert_same_weights(group.get_state(), single.learner_group.get_state(), atol=0)  # local: untouched
        group.update_from_samples(samples)
        single.learner_group.update_from_samples(samples)
        for rank_state in remote_states(group):
            assert_same_weights(rank_state, single.learner_group.get_state())
    finally:
        group.stop()
        single.stop()


class NaNOnSecondLearner(PPOTorchLearner):
    """A loss that is NaN on rank 1 only: rank 0 must not wait forever in the all-reduce."""

    def compute_loss_for_module(self, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id, config, batch, fwd_out)
        if self.distributed is not None and self.distributed.rank == 1:
            loss = loss * float("nan")
        return loss


def test_nan_loss_on_one_learner_stops_every_learner_and_rolls_back():
    config = spread_config(num_learners=2, learner_class=NaNOnSecondLearner)
    algo = config.build()
    try:
        before = [weights(s) for s in remote_states(algo.learner_group)]
        with pytest.raises(NonFiniteLossError, match="non-finite"):
            algo.train()
        after = [weights(s) for s in remote_states(algo.learner_group)]
        for b, a in zip(before, after):
            assert all(torch.equal(b[k], a[k]) for k in b)
        assert all(torch.equal(before[0][k], weights(algo.learner_group.get_state())[k]) for k in before[0])
    finally:
        algo.stop()


def test_hand_edited_local_weights_reach_the_remote_learners():
    algo = spread_config(num_learners=2).build()
    try:
        with torch.no_grad():
            for p in algo.get_module("agent_0").parameters():
                p.fill_(0.25)
        algo.train()
        # Adam's first steps move a weight by at most ~lr * num_epochs * minibatches: a weight
        # that started from the remote learners' own (random) init could not be this close.
        for state in remote_states(algo.learner_group):
            for value in state["rl_module"]["agent_0"].values():
                assert float((value - 0.25).abs().max()) < 0.05
    finally:
        algo.stop()


def test_num_learners_samples_train_batch_size_per_learner_per_learner():
    config = spread_config(num_learners=2)
    assert config.total_train_batch_size == ROWS
    assert spread_config(num_learners=0).total_train_batch_size == ROWS


def test_off_policy_algorithms_refuse_several_learners():
    with pytest.raises(ConfigError, match=r"num_learners=2.*DQNConfig"):
        DQNConfig().environment("CartPole-v1").learners(num_learners=2).validate()


def test_bad_learner_settings_are_named():
    with pytest.raises(ConfigError, match="learner_backend"):
        PPOConfig().environment("CartPole-v1").learners(backend="mpi").validate()
    with pytest.raises(ConfigError, match="num_gpus_per_learner"):
        PPOConfig().environment("CartPole-v1").learners(num_gpus_per_learner=-1).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_learner_without_cuda_says_so():
    with pytest.raises(RuntimeError, match=r"num_gpus_per_learner=1.*torch.cuda.is_available\(\) is False"):
        PPOConfig().environment("CartPole-v1").learners(num_gpus_per_learner=1).build()


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        resolve_learner_backend("ray")
    assert resolve_learner_backend("auto") == "processes"


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def module_outputs(algo, obs):
    return {mid: algo.get_module(mid).forward_inference({"obs": obs})["action_dist_inputs"] for mid in AGENTS}


def test_checkpoints_cross_between_ray_learners_and_a_local_learner(tmp_path, local_ray):
    obs = torch.randn(7, 18)
    ray_algo = spread_config(num_learners=2).learners(backend="ray").build()
    local = spread_config(num_learners=0).build()
    try:
        assert type(ray_algo.learner_group._remote).__name__ == "RayLearners"
        ray_algo.train()
        local.restore_from_path(ray_algo.save_to_path(str(tmp_path / "from_ray")))
        expected = module_outputs(ray_algo, obs)
        for mid, out in module_outputs(local, obs).items():
            assert torch.equal(out, expected[mid]), mid
        assert_same_weights(local.learner_group.get_state(), ray_algo.learner_group.get_state(), atol=0)

        local.train()
        ray_algo.restore_from_path(local.save_to_path(str(tmp_path / "from_local")))
        expected = module_outputs(local, obs)
        for mid, out in module_outputs(ray_algo, obs).items():
            assert torch.equal(out, expected[mid]), mid
        for rank_state in remote_states(ray_algo.learner_group):  # the restore reached every learner
            assert_same_weights(rank_state, local.learner_group.get_state(), atol=0)
            assert rank_state["optimizer"].keys() == local.learner_group.get_state()["optimizer"].keys()
        ray_algo.train()  # and training goes on from it
    finally:
        ray_algo.stop()
        local.stop()


def test_check_cuda_script_runs_its_checks_and_says_when_there_is_no_gpu(capsys):
    from scripts.check_cuda import main

    assert main(["--cpu-dry-run", "--iterations", "1"]) == 0
    out = capsys.readouterr().out
    assert "first update" in out and "OK" in out and "FAILED" not in out
    if not torch.cuda.is_available():
        assert main([]) == 2
        assert "CUDA is not available" in capsys.readouterr().out
