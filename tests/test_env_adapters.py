"""Adapters into the common interface: MultiAgentCartPole, gymnasium and AEC (turn-based) envs."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Box, Dict, Discrete
from pettingzoo import AECEnv
from pettingzoo.classic import connect_four_v3, tictactoe_v3
from pettingzoo.utils import BaseWrapper

from envs import MultiAgentCartPole, MultiAgentPendulum, SingleAgentParallelEnv, TurnBasedParallelEnv
from marl.core.constants import DEFAULT_AGENT_ID


def balance(obs: np.ndarray) -> int:
    """A controller that keeps a CartPole up for the full 500 steps."""
    return int(3 * obs[2] + obs[3] > 0)


# ------------------------------------------------------------ MultiAgentCartPole
def test_cartpole_agent_ids_are_ints_0_to_n_minus_1():
    env = MultiAgentCartPole(config={"num_agents": 3})
    obs, infos = env.reset(seed=0)
    assert env.possible_agents == [0, 1, 2]
    assert set(obs) == {0, 1, 2} and set(infos) == {0, 1, 2}
    assert env.observation_space(2).shape == (4,)
    assert env.action_space(1) == Discrete(2)


def test_cartpole_defaults_to_two_agents():
    assert MultiAgentCartPole().possible_agents == [0, 1]


def test_cartpole_fallen_agent_is_terminated_and_removed_while_others_go_on():
    env = MultiAgentCartPole({"num_agents": 2})
    obs, _ = env.reset(seed=1)
    for _ in range(100):
        # Agent 0 always pushes right and falls; agent 1 balances.
        obs, rewards, terms, truncs, _ = env.step({0: 1, 1: balance(obs[1])})
        if terms[0]:
            break
    assert terms[0] and not truncs[0]
    assert 0 in obs, "the fallen agent's final observation is returned"
    assert env.agents == [1] and not terms[1]
    # The episode goes on without agent 0; no action is needed for it.
    obs, rewards, terms, truncs, _ = env.step({1: balance(obs[1])})
    assert set(obs) == {1} and set(rewards) == {1} and rewards[1] == 1.0


def test_cartpole_episode_ends_when_all_agents_are_done_and_truncates_at_500():
    env = MultiAgentCartPole({"num_agents": 2})
    obs, _ = env.reset(seed=2)
    steps = 0
    while env.agents:
        obs, _, terms, truncs, _ = env.step({a: balance(obs[a]) for a in env.agents})
        steps += 1
    assert steps == 500
    assert truncs == {0: True, 1: True} and terms == {0: False, 1: False}
    with pytest.raises(RuntimeError, match="reset"):
        env.step({0: 0, 1: 0})


def test_cartpole_same_seed_gives_same_obs_and_copy_i_is_seeded_with_seed_plus_i():
    env_a, env_b = MultiAgentCartPole({"num_agents": 3}), MultiAgentCartPole({"num_agents": 3})
    obs_a, _ = env_a.reset(seed=7)
    obs_b, _ = env_b.reset(seed=7)
    for agent in range(3):
        np.testing.assert_array_equal(obs_a[agent], obs_b[agent])
        reference, _ = gym.make("CartPole-v1").reset(seed=7 + agent)
        np.testing.assert_array_equal(obs_a[agent], reference)
    assert not np.array_equal(obs_a[0], obs_a[1]), "copies must start from different states"
    step_a = env_a.step({0: 1, 1: 0, 2: 1})[0]
    step_b = env_b.step({0: 1, 1: 0, 2: 1})[0]
    for agent in range(3):
        np.testing.assert_array_equal(step_a[agent], step_b[agent])


def test_cartpole_missing_action_error_names_the_agent():
    env = MultiAgentCartPole({"num_agents": 2})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing actions for live agent\(s\) \[1\]"):
        env.step({0: 1})


def test_cartpole_rejects_bad_config():
    with pytest.raises(ValueError, match="num_agent"):
        MultiAgentCartPole({"num_agent": 2})
    with pytest.raises(ValueError, match="'num_agents' must be an int >= 1, got 0"):
        MultiAgentCartPole({"num_agents": 0})


# ------------------------------------------------------------ MultiAgentPendulum
def test_pendulum_copies_step_independently_and_truncate_together_at_200():
    """RLlib's MultiAgentPendulum (its tuned multi-agent SAC's env): copy i is Pendulum-v1
    seeded with seed + i, each agent's reward is its own copy's."""
    env = MultiAgentPendulum({"num_agents": 2})
    obs, _ = env.reset(seed=5)
    reference = [gym.make("Pendulum-v1") for _ in range(2)]
    for agent, ref in enumerate(reference):
        np.testing.assert_array_equal(obs[agent], ref.reset(seed=5 + agent)[0])
    assert env.action_space(0).shape == (1,) and env.observation_space(1).shape == (3,)
    steps = 0
    while env.agents:
        torques = {0: np.array([1.5], np.float32), 1: np.array([-0.5], np.float32)}
        obs, rewards, terms, truncs, _ = env.step(torques)
        for agent, ref in enumerate(reference):
            ref_obs, ref_reward, *_ = ref.step(torques[agent])
            np.testing.assert_array_equal(obs[agent], ref_obs)
            assert rewards[agent] == pytest.approx(ref_reward)
        steps += 1
    assert steps == 200 and truncs == {0: True, 1: True} and terms == {0: False, 1: False}


def test_pendulum_action_of_the_wrong_shape_is_named():
    env = MultiAgentPendulum({"num_agents": 1})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"MultiAgentPendulum: action array\(\[1\., 2\.\]\) for agent 0"):
        env.step({0: np.array([1.0, 2.0])})


# ------------------------------------------------------------ gymnasium adapter
def test_gym_adapter_presents_one_default_agent_with_the_envs_spaces():
    gym_env = gym.make("CartPole-v1")
    env = SingleAgentParallelEnv(gym_env)
    assert env.possible_agents == [DEFAULT_AGENT_ID]
    assert env.observation_space(DEFAULT_AGENT_ID) == gym_env.observation_space
    assert env.action_space(DEFAULT_AGENT_ID) == gym_env.action_space
    obs, infos = env.reset(seed=3)
    reference, _ = gym.make("CartPole-v1").reset(seed=3)
    np.testing.assert_array_equal(obs[DEFAULT_AGENT_ID], reference)
    assert env.agents == [DEFAULT_AGENT_ID]


def test_gym_adapter_returns_final_obs_then_has_no_agents():
    env = SingleAgentParallelEnv(gym.make("CartPole-v1"))
    env.reset(seed=0)
    total = 0.0
    while env.agents:
        obs, rewards, terms, truncs, _ = env.step({DEFAULT_AGENT_ID: 1})
        total += rewards[DEFAULT_AGENT_ID]
    assert terms[DEFAULT_AGENT_ID] and DEFAULT_AGENT_ID in obs
    assert 5 <= total < 50  # always pushing right fails fast
    with pytest.raises(RuntimeError, match="reset"):
        env.step({DEFAULT_AGENT_ID: 1})


def test_gym_adapter_names_the_expected_agent_on_a_wrong_key():
    env = SingleAgentParallelEnv(gym.make("CartPole-v1"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=repr(DEFAULT_AGENT_ID)):
        env.step({0: 1})


# ------------------------------------------------------------ turn-based (AEC)
class CumulativeRewardRecorder(BaseWrapper):
    """Records the AEC env's own `_cumulative_rewards` after every live move."""

    def reset(self, seed=None, options=None):
        super().reset(seed=seed, options=options)
        self.cumulative = {}

    def step(self, action):
        super().step(action)
        if action is not None:
            self.cumulative = dict(self.env.unwrapped._cumulative_rewards)


def legal_under_board(aec: AECEnv, game: str, action: int) -> bool:
    """The env's own board says ``action`` is legal (checked before it is played)."""
    board = aec.unwrapped.board
    if game == "tictactoe":
        return board.squares[action] == 0
    return board[action] == 0  # connect four: the column's top cell is free


def tictactoe_winner(squares: list[int]) -> str | None:
    """Independent three-in-a-row check; marks 1 / 2 belong to player_1 / player_2."""
    lines = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
    for a, b, c in lines:
        if squares[a] != 0 and squares[a] == squares[b] == squares[c]:
            return f"player_{squares[a]}"
    return None


@pytest.mark.parametrize(
    "game, make_aec, num_games",
    [("tictactoe", tictactoe_v3.env, 150), ("connect_four", connect_four_v3.env, 60)],
)
def test_turn_based_random_legal_play_credits_final_rewards_to_both_players(game, make_aec, num_games):
    recorder = CumulativeRewardRecorder(make_aec())
    env = TurnBasedParallelEnv(recorder)
    assert not env.mask_from_info, "classic envs carry the mask in the observation"
    rng = np.random.default_rng(0)
    outcomes = set()
    for episode in range(num_games):
        obs, _ = env.reset(seed=episode)
        totals = dict.fromkeys(env.possible_agents, 0.0)
        while env.agents:
            acting = [a for a in obs if a in env.agents]
            assert acting == [recorder.agent_selection], "exactly the agent whose turn it is acts"
            agent = acting[0]
            assert env.observation_space(agent).contains(obs[agent])
            action = int(rng.choice(np.flatnonzero(obs[agent]["action_mask"])))
            assert legal_under_board(recorder, game, action), f"illegal move {action} in {game}"
            obs, rewards, terms, truncs, _ = env.step({agent: action})
            for a, r in rewards.items():
                totals[a] += r
        # The game's end reaches both players, in the same final step.
        assert set(rewards) == set(env.possible_agents)
        assert all(terms.values())
        assert set(obs) == set(env.possible_agents), "final observations of both players"
        result = tuple(totals[a] for a in env.possible_agents)
        assert result in {(1.0, -1.0), (-1.0, 1.0), (0.0, 0.0)}
        assert totals == pytest.approx(recorder.cumulative), "no reward lost or counted twice"
        if game == "tictactoe":
            winner = tictactoe_winner(recorder.unwrapped.board.squares)
            expected = {a: 0.0 for a in env.possible_agents}
            if winner is not None:
                expected = {a: (1.0 if a == winner else -1.0) for a in env.possible_agents}
            assert totals == expected
        outcomes.add(result)
    assert {(1.0, -1.0), (-1.0, 1.0)} <= outcomes, "both players must win some games"


class RelayEnv(AECEnv):
    """Three players move in turn; masks come in infos.

    Each move pays +1 to the agent that moved before (who is now waiting) and
    0.1 * action to the mover. p2 leaves after its second move. After 7 moves the
    game ends and every remaining player is paid -5.
    """

    metadata = {"name": "relay_v0", "render_modes": []}

    def __init__(self):
        super().__init__()
        self.possible_agents = ["p0", "p1", "p2"]
        self.render_mode = None

    def observation_space(self, agent):
        return Box(0, 100, (1,), np.float32)

    def action_space(self, agent):
        return Discrete(3)

    def observe(self, agent):
        return np.array([self.moves], np.float32)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {"action_mask": np.array([1, 1, 0], np.int8)} for a in self.agents}
        self.moves, self.moves_by, self.last_mover = 0, dict.fromkeys(self.agents, 0), None
        self.agent_selection = "p0"

    def step(self, action):
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        assert action in (0, 1), f"illegal action {action} (masked out)"
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if self.last_mover in self.rewards:
            self.rewards[self.last_mover] += 1.0
        self.rewards[agent] += 0.1 * action
        self.moves += 1
        self.moves_by[agent] += 1
        self.last_mover = agent
        if agent == "p2" and self.moves_by[agent] == 2:
            self.terminations[agent] = True
        if self.moves >= 7:
            for a in self.agents:
                self.rewards[a] -= 5.0
                self.terminations[a] = True
        self._accumulate_rewards()
        order = self.possible_agents
        start = order.index(agent)
        candidates = [order[(start + k) % 3] for k in range(1, 4)]
        live = [a for a in candidates if a in self.agents and not self.terminations[a]]
        self.agent_selection = live[0] if live else agent
        self._deads_step_first()


def reference_totals(actions: list[int]) -> dict[str, float]:
    """Per-agent return the canonical AEC loop sees (sum of ``last()`` rewards)."""
    env = RelayEnv()
    env.reset()
    totals = dict.fromkeys(env.possible_agents, 0.0)
    moves = iter(actions)
    for agent in env.agent_iter():
        _, reward, term, trunc, _ = env.last()
        totals[agent] += reward
        env.step(None if term or trunc else next(moves))
    return totals


def test_turn_based_credits_rewards_to_waiting_and_finishing_agents():
    env = TurnBasedParallelEnv(RelayEnv())
    assert env.mask_from_info
    space = env.observation_space("p1")
    assert isinstance(space, Dict) and space["action_mask"] == Box(0, 1, (3,), np.int8)
    rng = np.random.default_rng(3)
    obs, _ = env.reset()
    totals = dict.fromkeys(env.possible_agents, 0.0)
    actions, step_rewards, step_obs_keys = [], [], []
    while env.agents:
        (agent,) = [a for a in obs if a in env.agents]
        assert space.contains(obs[agent]) and obs[agent]["action_mask"].tolist() == [1, 1, 0]
        action = int(rng.choice(np.flatnonzero(obs[agent]["action_mask"])))
        actions.append(action)
        obs, rewards, terms, truncs, _ = env.step({agent: action})
        step_rewards.append(rewards)
        step_obs_keys.append(set(obs))
        for a, r in rewards.items():
            totals[a] += r
        if terms.get("p2"):
            assert "p2" in obs and "p2" not in env.agents, "p2's final obs, then it is gone"
            assert env.agents == ["p0", "p1"]
    assert len(actions) == 7
    # Move 2 (p1 acts): the +1 for p0, who is waiting, arrives in that step's rewards.
    assert step_rewards[1]["p0"] == pytest.approx(1.0)
    # Move 7 (p0 acts): p1 is waiting, is paid -5 and finishes in the same step.
    assert step_rewards[6]["p1"] == pytest.approx(-5.0)
    assert step_obs_keys[6] == {"p0", "p1"}
    assert totals == pytest.approx(reference_totals(actions))


def test_turn_based_rejects_an_action_out_of_turn():
    env = TurnBasedParallelEnv(tictactoe_v3.env())
    obs, _ = env.reset(seed=0)
    (agent,) = obs
    other = next(a for a in env.possible_agents if a != agent)
    with pytest.raises(ValueError, match=f"only agent '{agent}' acts now"):
        env.step({agent: 0, other: 1})
    with pytest.raises(ValueError, match=f"it is the turn of agent '{agent}'"):
        env.step({other: 1})
