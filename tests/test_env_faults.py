"""Bad envs lose an episode, not the run: hangs, NaN/inf values, interrupts with workers."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from envs.multi_agent_cartpole import MultiAgentCartPole
from envs.sampling import EnvRunnerGroup, MultiAgentEnvRunner, NonFiniteEnvValueError
from marl import Algorithm, DefaultModelConfig, PPOConfig
from marl.core import DEFAULT_MODULE_ID, Columns
from tests.test_env_runner_support import tiny_spec


class HangsOnce(MultiAgentCartPole):
    """Env 1's third step hangs (in Python) once per process, or once per marker file."""

    def __init__(self, config=None):
        config = dict(config or {})
        self.marker = config.pop("marker", None)
        self.uninterruptible = config.pop("uninterruptible", False)
        super().__init__(config)
        self.steps = 0

    def step(self, actions):
        self.steps += 1
        if self.steps == 3 and self.marker and not os.path.exists(self.marker):
            Path(self.marker).write_text("hung")
            if self.uninterruptible:  # like a hang in C code: no signal reaches Python
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(3600)
        return super().step(actions)


def hangs_once(config):
    return HangsOnce(config)


def test_a_hung_env_is_recreated_within_the_timeout_and_counted(tmp_path, caplog):
    runner = MultiAgentEnvRunner(env_creator=hangs_once, env_config={"num_agents": 2, "marker": str(tmp_path / "m")},
                                 module_spec=tiny_spec(), num_envs=2, seed=1, sample_timeout_s=0.5)
    started = time.monotonic()
    with caplog.at_level("WARNING"):
        batches, metrics = runner.sample(num_timesteps=40)
    assert time.monotonic() - started < 10
    assert metrics["num_env_hangs"] == 1 and metrics["num_episodes_dropped"] == 1
    assert "hung in step() for more than 0.5 s" in caplog.text and "env 0" in caplog.text
    assert metrics["num_env_steps_sampled"] == 39  # the hung step did not happen
    # The dropped episode's rows are gone; the batch is still consistent.
    assert int(batches[DEFAULT_MODULE_ID][Columns.SEQ_LENS].sum()) == len(batches[DEFAULT_MODULE_ID][Columns.EPS_ID])
    # The deadline is switched off between calls: no stray SIGALRM later.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_worker_recovers_a_hung_env_itself(tmp_path):
    kwargs = dict(env_creator=hangs_once, env_config={"num_agents": 2, "marker": str(tmp_path / "m")},
                  module_spec=tiny_spec(), num_envs=2, seed=1)
    with EnvRunnerGroup(1, kwargs, sample_timeout_s=0.5) as group:
        _, metrics = group.sample(40)
        assert metrics["num_env_hangs"] == 1
        assert metrics["num_env_runner_restarts"] == 0


def test_a_worker_hung_outside_python_is_restarted_by_its_watchdog(tmp_path, caplog):
    kwargs = dict(env_creator=hangs_once, module_spec=tiny_spec(), num_envs=1, seed=1,
                  env_config={"num_agents": 2, "marker": str(tmp_path / "m"), "uninterruptible": True})
    with EnvRunnerGroup(1, kwargs, sample_timeout_s=0.5) as group:
        started = time.monotonic()
        with caplog.at_level("WARNING"):
            batches, metrics = group.sample(20)
        assert time.monotonic() - started < 60
        assert metrics["num_env_runner_restarts"] == 1
        assert "watchdog" in caplog.text
        assert metrics["num_env_steps_sampled"] == 20  # retried on the new worker


class NaNAt(MultiAgentCartPole):
    """Agent 1 of env 1 sees a NaN observation (or reward) at episode step 4 of its first episode."""

    def __init__(self, config=None):
        config = dict(config or {})
        self.what = config.pop("what")
        super().__init__(config)
        self.t = 0
        self.episodes = 0

    def reset(self, seed=None, options=None):
        self.t = 0
        self.episodes += 1
        return super().reset(seed=seed, options=options)

    def step(self, actions):
        obs, rew, term, trunc, info = super().step(actions)
        self.t += 1
        if self.t == 4 and self.episodes == 1 and 1 in obs:
            if self.what == "obs":
                obs[1] = np.full_like(obs[1], np.nan)
            elif self.what == "reward":
                rew[1] = float("inf")
        return obs, rew, term, trunc, info


@pytest.mark.parametrize("what", ["obs", "reward"])
def test_nonfinite_env_values_raise_naming_env_agent_and_step(what):
    envs_made = []

    def make(config):
        env = NaNAt({**config, "what": what if not envs_made else "none"})
        envs_made.append(env)
        return env

    runner = MultiAgentEnvRunner(env_creator=make, env_config={"num_agents": 2}, module_spec=tiny_spec(),
                                 num_envs=2, seed=0)
    with pytest.raises(NonFiniteEnvValueError) as err:
        runner.sample(num_timesteps=20)
    message = str(err.value)
    assert "env 0" in message and "agent 1" in message and "episode step 4" in message
    assert ("observation" if what == "obs" else "reward") in message


@pytest.mark.parametrize("what", ["obs", "reward"])
def test_nonfinite_env_values_can_drop_the_episode_instead(what):
    runner = MultiAgentEnvRunner(env_creator=lambda c: NaNAt({**c, "what": what}), env_config={"num_agents": 2},
                                 module_spec=tiny_spec(), num_envs=2, seed=0, nonfinite_env_values="drop_episode")
    batches, metrics = runner.sample(num_timesteps=40)
    batch = batches[DEFAULT_MODULE_ID]
    assert metrics["num_episodes_dropped"] == 2  # one per env
    assert metrics["num_env_steps_sampled"] == 40
    assert np.isfinite(batch[Columns.OBS]).all() and np.isfinite(batch[Columns.REWARDS]).all()


def test_nonfinite_env_values_option_is_validated():
    with pytest.raises(ValueError, match="nonfinite_env_values.*'ignore'"):
        MultiAgentEnvRunner(env_creator=MultiAgentCartPole, module_spec=tiny_spec(), nonfinite_env_values="ignore")


class Slow(MultiAgentCartPole):
    def step(self, actions):
        time.sleep(0.01)
        return super().step(actions)


def slow_cartpole(config):
    return Slow(config)


def test_ctrl_c_with_workers_then_train_and_save_again(tmp_path):
    config = (PPOConfig().environment(slow_cartpole, env_config={"num_agents": 2})
              .env_runners(num_env_runners=2, num_envs_per_env_runner=2)
              .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8]))
              .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
              .debugging(seed=0))
    algo = config.build()
    try:
        algo.train()
        pids = [w.process.pid for w in algo.env_runner_group._workers]

        def ctrl_c():  # what a terminal does: SIGINT to every process of the group
            for pid in pids:
                os.kill(pid, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(0.3, ctrl_c)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            for _ in range(20):
                algo.train()
        timer.join()
        assert algo.env_runner_group.num_healthy_workers == 2, "workers ignore SIGINT"
        iteration = algo.iteration
        result = algo.train()  # replies to the interrupted request are recognised and dropped
        assert result["training_iteration"] == iteration + 1
        assert result["env_runners"]["num_env_steps_sampled"] == 200
        assert result["env_runners"]["num_env_runner_restarts"] == 0
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        restored = Algorithm.from_checkpoint(path, config=config)
        assert restored.iteration == iteration + 1
        restored.stop()
    finally:
        algo.stop()


def test_someone_elses_alarm_survives_a_sample_call():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        runner = MultiAgentEnvRunner(env_creator=MultiAgentCartPole, env_config={"num_agents": 2},
                                     module_spec=tiny_spec(), num_envs=2, seed=0, sample_timeout_s=5.0)
        runner.sample(num_timesteps=20)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0 or fired, "their alarm was cancelled"
        deadline = time.monotonic() + 3
        while not fired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
