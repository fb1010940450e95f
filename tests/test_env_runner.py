"""MultiAgentEnvRunner: trajectory layout, episodes across calls, seeding, errors, recovery."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from envs.env_runner import (
    BOOTSTRAP_OBS,
    BOOTSTRAP_STATE_IN,
    EpisodeHandle,
    MultiAgentEnvRunner,
    infer_module_spaces,
)
from marl.core import DEFAULT_MODULE_ID, SHARED_ENCODER_ID, Columns, MultiRLModule, RLModuleSpec
from tests.test_env_runner_support import (
    AGENT_INDEX,
    EPISODE_LEN,
    SCRIPT,
    SCRIPTED_EPISODE_RETURN,
    CounterRecurrent,
    CrashingEnv,
    HeterogeneousEnv,
    ScriptedEnv,
    TinyPolicy,
    check_batch_layout,
    make_runner,
    scripted_return,
    scripted_reward,
    segments,
)

AGENT_BY_INDEX = {v: k for k, v in AGENT_INDEX.items()}


def _collect_scripted(runner, num_calls, steps_per_call):
    """Sample several calls; return all (batch, metrics) pairs."""
    return [runner.sample(num_timesteps=steps_per_call * runner.num_envs) for _ in range(num_calls)]


# ----------------------------------------------------------------- trajectories


def test_scripted_rows_line_up_with_observations_rewards_and_done_flags():
    runner = make_runner(ScriptedEnv, num_envs=2)
    results = _collect_scripted(runner, num_calls=6, steps_per_call=3)  # cuts episodes mid-way
    for batch, _ in results:
        batch = batch[DEFAULT_MODULE_ID]
        check_batch_layout(batch)
        obs = batch[Columns.OBS]
        for i, (start, end) in enumerate(segments(batch)):
            agent = AGENT_BY_INDEX[int(obs[start, 0])]
            first, n, how = SCRIPT[agent]
            times = obs[start:end, 1]
            assert (obs[start:end, 0] == AGENT_INDEX[agent]).all()
            np.testing.assert_array_equal(times, np.arange(times[0], times[0] + end - start))
            # One reward per action, the one the env gave for that very action.
            expected = [scripted_reward(agent, int(t)) for t in times]
            np.testing.assert_array_equal(batch[Columns.REWARDS][start:end], expected)
            last_t = int(times[-1])
            is_last_action = last_t == first + n - 1
            assert batch[Columns.TERMINATEDS][end - 1] == (is_last_action and how == "terminated")
            assert batch[Columns.TRUNCATEDS][end - 1] == (is_last_action and how == "truncated")
            boot = batch[BOOTSTRAP_OBS][i]
            if not batch[Columns.TERMINATEDS][end - 1]:
                # Next observation (cut by the call) or final observation (truncated).
                np.testing.assert_array_equal(boot, [AGENT_INDEX[agent], last_t + 1])


def test_late_joiner_and_agents_dying_at_different_times_get_complete_episodes():
    runner = make_runner(ScriptedEnv, num_envs=3)
    batches, metrics = runner.sample(num_episodes=3)
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    per_agent_episode = defaultdict(list)
    for start, end in segments(batch):
        per_agent_episode[int(batch[Columns.EPS_ID][start])].append((start, end))
    # num_episodes mode: only whole episodes, so one segment per agent-episode.
    assert all(len(v) == 1 for v in per_agent_episode.values())
    lengths = defaultdict(list)
    for (start, end), in per_agent_episode.values():
        agent = AGENT_BY_INDEX[int(batch[Columns.OBS][start, 0])]
        lengths[agent].append(end - start)
        assert batch[Columns.REWARDS][start:end].sum() == pytest.approx(scripted_return(agent))
        assert batch[Columns.OBS][start, 1] == SCRIPT[agent][0]  # late joiner starts at t=2
    assert {a: set(v) for a, v in lengths.items()} == {a: {n} for a, (_, n, _) in SCRIPT.items()}
    assert metrics["num_episodes"] >= 3
    assert metrics["episode_return_mean"] == pytest.approx(SCRIPTED_EPISODE_RETURN)
    assert metrics["episode_len_mean"] == EPISODE_LEN
    assert metrics["agent_episode_return_mean"] == pytest.approx(
        {a: scripted_return(a) for a in SCRIPT})
    assert batch[Columns.REWARDS].sum() == pytest.approx(
        metrics["num_episodes"] * SCRIPTED_EPISODE_RETURN)


def test_eps_ids_are_stable_across_calls_and_segments_continue():
    runner = make_runner(ScriptedEnv, num_envs=1)
    (b1, _), (b2, _) = _collect_scripted(runner, num_calls=2, steps_per_call=2)
    b1, b2 = b1[DEFAULT_MODULE_ID], b2[DEFAULT_MODULE_ID]
    ends1 = {int(b1[Columns.EPS_ID][end - 1]): b1[Columns.OBS][end - 1] for _, end in segments(b1)}
    starts2 = {int(b2[Columns.EPS_ID][start]): b2[Columns.OBS][start] for start, _ in segments(b2)}
    continued = set(ends1) & set(starts2)
    assert continued == set(ends1)  # a, b and c all go on in the second call
    for eps in continued:
        assert starts2[eps][1] == ends1[eps][1] + 1
    # Truncated/terminated flags are False at a cut.
    assert not b1[Columns.TERMINATEDS].any() and not b1[Columns.TRUNCATEDS].any()


def test_sample_counts_lockstep_steps_and_module_steps():
    runner = make_runner(ScriptedEnv, num_envs=3, rollout_fragment_length=4)
    batches, metrics = runner.sample()
    assert metrics["num_env_steps_sampled"] == 12  # rollout_fragment_length per env
    batches, metrics = runner.sample(num_timesteps=10)
    assert metrics["num_env_steps_sampled"] == 12  # ceil(10 / 3) lockstep steps
    assert metrics["num_env_steps_sampled_lifetime"] == 24
    n = len(batches[DEFAULT_MODULE_ID][Columns.EPS_ID])
    assert metrics["num_agent_steps_sampled"] == n
    assert metrics["num_module_steps_sampled"] == {DEFAULT_MODULE_ID: n}
    assert runner.get_state()["num_env_steps_sampled_lifetime"] == 24


def test_metrics_omit_returns_when_no_episode_completed():
    runner = make_runner(ScriptedEnv, num_envs=1)
    _, metrics = runner.sample(num_timesteps=2)
    assert metrics["num_episodes"] == 0
    assert "episode_return_mean" not in metrics
    assert all(not (isinstance(v, float) and np.isnan(v)) for v in metrics.values())


def test_policy_mapping_per_agent_and_module_returns():
    calls = []

    def mapping(agent_id, episode):
        calls.append((agent_id, episode.id_))
        assert isinstance(episode, EpisodeHandle) and agent_id in episode.agent_ids or True
        return "p_late" if agent_id == "late" else "p_main"

    runner = make_runner(ScriptedEnv, module_ids=["p_main", "p_late"], policy_mapping_fn=mapping,
                         num_envs=2)
    batches, metrics = runner.sample(num_episodes=2)
    assert set(batches) == {"p_main", "p_late"}
    assert set(batches["p_late"][Columns.OBS][:, 0]) == {AGENT_INDEX["late"]}
    assert AGENT_INDEX["late"] not in set(batches["p_main"][Columns.OBS][:, 0])
    # Called once per agent per episode (at its first appearance).
    assert len(calls) == len(set(calls))
    assert metrics["module_episode_return_mean"]["p_late"] == pytest.approx(scripted_return("late"))
    assert metrics["module_episode_return_mean"]["p_main"] == pytest.approx(
        SCRIPTED_EPISODE_RETURN - scripted_return("late"))


# ---------------------------------------------------------------- the forward pass


def test_exactly_one_module_forward_call_per_lockstep_step():
    runner = make_runner(ScriptedEnv, module_ids=["even", "odd"], num_envs=4,
                         policy_mapping_fn=lambda aid, ep: "even" if AGENT_INDEX[aid] % 2 == 0 else "odd")
    calls = []
    original = runner.module.forward_exploration

    def counting(batch, **kw):
        calls.append({mid: len(b[Columns.OBS]) for mid, b in batch.items()})
        return original(batch, **kw)

    runner.module.forward_exploration = counting
    batches, metrics = runner.sample(num_timesteps=4 * 10)
    assert len(calls) == 10  # one per lockstep step, for 4 envs and 2 modules
    assert all(set(c) <= {"even", "odd"} for c in calls)
    assert sum(sum(c.values()) for c in calls) >= metrics["num_agent_steps_sampled"]
    assert any(len(c) == 2 for c in calls)  # both modules in the same call


def test_greedy_sampling_takes_the_argmax_and_records_no_logp():
    runner = make_runner(ScriptedEnv, num_envs=2)
    batch = runner.sample(num_timesteps=20, explore=False)[0][DEFAULT_MODULE_ID]
    assert Columns.ACTION_LOGP not in batch
    np.testing.assert_array_equal(batch[Columns.ACTIONS],
                                  batch[Columns.ACTION_DIST_INPUTS].argmax(-1))
    explored = runner.sample(num_timesteps=200)[0][DEFAULT_MODULE_ID]
    assert Columns.ACTION_LOGP in explored and Columns.VF_PREDS in explored
    logits = torch.as_tensor(explored[Columns.ACTION_DIST_INPUTS])
    logp = torch.log_softmax(logits, -1).gather(
        1, torch.as_tensor(explored[Columns.ACTIONS])[:, None]).squeeze(1)
    np.testing.assert_allclose(explored[Columns.ACTION_LOGP], logp.numpy(), rtol=1e-5, atol=1e-6)
    # Exploration is not greedy (random weights give logits close to uniform).
    assert (explored[Columns.ACTIONS] != logits.argmax(-1).numpy()).any()


def test_stateful_module_gets_batched_state_and_bootstrap_state():
    runner = make_runner(ScriptedEnv, module_class=CounterRecurrent, num_envs=2)
    for _ in range(4):
        batch = runner.sample(num_timesteps=2 * 3)[0][DEFAULT_MODULE_ID]
        check_batch_layout(batch)
        h = batch[Columns.STATE_IN]["h"][:, 0]
        obs = batch[Columns.OBS]
        first_t = np.array([SCRIPT[AGENT_BY_INDEX[int(i)]][0] for i in obs[:, 0]])
        # The state before each step counts the agent's earlier actions in the episode.
        np.testing.assert_array_equal(h, obs[:, 1] - first_t)
        for i, (start, end) in enumerate(segments(batch)):
            if not batch[Columns.TERMINATEDS][end - 1]:
                assert batch[BOOTSTRAP_STATE_IN]["h"][i, 0] == h[end - 1] + 1


class PrevActionRewardCounter(CounterRecurrent):
    """Declares by method (no model_config keys) that it reads previous actions and rewards."""

    def needs_prev_actions(self) -> bool:
        return True

    def needs_prev_rewards(self) -> bool:
        return True

    def max_seq_len(self) -> int:
        return 3


def test_runner_and_learner_ask_the_module_what_it_needs_by_method():
    from learners.ppo_learner import max_seq_len_of

    runner = make_runner(ScriptedEnv, module_class=PrevActionRewardCounter, num_envs=2)
    batch = runner.sample(num_timesteps=2 * 4)[0][DEFAULT_MODULE_ID]
    assert Columns.PREV_ACTIONS in batch and Columns.PREV_REWARDS in batch
    plain = make_runner(ScriptedEnv, module_class=CounterRecurrent, num_envs=2)
    assert Columns.PREV_ACTIONS not in plain.sample(num_timesteps=8)[0][DEFAULT_MODULE_ID]
    assert max_seq_len_of(runner.module[DEFAULT_MODULE_ID]) == 3
    assert max_seq_len_of(plain.module[DEFAULT_MODULE_ID]) == 20  # RLlib's default


def test_same_seed_gives_identical_trajectories():
    def run(seed):
        runner = make_runner(ScriptedEnv, num_envs=2, seed=seed, torch_seed=0)
        torch.manual_seed(1234)  # the runner must not depend on the global RNG
        out = [runner.sample(num_timesteps=16)[0][DEFAULT_MODULE_ID] for _ in range(2)]
        return out

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], dict):
                continue
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert any(not np.array_equal(x[Columns.ACTIONS], z[Columns.ACTIONS]) for x, z in zip(a, c))


def test_seeded_runner_leaves_global_torch_rng_alone():
    runner = make_runner(ScriptedEnv, num_envs=1, seed=3)
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    runner.sample(num_timesteps=5)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_every_episode_resets_with_a_seed_derived_from_seed_worker_env_and_episode():
    from envs.sampling.recovery import episode_seed

    seeds = []

    class Recording(ScriptedEnv):
        def reset(self, seed=None, options=None):
            seeds.append(seed)
            return super().reset(seed=seed, options=options)

    runner = make_runner(Recording, num_envs=3, seed=10, worker_index=2)
    runner.sample(num_timesteps=3 * 8)  # every env resets a second time after 7 steps
    assert seeds[:3] == [episode_seed(10, 2, e, 0) for e in range(3)]
    assert seeds[3:6] == [episode_seed(10, 2, e, 1) for e in range(3)]
    assert len(set(seeds)) == len(seeds), "every episode gets its own seed"
    # Unseeded runners draw their base once, so their episodes are replayable too.
    seeds.clear()
    unseeded = make_runner(Recording, num_envs=2, seed=None)
    unseeded.sample(num_timesteps=2)
    assert seeds == [episode_seed(unseeded.seed_base, 0, e, 0) for e in range(2)]


# ----------------------------------------------------------------- errors


def test_mapping_to_a_non_policy_module_names_agent_id_and_valid_ids():
    runner = make_runner(ScriptedEnv, module_ids=["p0"], policy_mapping_fn=lambda a, e: SHARED_ENCODER_ID)
    with pytest.raises(ValueError) as info:
        runner.sample(num_timesteps=1)
    msg = str(info.value)
    assert "'a'" in msg and repr(SHARED_ENCODER_ID) in msg and "['p0']" in msg

    runner = make_runner(ScriptedEnv, module_ids=["p0"], policy_mapping_fn=lambda a, e: "po")
    with pytest.raises(ValueError, match=r"'po'.*\['p0'\]"):
        runner.sample(num_timesteps=1)


def test_mapping_to_a_shared_encoder_in_the_container_is_rejected():
    torch.manual_seed(0)
    from gymnasium.spaces import Box, Discrete

    module = MultiRLModule(rl_module_specs={
        "p0": RLModuleSpec(TinyPolicy, Box(-1000, 1000, (2,)), Discrete(2)),
        SHARED_ENCODER_ID: RLModuleSpec(TinyPolicy, Box(-1000, 1000, (2,)), Discrete(2)),
    })
    runner = MultiAgentEnvRunner(env_creator=ScriptedEnv, module=module,
                                 policy_mapping_fn=lambda a, e: SHARED_ENCODER_ID)
    with pytest.raises(ValueError, match="non-policy module"):
        runner.sample(num_timesteps=1)


def test_heterogeneous_spaces_in_one_module_suggest_padding():
    with pytest.raises(ValueError) as info:
        infer_module_spaces(HeterogeneousEnv(), None, None)
    msg = str(info.value)
    assert "'a'" in msg and "'b'" in msg and "(3,)" in msg and "pad_heterogeneous" in msg
    spaces = infer_module_spaces(HeterogeneousEnv(), lambda a, e: "b" if a == "b" else "rest", None)
    assert spaces["b"][0].shape == (3,) and spaces["rest"][0].shape == (2,)


def test_crashing_env_is_recreated_and_its_episode_dropped():
    CrashingEnv.instances = 0
    runner = make_runner(CrashingEnv, num_envs=2, env_config={"crash_at": 4})
    batches, metrics = runner.sample(num_episodes=4)
    assert metrics["num_env_errors"] == 1
    assert metrics["num_episodes_dropped"] == 1
    batch = batches[DEFAULT_MODULE_ID]
    check_batch_layout(batch)
    # Only complete episodes remain: each agent-episode has all of its steps.
    for start, end in segments(batch):
        agent = AGENT_BY_INDEX[int(batch[Columns.OBS][start, 0])]
        assert end - start == SCRIPT[agent][1]
    assert batch[Columns.REWARDS].sum() == pytest.approx(
        metrics["num_episodes"] * SCRIPTED_EPISODE_RETURN)
    _, metrics = runner.sample(num_timesteps=10)
    assert metrics["num_env_errors"] == 1  # lifetime count
    assert metrics["num_episodes_dropped"] == 0  # per call


def test_crash_mid_fragment_removes_that_episodes_steps_from_the_call():
    CrashingEnv.instances = 0
    runner = make_runner(CrashingEnv, num_envs=1, env_config={"crash_at": 3})
    batch, metrics = runner.sample(num_timesteps=5)
    batch = batch[DEFAULT_MODULE_ID]
    assert metrics["num_episodes_dropped"] == 1
    # Steps 1-2 of the dropped episode are gone; the new episode's 2 steps remain (t = 0, 1).
    assert set(batch[Columns.OBS][:, 1].tolist()) == {0.0, 1.0}
    assert metrics["num_env_steps_sampled"] == 4  # the crashed step did not happen


def test_env_creator_failing_three_times_in_a_row_raises_the_original_error():
    attempts = []

    def flaky(config):
        attempts.append(1)
        if len(attempts) <= 2:
            raise OSError(f"transient failure {len(attempts)}")
        return ScriptedEnv()

    runner = make_runner(flaky, num_envs=1)  # two failures, then it works
    assert len(attempts) == 3 and runner.get_spaces()

    def broken(config):
        raise OSError("no display")

    with pytest.raises(OSError, match="no display"):
        make_runner(broken)


# ----------------------------------------------------------------- state


def test_weights_and_state_round_trip():
    runner = make_runner(ScriptedEnv, num_envs=1)
    other = make_runner(ScriptedEnv, num_envs=1, torch_seed=1)
    w = runner.get_weights()
    assert not torch.equal(w[DEFAULT_MODULE_ID]["pi.weight"], other.get_weights()[DEFAULT_MODULE_ID]["pi.weight"])
    other.set_weights(w)
    assert torch.equal(other.get_weights()[DEFAULT_MODULE_ID]["pi.weight"], w[DEFAULT_MODULE_ID]["pi.weight"])
    runner.sample(num_timesteps=5)
    state = runner.get_state()
    assert set(state["rl_module"]) == {DEFAULT_MODULE_ID}
    assert state["num_env_steps_sampled_lifetime"] == 5
    fresh = make_runner(ScriptedEnv, num_envs=1, torch_seed=2)
    fresh.set_state(state)
    assert fresh.get_state()["num_env_steps_sampled_lifetime"] == 5
    assert torch.equal(fresh.get_weights()[DEFAULT_MODULE_ID]["pi.bias"], w[DEFAULT_MODULE_ID]["pi.bias"])


def test_get_spaces_without_module_and_module_spec_gets_spaces_filled_in():
    runner = MultiAgentEnvRunner(env_creator=ScriptedEnv)
    spaces = runner.get_spaces()
    assert list(spaces) == [DEFAULT_MODULE_ID]
    assert spaces[DEFAULT_MODULE_ID][0].shape == (2,) and spaces[DEFAULT_MODULE_ID][1].n == 2
    with pytest.raises(RuntimeError, match="no module"):
        runner.sample(num_timesteps=1)
    runner = make_runner(ScriptedEnv)
    assert runner.module[DEFAULT_MODULE_ID].observation_space == spaces[DEFAULT_MODULE_ID][0]


# ----------------------------------------------------------------- sampling paths and spaces


class OffsetActionsEnv(ScriptedEnv):
    """ScriptedEnv whose actions are Discrete(2, start=5): the env must get 5 or 6."""

    def __init__(self, config=None):
        super().__init__(config)
        import gymnasium as gym

        self._act_space = gym.spaces.Discrete(2, start=5)

    def step(self, actions):
        assert all(int(a) in (5, 6) for a in actions.values()), actions
        return super().step(actions)


@pytest.mark.parametrize("fast", [True, False])
def test_discrete_start_is_added_for_the_env_but_not_recorded(fast, monkeypatch):
    monkeypatch.setattr(MultiAgentEnvRunner, "fast_categorical_sampling", fast)
    runner = make_runner(OffsetActionsEnv, num_envs=2)
    batch = runner.sample(num_timesteps=20)[0][DEFAULT_MODULE_ID]
    assert set(np.unique(batch[Columns.ACTIONS])) <= {0, 1}


@pytest.mark.parametrize("fast", [True, False])
def test_fast_and_generic_categorical_sampling_agree(fast, monkeypatch):
    monkeypatch.setattr(MultiAgentEnvRunner, "fast_categorical_sampling", fast)
    runner = make_runner(ScriptedEnv, num_envs=4, seed=1)
    batch = runner.sample(num_timesteps=400)[0][DEFAULT_MODULE_ID]
    logits = torch.as_tensor(batch[Columns.ACTION_DIST_INPUTS])
    logp_all = torch.log_softmax(logits, -1)
    actions = torch.as_tensor(batch[Columns.ACTIONS])
    np.testing.assert_allclose(batch[Columns.ACTION_LOGP],
                               logp_all.gather(1, actions[:, None])[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    # Empirical frequency of action 1 matches the mean probability (binomial, 4 sigma).
    p1 = logp_all.exp()[:, 1].numpy()
    n = len(p1)
    assert abs(batch[Columns.ACTIONS].mean() - p1.mean()) < 4 * np.sqrt(p1.mean() * (1 - p1.mean()) / n)
    greedy = runner.sample(num_timesteps=40, explore=False)[0][DEFAULT_MODULE_ID]
    np.testing.assert_array_equal(greedy[Columns.ACTIONS], greedy[Columns.ACTION_DIST_INPUTS].argmax(-1))


def test_default_lstm_module_with_prev_actions_and_rewards():
    from marl.models import DefaultPPOTorchRLModule

    runner = make_runner(ScriptedEnv, module_class=DefaultPPOTorchRLModule, num_envs=2, model_config={
        "fcnet_hiddens": [8], "use_lstm": True, "lstm_cell_size": 4,
        "lstm_use_prev_action": True, "lstm_use_prev_reward": True})
    for _ in range(3):
        batch = runner.sample(num_timesteps=2 * 4)[0][DEFAULT_MODULE_ID]
        check_batch_layout(batch)
        assert batch[Columns.STATE_IN]["h"].shape == (len(batch[Columns.EPS_ID]), 4)
        assert batch[BOOTSTRAP_STATE_IN]["c"].shape == (len(batch[Columns.SEQ_LENS]), 4)
        obs = batch[Columns.OBS]
        for start, end in segments(batch):
            agent = AGENT_BY_INDEX[int(obs[start, 0])]
            for r in range(start, end):
                t = int(obs[r, 1])
                if t == SCRIPT[agent][0]:  # first step of the agent: zeros
                    assert batch[Columns.PREV_REWARDS][r] == 0 and batch[Columns.PREV_ACTIONS][r] == 0
                    assert not batch[Columns.STATE_IN]["h"][r].any()
                else:
                    assert batch[Columns.PREV_REWARDS][r] == scripted_reward(agent, t - 1)
                    if r > start:
                        assert batch[Columns.PREV_ACTIONS][r] == batch[Columns.ACTIONS][r - 1]
                        assert batch[Columns.STATE_IN]["h"][r].any()
