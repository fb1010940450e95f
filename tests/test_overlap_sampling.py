"""overlap_sampling: workers sample the next batch while the learner trains on this one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from envs import MultiAgentCartPole
from marl import DefaultModelConfig, PPOConfig
from marl.algorithms.algorithm_config import ConfigError


def config(overlap: bool = True, runners: int = 1) -> PPOConfig:
    return (PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
            .env_runners(num_env_runners=runners, num_envs_per_env_runner=2, overlap_sampling=overlap)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8]))
            .training(train_batch_size_per_learner=100, minibatch_size=50, num_epochs=1, lr=1e-2)
            .debugging(seed=0))


def flat(weights) -> torch.Tensor:
    return torch.cat([torch.as_tensor(v).flatten() for m in sorted(weights) for k, v in sorted(weights[m].items())])


def test_the_batch_of_iteration_k_plus_1_is_sampled_with_the_weights_iteration_k_started_from(monkeypatch):
    algo = config().build()
    try:
        group = algo.env_runner_group
        sent = []
        original = group.start_sample
        monkeypatch.setattr(group, "start_sample", lambda n, **kw: (sent.append(flat(kw["weights"])),
                                                                     original(n, **kw))[1])
        started_from = []
        for _ in range(3):
            started_from.append(flat(algo.learner_group.get_weights()))
            result = algo.train()
            assert result["env_runners"]["num_env_steps_sampled"] == 100
        # Iteration 1 samples its own batch, then each iteration k starts the batch of k+1
        # with the weights it started from (one update behind the learner).
        assert len(sent) == 4
        assert torch.equal(sent[0], started_from[0]) and torch.equal(sent[1], started_from[0])
        assert torch.equal(sent[2], started_from[1]) and torch.equal(sent[3], started_from[2])
        assert not torch.equal(started_from[1], started_from[0]), "the learner did update"
        assert group.sample_in_flight
    finally:
        algo.stop()


def test_a_checkpoint_keeps_the_batch_sampled_ahead_for_the_next_iteration_and_says_resume_is_not_exact(tmp_path):
    algo = config().build()
    try:
        algo.train()
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        state = json.loads((Path(path) / "env_runner" / "state.json").read_text())
        assert state["exact_resume"] is False and "overlap_sampling" in state["reason"]
        assert not algo.env_runner_group.sample_in_flight and algo._prefetched is not None
        result = algo.train()  # trains on the batch collected for the save: nothing lost
        assert result["env_runners"]["num_env_steps_sampled"] == 100
        assert result["num_env_steps_sampled_lifetime"] == 200
        result = algo.evaluate()
        assert algo.train()["num_env_steps_sampled_lifetime"] == 300
    finally:
        algo.stop()


def test_overlap_needs_worker_processes():
    with pytest.raises(ConfigError, match=r"overlap_sampling=True: .*num_env_runners >= 1"):
        config(runners=0).build()
