"""Ray actors as an env-runner backend: same samples as the process pool, restarts, errors, factory.

The Ray tests share one local Ray instance and one group of actors (starting
actors costs seconds). Faults are injected through "tripwire" files: the env
or the mapping function of every runner checks a directory, and the first
runner to find a file there consumes it and fails, so exactly one actor dies
(or hangs, or raises) exactly once, in the middle of a sample.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from envs import worker_pool
from envs.multi_agent_cartpole import MultiAgentCartPole
from envs.sampling import WorkerError
from envs.sampling.ray_pool import RayEnvRunnerGroup
from envs.worker_pool import EnvRunnerGroup, make_env_runner_group
from marl import MeanStdFilter
from marl.core import DEFAULT_MODULE_ID, Columns
from tests.test_env_runner_support import tiny_spec


class TripwireCartPole(MultiAgentCartPole):
    """MultiAgentCartPole whose ``step`` kills (``die``) or freezes (``hang``) its process
    the first time it finds that file in ``config["tripwire_dir"]``."""

    def __init__(self, config: dict) -> None:
        config = dict(config)
        self.tripwire_dir = Path(config.pop("tripwire_dir"))
        super().__init__(config)

    def step(self, actions: Any) -> Any:
        if _consume(self.tripwire_dir / "die"):
            os._exit(3)
        if _consume(self.tripwire_dir / "hang"):
            time.sleep(120)  # longer than the test waits: only the driver's timeout ends it
        return super().step(actions)


def tripwire_mapping_fn(agent_id: Any, episode: Any, tripwire_dir: str = "", **kwargs: Any) -> str:
    if episode.id_ >= 0 and _consume(Path(tripwire_dir) / "raise"):  # id -1: the space probe at start-up
        raise LookupError(f"tripwire_mapping_fn: no module for agent {agent_id!r}")
    return DEFAULT_MODULE_ID


def _consume(path: Path) -> bool:
    """Whether this call removed ``path`` (only one process can)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


def _kwargs(tripwire_dir: Path) -> dict:
    return {"env_creator": TripwireCartPole,
            "env_config": {"num_agents": 2, "tripwire_dir": str(tripwire_dir)},
            "policy_mapping_fn": functools.partial(tripwire_mapping_fn, tripwire_dir=str(tripwire_dir)),
            "env_to_module_connector": lambda env: MeanStdFilter(),  # statistics pooled across runners
            "module_spec": tiny_spec(), "num_envs": 2, "rollout_fragment_length": 10, "seed": 5}


def _assert_same(a: Any, b: Any, where: str = "batch") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=where)


def _zero_weights(group) -> dict:
    return {m: {k: torch.zeros_like(v) for k, v in sd.items()} for m, sd in group.get_weights().items()}


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tripwire_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tripwires")


@pytest.fixture(scope="module")
def ray_group(ray_session, tripwire_dir):
    group = make_env_runner_group(2, _kwargs(tripwire_dir), backend="ray", num_cpus_per_env_runner=0.5)
    yield group
    group.stop()


def test_ray_runners_sample_exactly_what_worker_processes_sample(ray_group, tripwire_dir):
    processes = make_env_runner_group(2, _kwargs(tripwire_dir), backend="processes")
    try:
        assert isinstance(ray_group, RayEnvRunnerGroup) and type(processes) is EnvRunnerGroup
        torch.manual_seed(0)
        weights = {m: {k: torch.randn_like(v) for k, v in sd.items()} for m, sd in ray_group.get_weights().items()}
        for group in (ray_group, processes):
            group.sync_weights(weights)
        # Timesteps twice (episodes go on across calls), overlapped sampling with weights riding
        # along, then whole episodes (so episode returns are compared too).
        results = {}
        for name, group in (("ray", ray_group), ("processes", processes)):
            first = group.sample(40)
            second = group.sample(40)
            group.start_sample(30, weights=weights)
            assert group.sample_in_flight
            results[name] = [first, second, group.finish_sample(), group.sample(num_episodes=3)]
        for (ray_b, ray_m), (proc_b, proc_m) in zip(results["ray"], results["processes"], strict=True):
            assert {int(e) >> 40 for e in ray_b[DEFAULT_MODULE_ID][Columns.EPS_ID]} == {1, 2}
            _assert_same(ray_b, proc_b)
            assert ray_m == proc_m
        episodes = results["ray"][3][1]
        assert episodes["num_episodes"] >= 3 and episodes["episode_return_mean"] > 0
        assert results["ray"][1][1]["num_env_steps_sampled_lifetime"] == 80
        ray_state = ray_group.get_state()
        assert ray_state["env_to_module"][DEFAULT_MODULE_ID]  # the filter statistics are compared too
        _assert_same(ray_state, processes.get_state(), "state")
    finally:
        processes.stop()


def test_weights_cross_the_object_store_once_per_sync(ray_group, ray_session, monkeypatch):
    puts = []
    real_put = ray_session.put
    monkeypatch.setattr(ray_session, "put", lambda value, **kw: puts.append(value) or real_put(value, **kw))
    ray_group.sync_weights(_zero_weights(ray_group))
    assert len(puts) == 1 and set(puts[0]) == {DEFAULT_MODULE_ID}
    assert all(isinstance(v, np.ndarray) for v in puts[0][DEFAULT_MODULE_ID].values())
    batch = ray_group.sample(20, explore=False)[0][DEFAULT_MODULE_ID]
    assert {int(e) >> 40 for e in batch[Columns.EPS_ID]} == {1, 2}  # both actors read the one copy
    assert (batch[Columns.ACTION_DIST_INPUTS] == 0).all()


def test_a_killed_actor_is_restarted_with_the_last_weights_and_counters(ray_group, ray_session):
    ray_group.sync_weights(_zero_weights(ray_group))
    lifetime = ray_group.sample(20)[1]["num_env_steps_sampled_lifetime"]
    before = ray_group.num_env_runner_restarts
    ray_session.kill(ray_group._workers[0].actor)
    batches, metrics = ray_group.sample(40)
    assert metrics["num_env_runner_restarts"] == before + 1
    assert metrics["num_env_steps_sampled"] == 40
    assert metrics["num_env_steps_sampled_lifetime"] == lifetime + 40
    assert metrics["num_healthy_env_runners"] == 2
    # Both runners contributed, the restarted one with the last synced (zero) weights.
    assert {int(e) >> 40 for e in batches[DEFAULT_MODULE_ID][Columns.EPS_ID]} == {1, 2}
    assert (batches[DEFAULT_MODULE_ID][Columns.ACTION_DIST_INPUTS] == 0).all()


def test_an_actor_that_dies_mid_sample_has_its_share_retried(ray_group, tripwire_dir):
    before = ray_group.num_env_runner_restarts
    (tripwire_dir / "die").touch()
    batches, metrics = ray_group.sample(40)
    assert not (tripwire_dir / "die").exists(), "no runner stepped into the tripwire"
    assert metrics["num_env_runner_restarts"] == before + 1
    assert metrics["num_env_steps_sampled"] == 40
    assert {int(e) >> 40 for e in batches[DEFAULT_MODULE_ID][Columns.EPS_ID]} == {1, 2}


def test_an_actor_that_does_not_answer_in_time_is_restarted(ray_group, tripwire_dir, monkeypatch):
    monkeypatch.setattr(ray_group, "sample_wait_s", 4.0)
    before = ray_group.num_env_runner_restarts
    (tripwire_dir / "hang").touch()
    started = time.monotonic()
    _, metrics = ray_group.sample(40)
    assert not (tripwire_dir / "hang").exists()
    assert time.monotonic() - started < 60  # the 120 s hang was cut short
    assert metrics["num_env_runner_restarts"] == before + 1
    assert metrics["num_env_steps_sampled"] == 40


def test_an_error_in_user_code_is_reraised_without_a_restart(ray_group, tripwire_dir):
    before = ray_group.num_env_runner_restarts
    (tripwire_dir / "raise").touch()
    with pytest.raises(WorkerError, match=r"(?s)raised:.*LookupError: tripwire_mapping_fn: no module for agent"):
        ray_group.sample(num_episodes=2)
    assert ray_group.num_env_runner_restarts == before  # a healthy actor is not restarted
    assert ray_group.num_healthy_workers == 2


def test_auto_backend_uses_ray_only_when_this_process_initialised_it(ray_session, monkeypatch):
    built = []
    monkeypatch.setattr(worker_pool, "RayEnvRunnerGroup", lambda n, kw, **o: built.append(("ray", n, o)))
    monkeypatch.setattr(worker_pool, "EnvRunnerGroup", lambda n, kw, **o: built.append(("processes", n, o)))
    make_env_runner_group(2, {}, num_cpus_per_env_runner=0.25, sample_timeout_s=5)
    make_env_runner_group(0, {})  # no runners: always the local runner
    monkeypatch.setattr(ray_session, "is_initialized", lambda: False)
    make_env_runner_group(2, {})
    monkeypatch.delitem(sys.modules, "ray")  # Ray not even imported: not initialised either
    make_env_runner_group(2, {}, backend="process")
    assert built == [("ray", 2, {"num_cpus_per_env_runner": 0.25, "sample_timeout_s": 5}),
                     ("processes", 0, {}), ("processes", 2, {}), ("processes", 2, {})]


def test_an_unknown_backend_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'processes', 'ray'\], got 'threads'"):
        make_env_runner_group(2, {}, backend="threads")


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        make_env_runner_group(2, _kwargs(tmp_path), backend="ray")
    # With no runners nothing needs Ray: the "ray" backend samples locally.
    local = RayEnvRunnerGroup(0, _kwargs(tmp_path))
    try:
        assert local.local_runner is not None
        assert local.sample(20)[1]["num_env_steps_sampled"] == 20
    finally:
        local.stop()


def test_the_ray_backend_starts_a_quiet_local_ray_only_when_none_is_running(ray_session, monkeypatch, caplog,
                                                                              tmp_path):
    calls = []

    class Started(Exception):
        pass

    def fake_init(**kwargs):
        calls.append(kwargs)
        raise Started  # stop before any actor starts: the call is what this test is about

    monkeypatch.setattr(ray_session, "init", fake_init)
    monkeypatch.setattr(ray_session, "is_initialized", lambda: False)
    with caplog.at_level("INFO", logger="envs.sampling"), pytest.raises(Started):
        make_env_runner_group(2, _kwargs(tmp_path), backend="ray")
    assert calls == [{"include_dashboard": False, "log_to_driver": False}]
    assert "starting a local Ray instance" in caplog.text


def _cartpole_policy(agent_id, episode, **kw):
    return f"p{agent_id}"


def test_an_algorithm_config_puts_its_runners_on_ray(ray_session):
    from marl import DefaultModelConfig, PPOConfig

    config = (PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
              .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=_cartpole_policy)
              .env_runners(num_env_runners=2, backend="ray", num_cpus_per_env_runner=0.5)
              .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8]))
              .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
              .debugging(seed=0))
    algo = config.build()
    try:
        assert isinstance(algo.env_runner_group, RayEnvRunnerGroup)
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] >= 200
        assert result["learners"]["p0"]["num_module_steps_trained"] > 0
    finally:
        algo.stop()


def test_a_bad_env_runner_backend_in_the_config_is_named():
    from marl import PPOConfig
    from marl.algorithms.algorithm_config import ConfigError

    with pytest.raises(ConfigError, match="env_runner_backend.*'threads'"):
        PPOConfig().environment("CartPole-v1").env_runners(backend="threads").validate()
