"""EnvRunnerGroup: local and worker-process env runners, merged results, restarts."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from envs.env_runner import BOOTSTRAP_OBS
from envs.multi_agent_cartpole import MultiAgentCartPole
from envs.sampling import EnvRunnerGroup, merge_metrics
from marl.core import DEFAULT_MODULE_ID, Columns
from tests.test_env_runner_support import ScriptedEnv, check_batch_layout, segments, tiny_spec


def _kwargs(**overrides):
    kwargs = dict(env_creator=MultiAgentCartPole, env_config={"num_agents": 2},
                  module_spec=tiny_spec(), num_envs=2, rollout_fragment_length=10, seed=5)
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(scope="module")
def group():
    g = EnvRunnerGroup(2, _kwargs())
    yield g
    g.stop()


def test_two_workers_return_merged_batches(group):
    batches, metrics = group.sample(40)
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    assert metrics["num_env_steps_sampled"] == 40  # 20 per worker, 2 envs each
    assert metrics["num_agent_steps_sampled"] == len(batch[Columns.EPS_ID])
    assert len(batch[BOOTSTRAP_OBS]) == len(batch[Columns.SEQ_LENS])
    # Episode ids carry the worker index: both workers contributed, none collide.
    workers = {int(e) >> 40 for e in batch[Columns.EPS_ID]}
    assert workers == {1, 2}
    eps_per_worker = {}
    for start, _ in segments(batch):
        eps = int(batch[Columns.EPS_ID][start])
        assert eps not in eps_per_worker
        eps_per_worker[eps] = eps >> 40
    assert metrics["num_healthy_env_runners"] == 2


def test_sync_weights_reaches_every_worker(group):
    weights = {DEFAULT_MODULE_ID: {k: torch.zeros_like(v) for k, v in
                                   group.get_weights()[DEFAULT_MODULE_ID].items()}}
    group.sync_weights(weights)
    batch = group.sample(20, explore=False)[0][DEFAULT_MODULE_ID]
    # Zero weights: zero logits everywhere, so greedy actions are all 0.
    assert (batch[Columns.ACTION_DIST_INPUTS] == 0).all()
    assert (batch[Columns.ACTIONS] == 0).all()
    state = group.get_state()
    assert all((np.asarray(v) == 0).all() for v in state["rl_module"][DEFAULT_MODULE_ID].values())


def test_a_dead_worker_is_restarted_and_counted(group):
    before = group.num_env_runner_restarts
    os.kill(group._workers[0].process.pid, signal.SIGKILL)
    group._workers[0].process.join(timeout=10)
    batches, metrics = group.sample(40)
    assert metrics["num_env_runner_restarts"] == before + 1
    assert metrics["num_env_steps_sampled"] == 40
    assert metrics["num_healthy_env_runners"] == 2
    # The restarted worker got the last synced (zero) weights.
    assert (batches[DEFAULT_MODULE_ID][Columns.ACTION_DIST_INPUTS] == 0).all()


def test_zero_workers_run_one_local_runner():
    g = EnvRunnerGroup(0, _kwargs(env_creator=ScriptedEnv, env_config={}))
    try:
        assert g.local_runner is not None and g.local_runner.worker_index == 0
        batches, metrics = g.sample(num_episodes=2)
        assert metrics["num_episodes"] >= 2 and batches[DEFAULT_MODULE_ID]
    finally:
        g.stop()


def test_unpicklable_creator_fails_with_a_clear_error(monkeypatch):
    import envs.sampling.worker as wp

    monkeypatch.setattr(wp, "_cloudpickle", None)  # plain pickle: lambdas cannot cross
    with pytest.raises(TypeError, match="env_creator.*picklable"):
        EnvRunnerGroup(2, _kwargs(env_creator=lambda cfg: MultiAgentCartPole(cfg)))


def test_merge_metrics_weights_means_by_episode_counts():
    a = {"num_episodes": 1, "episode_return_mean": 10.0, "episode_return_min": 10.0,
         "episode_return_max": 10.0, "episode_len_mean": 5.0, "num_env_steps_sampled": 7,
         "agent_episode_return_mean": {"x": 10.0}, "agent_episode_count": {"x": 1},
         "module_episode_return_mean": {"m": 10.0}, "module_episode_count": {"m": 1},
         "num_module_steps_sampled": {"m": 7}}
    b = {"num_episodes": 3, "episode_return_mean": 2.0, "episode_return_min": 1.0,
         "episode_return_max": 3.0, "episode_len_mean": 1.0, "num_env_steps_sampled": 3,
         "agent_episode_return_mean": {"x": 2.0}, "agent_episode_count": {"x": 3},
         "module_episode_return_mean": {"m": 2.0}, "module_episode_count": {"m": 3},
         "num_module_steps_sampled": {"m": 3}}
    m = merge_metrics([a, b, {"num_episodes": 0, "num_env_steps_sampled": 5}])
    assert m["episode_return_mean"] == pytest.approx(4.0)
    assert m["episode_return_min"] == 1.0 and m["episode_return_max"] == 10.0
    assert m["episode_len_mean"] == pytest.approx(2.0)
    assert m["agent_episode_return_mean"] == {"x": pytest.approx(4.0)}
    assert m["num_env_steps_sampled"] == 15 and m["num_episodes"] == 4
    assert m["num_module_steps_sampled"] == {"m": 10}
