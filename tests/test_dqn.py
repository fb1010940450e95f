"""DQN / IQL: transitions, TD targets, target syncs, masks, replay, checkpoints."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import MultiAgentCartPole
from learners.dqn_learner import td_targets, update_target_network
from learners.replay_buffer import INDICES, WEIGHTS, PrioritizedReplayBuffer, ReplayBuffer
from learners.transitions import N_STEP, choose_n_step, ranged_segment_transitions, segment_transitions
from marl import Algorithm, DefaultDQNTorchRLModule, DefaultModelConfig, DQNConfig, QNetAPI, TargetNetworkAPI
from marl.algorithms.algorithm_config import ConfigError
from marl.algorithms.dqn import piecewise_linear, round_robin_weights, sampling_rounds
from marl.core.columns import BOOTSTRAP_OBS, Columns
from marl.models.default_dqn_rl_module import QF_PREDS

GAMMA = 0.9


def segments_batch():
    """Three segments: terminated (3 steps), truncated (2 steps), cut by the sample call (2 steps)."""
    obs = np.arange(7, dtype=np.float32)[:, None] * 10  # row i observes [10 i]
    return {
        Columns.OBS: obs,
        Columns.ACTIONS: np.array([0, 1, 0, 1, 1, 0, 1]),
        Columns.REWARDS: np.array([1, 2, 3, 4, 5, 6, 7], np.float32),
        Columns.TERMINATEDS: np.array([0, 0, 1, 0, 0, 0, 0], bool),
        Columns.TRUNCATEDS: np.array([0, 0, 0, 0, 1, 0, 0], bool),
        Columns.SEQ_LENS: np.array([3, 2, 2]),
        BOOTSTRAP_OBS: np.array([[-1.0], [-2.0], [-3.0]], np.float32),  # zeros / final obs / next obs
    }


def test_one_step_transitions_bootstrap_on_truncation_and_cuts_but_not_on_termination():
    t = segment_transitions(segments_batch(), n_step=1, gamma=GAMMA)
    np.testing.assert_array_equal(t[Columns.NEXT_OBS][:, 0], [10, 20, -1, 40, -2, 60, -3])
    np.testing.assert_array_equal(t[Columns.TERMINATEDS], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(t[Columns.REWARDS], [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(t[N_STEP], np.ones(7))


def test_n_step_transitions_match_a_hand_computation():
    t = segment_transitions(segments_batch(), n_step=3, gamma=GAMMA)
    g = GAMMA
    np.testing.assert_allclose(t[Columns.REWARDS], [
        1 + g * 2 + g * g * 3, 2 + g * 3, 3,      # terminated segment: windows stop at its end
        4 + g * 5, 5,                            # truncated
        6 + g * 7, 7,                            # cut by the call
    ], rtol=1e-6)
    np.testing.assert_array_equal(t[N_STEP], [3, 2, 1, 2, 1, 2, 1])
    np.testing.assert_array_equal(t[Columns.NEXT_OBS][:, 0], [-1, -1, -1, -2, -2, -3, -3])
    # Only windows that reach the terminal step are terminal.
    np.testing.assert_array_equal(t[Columns.TERMINATEDS], [1, 1, 1, 0, 0, 0, 0])


def test_a_window_inside_a_segment_reads_the_observation_n_steps_later():
    batch = segments_batch()
    batch[Columns.SEQ_LENS] = np.array([7])
    batch[Columns.TERMINATEDS][:] = False
    batch[BOOTSTRAP_OBS] = np.array([[-9.0]], np.float32)
    t = segment_transitions(batch, n_step=2, gamma=GAMMA)
    np.testing.assert_array_equal(t[Columns.NEXT_OBS][:, 0], [20, 30, 40, 50, 60, -9, -9])
    np.testing.assert_allclose(t[Columns.REWARDS][0], 1 + GAMMA * 2)


def test_ranged_n_step_rows_hold_every_window_and_replay_draws_one_uniformly():
    """RLlib's n_step=(2, 5): each replayed row draws n from 2, 3, 4 (never 5), anew at every replay."""
    batch = segments_batch()
    rows = ranged_segment_transitions(batch, (2, 5), GAMMA)
    assert rows[N_STEP].shape == (7, 3) and rows[Columns.NEXT_OBS].shape == (7, 3, 1)
    for j, n in enumerate((2, 3, 4)):
        plain = segment_transitions(batch, n, GAMMA)
        for key in (Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS, N_STEP):
            np.testing.assert_array_equal(rows[key][:, j], plain[key])
    np.testing.assert_array_equal(rows[Columns.OBS], batch[Columns.OBS])  # n-independent columns stay flat
    # Row 0 sits in a 3-step terminated segment: n=2 sees 2 steps, n=3 and n=4 the whole segment.
    draws = []
    rng = np.random.default_rng(0)
    for _ in range(3000):
        replayed = {k: v[[0]] for k, v in rows.items()}
        chosen = choose_n_step(replayed, rng)
        assert chosen[N_STEP].shape == (1,) and chosen[Columns.NEXT_OBS].shape == (1, 1)
        n = {2: 2, 3: 3}[int(chosen[N_STEP][0])]
        np.testing.assert_allclose(chosen[Columns.REWARDS][0], sum(GAMMA ** j * (j + 1) for j in range(n)), rtol=1e-6)
        draws.append(n)
    # n=3 and n=4 give the same (whole-segment) window, so P(k=2) = 1/3 and P(k=3) = 2/3.
    assert abs(draws.count(2) / 3000 - 1 / 3) < 0.03
    assert ranged_segment_transitions(batch, 3, GAMMA)[N_STEP].shape == (7,)  # an int stays plain


def test_replay_redraws_a_window_that_would_run_past_its_episodes_end():
    """RLlib's rule (``episode_ts + n > len(episode)``: draw again): in a terminated 6-step episode
    with n from 2..4, step 5 is never replayed, step 4 only with n=2, step 3 never with n=4."""
    from learners.transitions import replay_whole_windows

    obs = np.arange(6, dtype=np.float32)[:, None]
    batch = {Columns.OBS: obs, Columns.ACTIONS: np.zeros(6, np.int64), Columns.REWARDS: np.ones(6, np.float32),
             Columns.TERMINATEDS: np.array([0, 0, 0, 0, 0, 1], bool), Columns.SEQ_LENS: np.array([6]),
             BOOTSTRAP_OBS: np.zeros((1, 1), np.float32)}
    buffer = PrioritizedReplayBuffer(100, seed=0)
    buffer.add(ranged_segment_transitions(batch, (2, 5), GAMMA))
    seen = {}
    for _ in range(300):
        replayed = replay_whole_windows(buffer, 32, (2, 5))
        assert len(replayed[Columns.ACTIONS]) == 32 and len(replayed[INDICES]) == 32
        for t, n in zip(replayed[Columns.OBS][:, 0].astype(int), replayed[N_STEP]):
            seen.setdefault(int(t), set()).add(int(n))
    assert seen == {0: {2, 3, 4}, 1: {2, 3, 4}, 2: {2, 3, 4}, 3: {2, 3}, 4: {2}}
    assert all(replayed[Columns.TERMINATEDS][replayed[N_STEP] + replayed[Columns.OBS][:, 0] == 6])
    one_step = ReplayBuffer(100, seed=0)  # n=1: every stored window is whole, nothing is redrawn
    one_step.add(segment_transitions(batch, 1, GAMMA))
    assert set(replay_whole_windows(one_step, 500, 1)[Columns.OBS][:, 0].astype(int)) == set(range(6))
    short = ReplayBuffer(100, seed=0)
    short.add(segment_transitions({**batch, Columns.SEQ_LENS: np.array([2, 4]),
                                   BOOTSTRAP_OBS: np.zeros((2, 1), np.float32)}, 5, GAMMA))
    with pytest.raises(ValueError, match="n_step=5: after 1000 draws"):
        replay_whole_windows(short, 4, 5)


@pytest.mark.parametrize("shorten", [False, True])
def test_dqn_replays_episode_ends_by_rllibs_rule_unless_told_to_shorten(shorten):
    """Default (RLlib): no replayed 3-step window is cut short by its episode's end; with
    shorten_n_step_at_episode_end=True, the steps before a termination are replayed with short windows."""
    algo = small_config(n_step=3, shorten_n_step_at_episode_end=shorten, train_batch_size_per_learner=256).build()
    replayed = []
    original = algo.learner.update
    algo.learner.update = lambda batch, **kw: replayed.append(batch["default_policy"]) or original(batch, **kw)
    try:
        algo.train()
        n = np.concatenate([b[N_STEP] for b in replayed])
        assert len(n) > 1000 and ((n < 3).any() == shorten)
    finally:
        algo.stop()
    with pytest.raises(ConfigError, match="unknown key 'shorten_n_step_at_episode_end'"):
        from marl import QMIXConfig
        QMIXConfig().training(shorten_n_step_at_episode_end=True)


def test_nested_observations_with_action_masks_are_carried_to_next_obs():
    batch = segments_batch()
    masks = np.eye(7, 3, dtype=np.int8)
    batch[Columns.OBS] = {"observation": batch[Columns.OBS], "action_mask": masks}
    batch[BOOTSTRAP_OBS] = {"observation": batch[BOOTSTRAP_OBS], "action_mask": np.ones((3, 3), np.int8)}
    t = segment_transitions(batch, n_step=1, gamma=GAMMA)
    np.testing.assert_array_equal(t[Columns.NEXT_OBS]["action_mask"][0], masks[1])
    np.testing.assert_array_equal(t[Columns.NEXT_OBS]["action_mask"][2], [1, 1, 1])


def test_td_targets_double_q_masks_and_terminals_by_hand():
    q_target_next = torch.tensor([[1.0, 5.0, 3.0], [2.0, 0.0, 9.0], [4.0, 4.0, 4.0]])
    q_online_next = torch.tensor([[9.0, 0.0, 1.0], [0.0, 1.0, 8.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    common = dict(rewards=torch.tensor([1.0, 1.0, 1.0]), terminateds=torch.tensor([False, False, True]),
                  n_step=torch.tensor([1, 2, 1]), gamma=GAMMA, q_target_next=q_target_next,
                  q_online_next=q_online_next, next_mask=mask)
    double = td_targets(double_q=True, **common)
    # Row 0: online argmax is action 0 -> target Q 1.0; row 1: action 2 is masked, online argmax of
    # the rest is action 1 -> target Q 0.0, discounted by gamma^2; row 2: terminal, no bootstrap.
    torch.testing.assert_close(double, torch.tensor([1 + GAMMA * 1.0, 1 + GAMMA ** 2 * 0.0, 1.0]))
    single = td_targets(double_q=False, **common)
    # Without double Q: the target net's own max over allowed actions (5.0; 2.0, not the masked 9.0).
    torch.testing.assert_close(single, torch.tensor([1 + GAMMA * 5.0, 1 + GAMMA ** 2 * 2.0, 1.0]))


def test_polyak_and_hard_target_updates_move_by_exactly_tau():
    main, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in target.parameters()]
    update_target_network(main, target, tau=0.25)
    for t, b, m in zip(target.parameters(), before, main.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * m)
    update_target_network(main, target, tau=1.0)
    for t, m in zip(target.parameters(), main.parameters()):
        assert torch.equal(t, m)


def small_config(**training) -> DQNConfig:
    return (DQNConfig().environment("CartPole-v1")
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
            .training(num_steps_sampled_before_learning_starts=64, **training)
            .reporting(min_sample_timesteps_per_iteration=128)
            .debugging(seed=2))


def test_targets_sync_every_target_network_update_freq_env_steps():
    algo = small_config(target_network_update_freq=256, tau=1.0).build()
    try:
        module = algo.get_module()
        syncs, steps = [], []
        for _ in range(6):
            algo.train()
            syncs.append(algo.learner.num_target_updates["default_policy"])
            steps.append(algo.learner.last_target_update["default_policy"])
        lifetime = algo._counters["num_env_steps_sampled_lifetime"]
        assert syncs[-1] == lifetime // 256 or syncs[-1] == lifetime // 256 - 0  # one sync per 256 steps
        assert all(b - a in (0, 256) or b - a >= 256 for a, b in zip(steps, steps[1:]))
        # Right after a sync the target equals the online net.
        algo.learner.update_target_networks(lifetime + 256)
        for main, target in module.get_target_network_pairs():
            for m, t in zip(main.parameters(), target.parameters()):
                assert torch.equal(m, t)
        assert not any(p.requires_grad for p in module.target_qf.parameters())
        optimized = {id(p) for opt in algo.learner.optimizers.values() for g in opt.param_groups for p in g["params"]}
        assert not optimized & {id(p) for p in module.target_qf.parameters()}
    finally:
        algo.stop()


def test_polyak_tau_blends_each_period():
    algo = small_config(target_network_update_freq=0, tau=0.5).build()
    try:
        algo.train()  # warm the buffer and the nets
        module = algo.get_module()
        before = [p.detach().clone() for p in module.target_qf.parameters()]
        algo.learner.update_target_networks(10 ** 9)
        for t, b, m in zip(module.target_qf.parameters(), before, module.qf.parameters()):
            torch.testing.assert_close(t, 0.5 * b + 0.5 * m)
    finally:
        algo.stop()


def masked_module() -> DefaultDQNTorchRLModule:
    space = gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (3,), np.float32),
                             "action_mask": gym.spaces.Box(0, 1, (4,), np.int8)})
    return DefaultDQNTorchRLModule(observation_space=space, action_space=gym.spaces.Discrete(4),
                                   model_config={"fcnet_hiddens": [8]})


def test_masked_actions_are_never_explored_nor_chosen_greedily():
    module = masked_module()
    obs = {"observation": torch.randn(500, 3), "action_mask": torch.tensor([[0, 1, 0, 1]] * 500, dtype=torch.int8)}
    from marl.distributions import TorchCategorical

    for eps in (1.0, 0.3, 0.0):
        module.epsilon.fill_(eps)
        logits = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        actions = TorchCategorical.from_logits(logits).sample()
        assert set(actions.tolist()) <= {1, 3}
    greedy = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].argmax(-1)
    assert set(greedy.tolist()) <= {1, 3}
    module.epsilon.fill_(1.0)
    probs = torch.softmax(module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS], -1)
    torch.testing.assert_close(probs[0], torch.tensor([0.0, 0.5, 0.0, 0.5]))


def test_dueling_q_is_value_plus_centred_advantages():
    module = masked_module()
    x = torch.randn(5, 3)
    features = module.encoder.obs_encoder(x)
    a, v = module.qf.advantages(features), module.qf.value(features)
    q = module.compute_q_values({Columns.OBS: {"observation": x, "action_mask": torch.ones(5, 4)}})[QF_PREDS]
    torch.testing.assert_close(q, v + a - a.mean(-1, keepdim=True))


def test_sampling_rounds_replay_as_often_as_rllib():
    """RLlib's DQN/SAC "auto" fragment is n_step per env (a range's high end): one update per n_step
    sampled steps. A round is one such training step; ``grouped`` (rows that cannot span calls)
    joins training steps into rounds of up to a train batch.
    (steps per env per round, training steps per round, updates per training step)"""
    cfg = DQNConfig()
    assert sampling_rounds(cfg) == (1, 1, 1)                    # n_step 1: an update per env step
    assert sampling_rounds(cfg, grouped=True) == (32, 32, 1)
    cfg.n_step = (2, 5)
    assert sampling_rounds(cfg) == (5, 1, 1)                    # fragment 5: one training step of 5
    assert sampling_rounds(cfg, grouped=True) == (30, 6, 1)     # 6 training steps of 5
    cfg.num_envs_per_env_runner = 4
    assert sampling_rounds(cfg, grouped=True) == (5, 1, 1)      # 20 env steps per update; 32 // 20 = 1
    cfg.num_envs_per_env_runner, cfg.n_step, cfg.training_intensity = 1, 3, 4
    assert sampling_rounds(cfg) == (9, 1, 1)                    # RLlib's rounding: [3, 1] of 3-step fragments
    assert sampling_rounds(cfg, grouped=True) == (27, 3, 1)
    cfg.rollout_fragment_length = 4
    assert sampling_rounds(cfg, grouped=True) == (8, 1, 1)      # explicit: RLlib's [2, 1] of 4-step fragments
    cfg.rollout_fragment_length, cfg.training_intensity, cfg.min_sample_timesteps_per_iteration = "auto", None, 10
    assert sampling_rounds(cfg, grouped=True) == (9, 3, 1)      # a round never outgrows the iteration


def test_feed_forward_dqn_samples_one_training_step_per_call_and_recurrent_dqn_groups_them():
    """Windows span calls (NStepCarry), so feed-forward DQN samples RLlib's 5-step training steps
    one call each; recurrent modules store per-call sequences and keep train-batch-sized calls."""
    ff = small_config(n_step=(2, 5)).build()
    recurrent = small_config().rl_module(model_config=DefaultModelConfig(
        fcnet_hiddens=[16], use_lstm=True, lstm_cell_size=8, max_seq_len=8)).build()
    try:
        assert ff._sampling_rounds() == (5, 1, 1)
        assert recurrent._sampling_rounds() == (32, 32, 1)
    finally:
        ff.stop()
        recurrent.stop()


def test_an_iteration_runs_rllibs_number_of_updates():
    """RLlib's tuned CartPole DQN (n_step (2, 5)) trains 6,400 rows per 1,000 sampled steps; so does marl."""
    algo = (DQNConfig().environment("CartPole-v1").rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[8]))
            .training(n_step=(2, 5), num_steps_sampled_before_learning_starts=0).debugging(seed=0)).build()
    try:
        result = algo.train()
        sampled = result["num_env_steps_sampled_lifetime"]
        trained = result["learners"]["__all_modules__"]["num_env_steps_trained_lifetime"]
        assert sampled == 1000 and trained == 6400  # RLlib's result: 1,000 sampled, 6,400 trained
    finally:
        algo.stop()


def test_stored_windows_end_only_where_episodes_end():
    """Sampling calls of 5 steps cut episodes; RLlib joins an episode's chunks, and so does marl:
    every stored 3-step window is whole unless it reaches the episode's termination."""
    algo = small_config(n_step=3).env_runners(rollout_fragment_length=5).build()
    try:
        algo.train()
        buffer = algo.replay_buffers["default_policy"]
        n = buffer.columns[N_STEP][:len(buffer)]
        terminal = buffer.columns[Columns.TERMINATEDS][:len(buffer)]
        assert len(buffer) >= 100 and (n < 3).any()
        assert terminal[n < 3].all()  # short windows: only the last steps of terminated episodes
        assert len(algo.nstep_carries["default_policy"]) == 2
    finally:
        algo.stop()


def test_an_iteration_runs_until_min_train_timesteps_were_trained():
    """training_intensity=1: one update of 32 rows per 32 sampled steps; the sample bound (32) is met
    after one round, the train bound (320 rows) after ten."""
    algo = (small_config(training_intensity=1).training(num_steps_sampled_before_learning_starts=0)
            .reporting(min_sample_timesteps_per_iteration=32, min_train_timesteps_per_iteration=320).build())
    try:
        result = algo.train()
        assert result["learners"]["__all_modules__"]["num_env_steps_trained_lifetime"] == 320
        assert result["num_env_steps_sampled_lifetime"] == 320
    finally:
        algo.stop()


def test_epsilon_schedule_and_round_robin_weights_follow_rllib():
    schedule = [[0, 1.0], [10000, 0.05]]
    assert piecewise_linear(schedule, 0) == 1.0
    assert piecewise_linear(schedule, 5000) == pytest.approx(0.525)
    assert piecewise_linear(schedule, 10 ** 6) == 0.05
    cfg = DQNConfig()
    assert round_robin_weights(cfg, 32) == [1, 1]
    cfg.training_intensity = 4
    assert round_robin_weights(cfg, 32) == [1, 4]  # native ratio 32 / (32 * 1 * 1) = 1
    cfg.training_intensity = 0.25
    assert round_robin_weights(cfg, 32) == [4, 1]


def test_required_apis_and_rllib_defaults():
    assert DQNConfig().get_default_learner_class().rl_module_required_apis() == [QNetAPI, TargetNetworkAPI]
    cfg = DQNConfig()
    assert (cfg.lr, cfg.train_batch_size_per_learner, cfg.target_network_update_freq, cfg.n_step) == (5e-4, 32, 500, 1)
    assert cfg.double_q and cfg.dueling and cfg.replay_buffer_config["type"] == "PrioritizedEpisodeReplayBuffer"
    assert cfg.min_sample_timesteps_per_iteration == 1000


def test_uniform_buffer_overwrites_the_oldest_rows_and_round_trips():
    buf = ReplayBuffer(4, seed=0)
    buf.add({"x": np.arange(3.0), "o": {"a": np.arange(3)}})
    buf.add({"x": np.arange(3.0, 6.0), "o": {"a": np.arange(3, 6)}})
    assert len(buf) == 4 and buf.num_added == 6
    assert sorted(buf.columns["x"].tolist()) == [2.0, 3.0, 4.0, 5.0]
    sample = buf.sample(50)
    assert set(sample["x"].tolist()) <= {2.0, 3.0, 4.0, 5.0} and (sample[WEIGHTS] == 1).all()
    np.testing.assert_array_equal(sample["o"]["a"], sample["x"].astype(int))
    json_state, arrays = buf.get_state()
    copy = ReplayBuffer(4, seed=123)
    copy.set_state(json_state, arrays)
    np.testing.assert_array_equal(copy.sample(20)["x"], buf.sample(20)["x"])


def test_prioritized_sampling_is_proportional_with_the_right_weights():
    buf = PrioritizedReplayBuffer(4, seed=0, alpha=1.0, beta=1.0)
    buf.add({"x": np.arange(4.0)})
    buf.update_priorities(np.arange(4), np.array([1.0, 1.0, 2.0, 4.0]))
    sample = buf.sample(40_000)
    freq = np.bincount(sample[INDICES], minlength=4) / 40_000
    np.testing.assert_allclose(freq, np.array([1, 1, 2, 4]) / 8, atol=0.01)
    # w_i = (N P(i))^-beta / max_j (N P(j))^-beta: the rarest rows weigh 1.
    weights = {int(i): w for i, w in zip(sample[INDICES], sample[WEIGHTS])}
    assert weights[0] == pytest.approx(1.0, rel=1e-4) and weights[3] == pytest.approx(0.25, rel=1e-3)
    buf.add({"x": np.array([9.0])})  # new rows get the largest priority
    assert buf.priorities[0] == 4.0
    buf.update_priorities(np.array([1]), np.array([0.0]))  # RLlib's floor keeps a zero error drawable
    assert buf.priorities[1] == PrioritizedReplayBuffer.MIN_PRIORITY


def test_iql_trains_one_buffer_and_one_q_module_per_policy():
    algo = (DQNConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
            .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda aid, ep, **kw: f"p{aid}")
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
            .training(num_steps_sampled_before_learning_starts=64)
            .reporting(min_sample_timesteps_per_iteration=128).debugging(seed=0)).build()
    try:
        result = algo.train()
        assert sorted(algo.replay_buffers) == ["p0", "p1"]
        assert {"p0", "p1"} <= set(result["learners"])
        assert sorted(algo.learner.optimizers) == ["p0/default_optimizer", "p1/default_optimizer"]
    finally:
        algo.stop()


def test_overlapped_sampling_is_refused_for_the_off_policy_loop():
    with pytest.raises(ConfigError, match="overlap_sampling=True"):
        small_config().env_runners(num_env_runners=1, overlap_sampling=True).build()


def test_rllibs_multi_agent_buffer_names_give_one_buffer_per_module():
    """RLlib's tuned multi-agent configs name MultiAgent*EpisodeReplayBuffer: per module, the same
    prioritized (or uniform) replay as the single-agent names."""
    from learners.replay_buffer import PrioritizedReplayBuffer as Prioritized, ReplayBuffer as Uniform, \
        make_replay_buffer

    prioritized = make_replay_buffer({"type": "MultiAgentPrioritizedEpisodeReplayBuffer", "capacity": 10,
                                      "alpha": 1.0, "beta": 0.0}, seed=0)
    assert type(prioritized) is Prioritized and (prioritized.alpha, prioritized.beta) == (1.0, 0.0)
    assert type(make_replay_buffer({"type": "MultiAgentEpisodeReplayBuffer"}, seed=0)) is Uniform


def test_bad_dqn_settings_are_named():
    for key, value in (("epsilon", [[0, 1.5]]), ("n_step", 0), ("n_step", (3, 3)), ("n_step", (0, 2)),
                       ("tau", 0.0), ("td_error_loss_fn", "l1"),
                       ("replay_buffer_config", {"type": "ring"})):
        with pytest.raises(ConfigError, match=key if key != "replay_buffer_config" else "ring"):
            small_config(**{key: value}).build()
    with pytest.raises(ConfigError, match="min_time_s_per_iteration=-1.0"):
        small_config().reporting(min_time_s_per_iteration=-1.0).build()


@pytest.mark.parametrize("store", [True, False])
def test_checkpoint_restores_q_targets_and_optionally_the_replay_buffer(store, tmp_path):
    """With ``n_step=(2, 5)`` the checkpoint also holds the steps waiting for their windows
    (``nstep_carry``): without them the resumed run's replay would differ."""
    def config():
        return small_config(store_buffer_in_checkpoints=store, target_network_update_freq=100, n_step=(2, 5))

    algo = config().build()
    straight = [algo.train() for _ in range(3)]
    expected_weights = {k: v.clone() for k, v in algo.learner.module.state_dict().items()}
    algo.stop()

    algo = config().build()
    algo.train()
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    saved = {k: v.clone() for k, v in algo.learner.module.state_dict().items()}
    size = len(algo.replay_buffers["default_policy"])
    carried = len(algo.nstep_carries["default_policy"])
    algo.stop()
    assert (tmp_path / "ckpt" / "replay_buffer").is_dir() == store
    assert carried == 3  # the episode running at the save: its last n_max - 1 steps

    resumed = Algorithm.from_checkpoint(path, config=config())
    try:
        state = resumed.learner.module.state_dict()
        for key, value in saved.items():  # online, target and epsilon, exactly
            assert torch.equal(state[key], value), key
        assert resumed.learner.num_target_updates["default_policy"] >= 1
        assert len(resumed.replay_buffers.get("default_policy", [])) == (size if store else 0)
        assert len(resumed.nstep_carries.get("default_policy", [])) == (carried if store else 0)
        if store:  # with the buffers the run continues exactly as if never stopped
            rest = [resumed.train() for _ in range(2)]
            assert [r["learners"]["default_policy"]["qf_loss"] for r in rest] == \
                [r["learners"]["default_policy"]["qf_loss"] for r in straight[1:]]
            final = resumed.learner.module.state_dict()
            for key, value in expected_weights.items():
                assert torch.equal(final[key], value), key
    finally:
        resumed.stop()


def test_image_observations_get_a_cnn_q_network():
    space = gym.spaces.Box(0, 255, (12, 12, 3), np.uint8)
    module = DefaultDQNTorchRLModule(
        observation_space=space, action_space=gym.spaces.Discrete(4),
        model_config={"conv_filters": [[8, [4, 4], 2], [16, [3, 3], 2]], "fcnet_hiddens": [32]})
    obs = torch.randint(0, 255, (5, 12, 12, 3), dtype=torch.uint8)
    q = module.compute_q_values({Columns.OBS: obs})[QF_PREDS]
    assert q.shape == (5, 4)
    assert module.forward_target({Columns.OBS: obs})[QF_PREDS].shape == (5, 4)
    assert any(isinstance(m, torch.nn.Conv2d) for m in module.encoder.modules())


# ------------------------------------------------------------- recurrent DQN
def test_sequences_hold_each_chunk_with_its_next_observation_state_and_mask():
    from learners.transitions import segment_sequences

    batch = segments_batch()
    batch[Columns.STATE_IN] = {"h": np.arange(7, dtype=np.float32)[:, None] + 100}
    seqs = segment_sequences(batch, seq_len=2)
    # Segments [0..3) terminated, [3..5) truncated, [5..7) cut: chunks (0,1) (2) (3,4) (5,6).
    np.testing.assert_array_equal(seqs[Columns.OBS][:, :, 0], [[0, 10, 20], [20, -1, 0], [30, 40, -2], [50, 60, -3]])
    np.testing.assert_array_equal(seqs[Columns.LOSS_MASK], [[1, 1], [1, 0], [1, 1], [1, 1]])
    np.testing.assert_array_equal(seqs[Columns.TERMINATEDS], [[0, 0], [1, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(seqs[Columns.ACTIONS], [[0, 1], [0, 0], [1, 1], [0, 1]])
    np.testing.assert_array_equal(seqs[Columns.STATE_IN]["h"][:, 0], [100, 102, 103, 105])


def test_sequence_targets_equal_transition_targets_for_a_feed_forward_q_network():
    from learners.dqn_learner import td_targets
    from learners.transitions import segment_sequences

    algo = small_config().build()
    try:
        batch, _ = algo.env_runner_group.sample(300)
        batch = batch["default_policy"]
        batch[Columns.STATE_IN] = {"h": np.zeros((len(batch[Columns.OBS]), 1), np.float32)}
        seqs, flat = segment_sequences(batch, 20), segment_transitions(batch, 1, 0.99)
        module = algo.get_module()

        def targets(obs_next_online, obs_next_target, rewards, terminateds, n_step):
            return td_targets(rewards=torch.as_tensor(rewards), terminateds=torch.as_tensor(terminateds),
                              n_step=torch.as_tensor(n_step), gamma=0.99, q_target_next=obs_next_target,
                              q_online_next=obs_next_online, next_mask=None, double_q=True)

        with torch.no_grad():
            obs = torch.as_tensor(seqs[Columns.OBS])
            online, target = module.compute_q_values({Columns.OBS: obs})[QF_PREDS], \
                module.forward_target({Columns.OBS: obs})[QF_PREDS]
            by_sequence = targets(online[:, 1:], target[:, 1:], seqs[Columns.REWARDS], seqs[Columns.TERMINATEDS],
                                  np.ones(seqs[Columns.REWARDS].shape, np.int64))
            nxt = torch.as_tensor(flat[Columns.NEXT_OBS])
            by_row = targets(module.compute_q_values({Columns.OBS: nxt})[QF_PREDS],
                             module.forward_target({Columns.OBS: nxt})[QF_PREDS], flat[Columns.REWARDS],
                             flat[Columns.TERMINATEDS], flat[N_STEP])
        valid = seqs[Columns.LOSS_MASK]
        assert valid.sum() == len(by_row)
        np.testing.assert_allclose(by_sequence.numpy()[valid], by_row.numpy(), rtol=1e-6)  # same order
    finally:
        algo.stop()


def test_a_recurrent_q_module_carries_state_and_trains_on_sequences_after_burn_in():
    cfg = (DQNConfig().environment("CartPole-v1")
           .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16], use_lstm=True, lstm_cell_size=8, max_seq_len=8))
           .training(num_steps_sampled_before_learning_starts=64, burn_in_len=2, train_batch_size_per_learner=64)
           .reporting(min_sample_timesteps_per_iteration=128).debugging(seed=0))
    algo = cfg.build()
    try:
        module = algo.get_module()
        assert module.is_stateful() and set(module.get_initial_state()) == {"h", "c"}
        result = algo.train()
        buffer = algo.replay_buffers["default_policy"]
        assert buffer.columns[Columns.OBS].shape[1:] == (9, 4)  # 8 steps and the next observation
        assert (buffer.columns[Columns.LOSS_MASK][: len(buffer)].sum(1) > 2).all()  # burn-in-only chunks dropped
        stats = result["learners"]["default_policy"]
        assert stats["num_module_steps_trained"] <= 64 and stats["qf_loss"] > 0
    finally:
        algo.stop()
    with pytest.raises(ConfigError, match="n_step=3: recurrent Q-module 'default_policy'"):
        cfg.copy().training(n_step=3).build()
    with pytest.raises(ConfigError, match="burn_in_len=8"):
        cfg.copy().training(burn_in_len=8).build()
