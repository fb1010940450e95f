"""Resume equals the uninterrupted run, without pickle, on the envs the issue names.

Each case trains 3 iterations straight, and 1 iteration + save + restore into
a fresh Algorithm + 2 iterations; weights, losses and episode statistics must
match exactly. The batch sizes are chosen so that episodes are in flight at
the checkpoint (the hard case: the envs must be replayed to their state).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from marl import Algorithm, DefaultModelConfig, PPOConfig
from marl.connectors import FlattenObservations
from envs import MultiAgentCartPole

SMALL = DefaultModelConfig(fcnet_hiddens=[16])


def flatten_connector(env):
    return FlattenObservations()


def two_cartpoles(agent_id, episode, **kwargs):
    return f"p{agent_id}"


CASES = {
    "simple_spread": dict(env="mpe2.simple_spread_v3", env_config={"max_cycles": 30}),
    "connect_four": dict(env="pettingzoo.classic.connect_four_v3", env_config={},
                         connector=flatten_connector),
    "multi_agent_cartpole": dict(env=MultiAgentCartPole, env_config={"num_agents": 2},
                                 policies={"p0", "p1"}, mapping=two_cartpoles),
}


def make_config(case: str, runners: int, seed: int = 5) -> PPOConfig:
    spec = CASES[case]
    config = (
        PPOConfig()
        .environment(spec["env"], env_config=spec["env_config"])
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=2,
                     env_to_module_connector=spec.get("connector"))
        .rl_module(model_config=SMALL)
        .training(train_batch_size_per_learner=88, minibatch_size=64, num_epochs=1, lr=1e-3)
        .debugging(seed=seed)
    )
    if "policies" in spec:
        config = config.multi_agent(policies=spec["policies"], policy_mapping_fn=spec["mapping"])
    return config


def weights(algo) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in algo.get_module(None).parameters()])


def comparable(result) -> dict:
    runners = result["env_runners"]
    keys = ("num_env_steps_sampled_lifetime", "num_episodes", "episode_return_mean", "episode_len_mean",
            "num_episodes_lifetime", "num_agent_steps_sampled")
    learner = {mid: m.get("total_loss") for mid, m in result["learners"].items() if isinstance(m, dict)}
    return {**{k: runners.get(k) for k in keys}, "learners": learner}


@pytest.mark.parametrize("runners", [0, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_resume_equals_uninterrupted_run(case, runners, tmp_path):
    algo = make_config(case, runners).build()
    straight = [comparable(algo.train()) for _ in range(3)]
    w_straight = weights(algo)
    algo.stop()

    algo = make_config(case, runners).build()
    first = comparable(algo.train())
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    state = json.loads((Path(path) / "env_runner" / "state.json").read_text())
    assert state["exact_resume"] is True, state["reason"]
    in_flight = [r["in_flight"] for r in state["sampling"]["runners"]]
    assert all(in_flight), "the checkpoint should hold episodes in progress"
    assert not list(Path(path).rglob("*.pkl")), "no pickle in a checkpoint"

    resumed = Algorithm.from_checkpoint(path, config=make_config(case, runners))
    assert resumed.env_runner_group.last_resume_exact is True
    rest = [comparable(resumed.train()) for _ in range(2)]
    assert [first] + rest == straight
    assert torch.equal(weights(resumed), w_straight)
    resumed.stop()


def test_a_changed_env_config_is_honoured_and_the_resume_says_it_is_not_exact(tmp_path, caplog):
    algo = make_config("simple_spread", 0).build()
    algo.train()
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    changed = make_config("simple_spread", 0).environment("mpe2.simple_spread_v3",
                                                          env_config={"max_cycles": 40})
    changed = changed.env_runners(num_envs_per_env_runner=3)
    with caplog.at_level("WARNING"):
        resumed = Algorithm.from_checkpoint(path, config=changed)
    assert resumed.env_runner_group.last_resume_exact is False
    assert "not an exact resume" in caplog.text and "num_envs" in caplog.text
    runner = resumed.env_runner_group.local_runner
    assert runner.num_envs == 3 and runner.env_config["max_cycles"] == 40
    result = resumed.train()
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] > 88
    resumed.stop()


def test_an_env_that_is_not_deterministic_given_its_seed_falls_back_to_fresh_episodes(tmp_path, caplog):
    from envs.sampling import MultiAgentEnvRunner
    from tests.test_env_runner_support import tiny_spec

    class Noisy(MultiAgentCartPole):
        """Ignores the reset seed: a replay cannot reproduce its state."""

        def reset(self, seed=None, options=None):
            return super().reset(seed=int(np.random.default_rng().integers(1 << 30)), options=options)

    def make(seed):
        return MultiAgentEnvRunner(env_creator=lambda cfg: Noisy({"num_agents": 2}), seed=seed,
                                   module_spec=tiny_spec(),
                                   num_envs=2)

    runner = make(1)
    runner.sample(num_timesteps=10)
    data, arrays, reason = runner.get_sampling_state()
    assert reason is None and data["in_flight"]
    fresh = make(1)
    with caplog.at_level("WARNING"):
        assert fresh.set_sampling_state(data, arrays) is False
    assert "did not reach the saved state" in caplog.text
    batches, metrics = fresh.sample(num_timesteps=10)  # fresh episodes, no error
    assert metrics["num_env_steps_sampled"] == 10
