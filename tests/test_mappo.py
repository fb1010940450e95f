"""MAPPO: the critic's recorded input, the critic module in the container, checkpoints."""
from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import MultiAgentCartPole
from envs.sampling.global_inputs import GlobalInput
from marl import (
    Algorithm,
    CentralCriticTorchRLModule,
    DefaultActorTorchRLModule,
    DefaultModelConfig,
    MAPPOConfig,
    PPOConfig,
    RLModule,
)
from marl.algorithms.algorithm_config import ConfigError
from marl.core.columns import (
    AGENT_INDEX, BOOTSTRAP_GLOBAL_INDEX, GLOBAL_INDEX, GLOBAL_OBS, Columns, bootstrap_global_rows, global_rows,
)
from marl.core.constants import DEFAULT_MODULE_ID
from tests.test_env_runner_support import SCRIPT, ScriptedEnv, make_runner, segments

SPREAD = "mpe2.simple_spread_v3"
AGENTS = list(SCRIPT)  # possible_agents order: a, b, c, late


class ScriptedStateEnv(ScriptedEnv):
    """ScriptedEnv with a global state ``[t, 100 + t]`` (PettingZoo's ``state()``)."""

    def __init__(self, config: Optional[dict] = None) -> None:
        super().__init__(config)
        self.state_space = gym.spaces.Box(-1e3, 1e3, (2,), np.float32)

    def state(self) -> np.ndarray:
        return np.array([self.t, 100 + self.t], np.float32)


def present(agent: str, t: int) -> bool:
    """Whether ``agent`` has an observation at env time ``t`` (alive, or its final one)."""
    first, n, _ = SCRIPT[agent]
    return first <= t <= first + n


def expected_joint_obs(t: int) -> np.ndarray:
    parts, mask = [], []
    for i, agent in enumerate(AGENTS):
        parts.append([i, t] if present(agent, t) else [0, 0])
        mask.append(1.0 if present(agent, t) else 0.0)
    return np.array(sum(parts, []) + mask, np.float32)


def expected_state(t: int) -> np.ndarray:
    return np.array([t, 100 + t], np.float32)


@pytest.mark.parametrize("kind, expected", [("joint_obs", expected_joint_obs), ("state", expected_state)])
def test_the_critic_input_of_every_row_is_the_global_input_at_that_step(kind, expected):
    runner = make_runner(ScriptedStateEnv, num_envs=2, global_input=kind)
    checked_boot = {"cut": 0, "truncated": 0}
    for _ in range(5):  # calls of 3 steps cut episodes mid-way
        batch = runner.sample(num_timesteps=6)[0][DEFAULT_MODULE_ID]
        obs = batch[Columns.OBS]
        for row in range(len(obs)):
            agent_index, t = int(obs[row, 0]), int(obs[row, 1])
            np.testing.assert_array_equal(global_rows(batch)[row], expected(t))
            assert batch[AGENT_INDEX][row] == agent_index
        for i, (start, end) in enumerate(segments(batch)):
            last_t = int(obs[end - 1, 1])
            boot = bootstrap_global_rows(batch)[i]
            if batch[Columns.TERMINATEDS][end - 1]:
                continue  # bootstraps from 0: whatever is stored is never used
            # truncated: the state at the final observation; cut by the call: at the next one.
            np.testing.assert_array_equal(boot, expected(last_t + 1))
            checked_boot["truncated" if batch[Columns.TRUNCATEDS][end - 1] else "cut"] += 1
    assert checked_boot["cut"] > 0 and checked_boot["truncated"] > 0


def test_agents_without_an_observation_are_zeros_with_a_zero_mask_bit():
    runner = make_runner(ScriptedStateEnv, global_input="joint_obs")
    batch = runner.sample(num_episodes=1)[0][DEFAULT_MODULE_ID]
    obs, joint = batch[Columns.OBS], global_rows(batch)
    # At t=6 only c acts: a (final observation at t=3), b (t=5) and late (t=5) are gone.
    row = int(np.flatnonzero((obs[:, 1] == 6))[0])
    np.testing.assert_array_equal(joint[row, -4:], [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(joint[row, :8], [0, 0, 0, 0, 2, 6, 0, 0])
    # At t=5, b and late return their final observations: still there, then gone.
    row = int(np.flatnonzero((obs[:, 1] == 5))[0])
    np.testing.assert_array_equal(joint[row, -4:], [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(joint[row, :8], [0, 0, 1, 5, 2, 5, 3, 5])


def test_state_asked_of_an_env_without_state_names_the_env():
    with pytest.raises(ValueError, match="ScriptedEnv has no state"):
        make_runner(ScriptedEnv, global_input="state")
    env = ScriptedEnv()
    assert GlobalInput("auto", env).kind == "joint_obs"
    assert GlobalInput("auto", ScriptedStateEnv()).kind == "state"


def test_without_a_central_critic_nothing_extra_is_recorded():
    batch = make_runner(ScriptedStateEnv).sample(num_timesteps=6)[0][DEFAULT_MODULE_ID]
    assert GLOBAL_OBS not in batch and AGENT_INDEX not in batch and GLOBAL_INDEX not in batch


@pytest.mark.parametrize("runners", [0, 2])
def test_batches_hold_one_global_input_per_env_step_shared_by_every_module(runners):
    from envs.worker_pool import EnvRunnerGroup
    from envs.registry import make_env_creator
    from marl import MultiRLModuleSpec, RLModuleSpec
    from marl.algorithms.module_setup import agent_id_as_module_id
    from marl.models import DefaultActorTorchRLModule

    creator = make_env_creator(SPREAD, {"N": 3, "max_cycles": 5})
    spec = MultiRLModuleSpec(rl_module_specs={a: RLModuleSpec(module_class=DefaultActorTorchRLModule,
                                                              model_config={"fcnet_hiddens": [8]})
                                              for a in ("agent_0", "agent_1", "agent_2")})
    group = EnvRunnerGroup(runners, dict(env_creator=creator, module_spec=spec, num_envs=2,
                                         policy_mapping_fn=agent_id_as_module_id, global_input="state", seed=0,
                                         rollout_fragment_length=6))
    try:
        samples, _ = group.sample(24)
    finally:
        group.stop()
    tables = {id(b[GLOBAL_OBS]) for b in samples.values()}
    assert len(tables) == 1  # one table, the same object in all three per-agent batches
    table = next(iter(samples.values()))[GLOBAL_OBS]
    assert len(table) <= 24 + 2 * 2 * (1 + max(1, runners)) + 1  # env steps (+ bootstrap states + zeros)
    for b in samples.values():
        # mpe2's state is the agents' observations side by side: row i of agent k's batch
        # must point at a state whose k-th block is its own observation.
        k = int(b[AGENT_INDEX][0])
        np.testing.assert_array_equal(global_rows(b)[:, 18 * k:18 * (k + 1)], b[Columns.OBS])
        assert len(b[BOOTSTRAP_GLOBAL_INDEX]) == len(b[Columns.SEQ_LENS])


# ------------------------------------------------------------------ algorithm
def spread_config(**training) -> MAPPOConfig:
    return (MAPPOConfig().environment(SPREAD, env_config={"N": 3, "max_cycles": 10})
            .env_runners(num_envs_per_env_runner=2)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16, 16]))
            .training(train_batch_size_per_learner=120, minibatch_size=60, num_epochs=2, **training)
            .debugging(seed=1))


def test_the_critic_is_a_non_policy_module_stepped_once_by_the_single_optimizer():
    algo = spread_config().build()
    try:
        container = algo.get_module(None)
        assert container.non_policy_module_ids == ["central_critic"]
        assert container.policy_module_ids == [DEFAULT_MODULE_ID]
        critic = container["central_critic"]
        assert isinstance(critic, CentralCriticTorchRLModule)
        assert critic.global_dim == 54 and critic.num_agents == 3  # simple_spread's state, 3 agents
        (name, optimizer), = algo.learner.optimizers.items()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        assert len({id(p) for p in params}) == len(params)
        critic_ids = {id(p) for p in critic.parameters()}
        assert critic_ids <= {id(p) for p in params}
        before = [p.detach().clone() for p in critic.parameters()]
        algo.train()
        assert any(not torch.equal(b, p) for b, p in zip(before, critic.parameters()))
    finally:
        algo.stop()


def test_gae_and_the_value_loss_use_the_critic_not_the_policys_value_head(monkeypatch):
    algo = spread_config().build()
    try:
        samples, _ = algo.env_runner_group.sample(120)
        learner = algo.learner
        learner.build()
        batch = samples[DEFAULT_MODULE_ID]
        critic = algo.get_module(None)["central_critic"]
        with torch.no_grad():
            expected = critic.compute_values({GLOBAL_OBS: torch.as_tensor(global_rows(batch)),
                                              AGENT_INDEX: torch.as_tensor(batch[AGENT_INDEX])}).numpy()
        values, boot = learner.sample_values(samples)[DEFAULT_MODULE_ID]
        np.testing.assert_allclose(values, expected, rtol=1e-6)
        assert len(boot) == len(batch[Columns.SEQ_LENS])
        # The policies are actors: no value branch is built or run; only the critic learns values.
        policy = algo.get_module(DEFAULT_MODULE_ID)
        assert isinstance(policy, DefaultActorTorchRLModule)
        assert not hasattr(policy, "vf") and not hasattr(policy, "value_encoder")
        assert Columns.VF_PREDS not in policy.forward_train({Columns.OBS: torch.as_tensor(batch[Columns.OBS][:4])})
        critic_before = [p.detach().clone() for p in critic.parameters()]
        learner.update_from_samples(samples)
        assert all(not torch.equal(b, p) for b, p in zip(critic_before, critic.parameters()))
    finally:
        algo.stop()


def test_one_critic_per_policy_when_not_shared():
    cfg = (spread_config(share_critic=False)
           .multi_agent(policies={"p0", "p1", "p2"},
                        policy_mapping_fn=lambda aid, ep, **kw: f"p{aid.split('_')[1]}"))
    algo = cfg.build()
    try:
        container = algo.get_module(None)
        assert sorted(container.non_policy_module_ids) == [
            "central_critic_p0", "central_critic_p1", "central_critic_p2"]
        assert algo.learner.critic_of("p1") == "central_critic_p1"
        result = algo.train()
        assert {"p0", "p1", "p2"} <= set(result["learners"])
    finally:
        algo.stop()


def test_a_local_critic_is_exactly_ppo():
    mappo = spread_config(critic="local").build()
    ppo_cfg = (PPOConfig().environment(SPREAD, env_config={"N": 3, "max_cycles": 10})
               .env_runners(num_envs_per_env_runner=2)
               .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16, 16]))
               .training(train_batch_size_per_learner=120, minibatch_size=60, num_epochs=2)
               .debugging(seed=1))
    ppo = ppo_cfg.build()
    try:
        assert mappo.get_module(None).non_policy_module_ids == []
        for _ in range(2):
            a, b = mappo.train(), ppo.train()
        assert a["learners"][DEFAULT_MODULE_ID]["total_loss"] == b["learners"][DEFAULT_MODULE_ID]["total_loss"]
        for (ka, va), (kb, vb) in zip(mappo.learner.module.state_dict().items(), ppo.learner.module.state_dict().items()):
            assert ka == kb and torch.equal(va, vb), ka
    finally:
        mappo.stop()
        ppo.stop()


def test_a_policy_checkpoint_loads_and_acts_without_the_critic(tmp_path):
    algo = spread_config().build()
    try:
        algo.train()
        path = algo.save(tmp_path / "ckpt")
        obs = torch.randn(5, 18)
        policy = algo.get_module(DEFAULT_MODULE_ID)
        with torch.no_grad():
            expected = policy.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
            critic_out = algo.get_module(None)["central_critic"].compute_values(
                {GLOBAL_OBS: torch.ones(2, 54), AGENT_INDEX: torch.tensor([0, 2])})
        saved = {k: v.clone() for k, v in algo.learner.module.state_dict().items()}
    finally:
        algo.stop()
    module_dir = tmp_path / "ckpt" / "learner_group" / "learner" / "rl_module"
    assert (module_dir / "central_critic").is_dir()  # the critic is its own component
    alone = RLModule.from_checkpoint(module_dir / DEFAULT_MODULE_ID)
    with torch.no_grad():
        got = alone.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    critic = RLModule.from_checkpoint(module_dir / "central_critic")
    with torch.no_grad():
        torch.testing.assert_close(critic.compute_values(
            {GLOBAL_OBS: torch.ones(2, 54), AGENT_INDEX: torch.tensor([0, 2])}), critic_out, rtol=0, atol=0)
    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored.get_module(None)["central_critic"], CentralCriticTorchRLModule)
        state = restored.learner.module.state_dict()
        assert list(state) == list(saved) and any("central_critic." in k for k in state)
        for key, value in saved.items():
            assert torch.equal(state[key], value), key
    finally:
        restored.stop()


def test_joint_obs_critic_on_an_env_without_state_and_bad_settings_are_named():
    cfg = (MAPPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
           .training(train_batch_size_per_learner=100, minibatch_size=50, num_epochs=1))
    algo = cfg.build()
    try:
        critic = algo.get_module(None)["central_critic"]
        assert critic.global_dim == 2 * 4 + 2  # two CartPole observations and the presence mask
        algo.train()
    finally:
        algo.stop()
    with pytest.raises(ConfigError, match="MultiAgentCartPole has no state"):
        cfg.copy().training(critic_input="state").build()
    with pytest.raises(ConfigError, match="critic='centralised'"):
        cfg.copy().training(critic="centralised").build()
    with pytest.raises(ConfigError, match="critic_input='global'"):
        cfg.copy().training(critic_input="global").build()


@pytest.mark.parametrize("runners", [0, 2])
def test_a_mappo_run_resumes_exactly(runners, tmp_path):
    def config():
        return spread_config(critic_input="joint_obs").env_runners(num_env_runners=runners)

    def comparable(result):
        learner = result["learners"][DEFAULT_MODULE_ID]
        return (result["num_env_steps_sampled_lifetime"], result["env_runners"].get("episode_return_mean"),
                learner["total_loss"], learner["vf_loss"])

    def weights(algo):
        return torch.cat([p.detach().flatten() for p in algo.get_module(None).parameters()])

    algo = config().build()
    straight = [comparable(algo.train()) for _ in range(3)]
    expected = weights(algo)
    algo.stop()

    algo = config().build()
    first = comparable(algo.train())
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    resumed = Algorithm.from_checkpoint(path, config=config())
    try:
        assert resumed.env_runner_group.last_resume_exact is True
        assert [first] + [comparable(resumed.train()) for _ in range(2)] == straight
        assert torch.equal(weights(resumed), expected)
    finally:
        resumed.stop()
