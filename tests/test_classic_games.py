"""Turn-based (PettingZoo classic) games: default models, win/draw/loss evaluation, self-play pool."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo import AECEnv

from marl import PPOConfig
from marl.algorithms.game_evaluation import evaluate_policy, play_games, random_player
from marl.algorithms.module_setup import board_conv_filters
from marl.algorithms.self_play import OpponentPool, RandomSeats, self_play_config

TINY_PPO = dict(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=1)


# ------------------------------------------------------------ default models
@pytest.mark.parametrize("env, board", [
    ("classic/connect_four-v3", (6, 7, 2)),
    ("pettingzoo.classic.tictactoe_v3", (3, 3, 2)),
])
def test_classic_board_trains_with_the_default_model(env, board):
    algo = PPOConfig().environment(env).training(**TINY_PPO).debugging(seed=0).build()
    try:
        module = algo.get_module()
        # The small-board default: a dense layer over the whole board (a conv whose kernel is the board), then 256.
        assert module.model_config["conv_filters"] == board_conv_filters(board[0], board[1])
        first_conv = module.encoder.obs_encoder.net.layers[0]
        assert isinstance(first_conv, torch.nn.Conv2d)
        assert first_conv.kernel_size == board[:2] and first_conv.in_channels == board[2]
        assert module.encoder.output_dim == 256
        before = {k: v.clone() for k, v in module.state_dict().items()}
        for _ in range(2):
            result = algo.train()
        losses = result["learners"]["default_policy"]
        assert math.isfinite(losses["total_loss"]) and math.isfinite(losses["policy_loss"])
        assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
        # Zero-sum: the team return is 0, the per-agent returns say who won.
        runners = result["env_runners"]
        assert runners["episode_return_mean"] == pytest.approx(0.0)
        assert set(runners["agent_episode_returns_mean"]) == set(algo.env_creator().possible_agents)
    finally:
        algo.stop()


def test_user_conv_filters_win_over_the_board_default():
    filters = [[8, 3, 1]]
    algo = (PPOConfig().environment("classic/tictactoe-v3").training(**TINY_PPO)
            .rl_module(model_config={"conv_filters": filters}).build())
    try:
        assert algo.get_module().model_config["conv_filters"] == filters
    finally:
        algo.stop()


# ------------------------------------------------------- a hand-made game
class PileGame(AECEnv):
    """Two players take 1 or 2 stones in turn from a pile; whoever takes the last stone wins.

    Action ``k`` takes ``k + 1`` stones; the action mask forbids taking more than
    the pile holds, or 2 when ``max_take=1``. An illegal action raises, so a player
    that ignores the mask cannot go unnoticed.
    """

    metadata = {"name": "pile_v0", "is_parallelizable": False, "render_modes": []}

    def __init__(self, pile: int = 3, max_take: int = 2) -> None:
        super().__init__()
        self.start_pile, self.max_take = pile, max_take
        self.possible_agents = ["first", "second"]
        self._obs_space = gym.spaces.Dict({
            "observation": gym.spaces.Box(0, pile, (1,), np.float32),
            "action_mask": gym.spaces.Box(0, 1, (2,), np.int8),
        })

    def observation_space(self, agent: str) -> gym.Space:
        return self._obs_space

    def action_space(self, agent: str) -> gym.Space:
        return gym.spaces.Discrete(2)

    def _mask(self) -> np.ndarray:
        return np.array([1, int(self.pile >= 2 and self.max_take >= 2)], np.int8)

    def observe(self, agent: str) -> Dict[str, np.ndarray]:
        return {"observation": np.array([self.pile], np.float32), "action_mask": self._mask()}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None) -> None:
        self.agents = list(self.possible_agents)
        self.pile = self.start_pile
        self.rewards = {a: 0 for a in self.agents}
        self._cumulative_rewards = {a: 0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = "first"

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent]:
            return self._was_dead_step(action)
        if not self._mask()[action]:
            raise ValueError(f"illegal action {action} at pile {self.pile}")
        other = "second" if agent == "first" else "first"
        self.pile -= int(action) + 1
        self.rewards = {a: 0 for a in self.agents}
        if self.pile == 0:
            self.rewards.update({agent: 1, other: -1})
            self.terminations = {a: True for a in self.agents}
        self._cumulative_rewards[agent] = 0
        self.agent_selection = other
        self._accumulate_rewards()


def perfect(obs: Any, space: gym.Space, rng: np.random.Generator) -> int:
    """Leave the opponent a multiple of 3 when possible (the winning strategy), else take 1."""
    return max(int(obs["observation"][0]) % 3 - 1, 0)


def take_one(obs: Any, space: gym.Space, rng: np.random.Generator) -> int:
    return 0


def pile_game(config: dict) -> PileGame:
    return PileGame(**config)


def test_perfect_play_beats_a_scripted_opponent_from_both_seats():
    results = play_games(pile_game, perfect, take_one, num_games=10)
    assert results.to_dict() == {"games": 10, "win_rate": 1.0, "draw_rate": 0.0, "loss_rate": 0.0,
                               "win_rate_as_first": 1.0, "win_rate_as_second": 1.0}


def test_seats_alternate_and_each_seat_is_counted():
    # Perfect against perfect: the second player wins pile 3 (3 is a losing pile to move from).
    results = play_games(pile_game, perfect, perfect, num_games=6)
    assert results.by_seat == {"first": {"win": 0, "draw": 0, "loss": 3}, "second": {"win": 3, "draw": 0, "loss": 0}}
    assert (results.win_rate, results.loss_rate) == (0.5, 0.5)


def test_random_opponent_respects_the_action_mask():
    # With max_take=1 the only legal move is "take one": the first player takes stones 1 and 3 and wins.
    # A random player ignoring the mask would take 2 (illegal: PileGame raises).
    results = play_games(pile_game, random_player, random_player, num_games=8, seed=3,
                         env_config={"max_take": 1})
    assert results.to_dict() == {"games": 8, "win_rate": 0.5, "draw_rate": 0.0, "loss_rate": 0.5,
                                 "win_rate_as_first": 1.0, "win_rate_as_second": 0.0}


def test_random_opponent_plays_every_legal_move_and_games_are_seeded():
    moves = []

    def recording_random(obs, space, rng):
        action = random_player(obs, space, rng)
        moves.append(action)
        return action

    first = play_games(pile_game, perfect, recording_random, num_games=20, seed=5)
    assert set(moves) == {0, 1}
    again = play_games(pile_game, perfect, random_player, num_games=20, seed=5)
    assert first.by_seat == again.by_seat
    # As second player perfect play wins pile 3 whatever the first takes; as first it leaves 2,
    # which a random player takes at once half the time.
    assert first.rate("win", "second") == 1.0
    assert 0.0 < first.rate("win", "first") < 1.0


def test_simultaneous_game_draws_are_counted():
    rock = lambda obs, space, rng: 0  # noqa: E731
    paper = lambda obs, space, rng: 1  # noqa: E731
    assert play_games("classic/rps-v2", rock, rock, num_games=4).draw_rate == 1.0
    assert play_games("classic/rps-v2", paper, rock, num_games=4).win_rate == 1.0


def test_evaluate_policy_plays_a_module_greedily_within_the_mask():
    algo = PPOConfig().environment(pile_game, env_config={"max_take": 1}).training(**TINY_PPO).build()
    try:
        results = evaluate_policy(algo.get_module(), algo.env_creator, "random", num_games=4)
        assert results.by_seat == {"first": {"win": 2, "draw": 0, "loss": 0},
                                   "second": {"win": 0, "draw": 0, "loss": 2}}
        frozen = evaluate_policy(algo.get_module(), algo.env_creator, algo.get_module(), num_games=2)
        assert frozen.win_rate == 0.5
    finally:
        algo.stop()


def test_eval_opponent_rates_of_a_checkpoint(tmp_path):
    from marl.experiment.evaluation import evaluate_games

    algo = PPOConfig().environment(pile_game, env_config={"max_take": 1}).training(**TINY_PPO).build()
    try:
        checkpoint = algo.save_to_path(str(tmp_path / "checkpoint"))
    finally:
        algo.stop()
    vs_random = evaluate_games(checkpoint, "random", games=4, seed=0)
    assert vs_random.by_seat == {"first": {"win": 2, "draw": 0, "loss": 0}, "second": {"win": 0, "draw": 0, "loss": 2}}
    assert "4 games vs random: win 0.50, draw 0.00, loss 0.50 (as first: win 1.00; as second: win 0.00)" == \
        vs_random.summary("random")
    assert evaluate_games(checkpoint, checkpoint, games=2, seed=0).win_rate == 0.5


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="num_games must be an int >= 1, got 0"):
        play_games(pile_game, perfect, perfect, num_games=0)
    with pytest.raises(ValueError, match="two-player env.*agents"):
        play_games("mpe2.simple_spread_v3", perfect, perfect, num_games=1)
    with pytest.raises(ValueError, match="opponent 'best'"):
        evaluate_policy(None, pile_game, opponent="best")


# ------------------------------------------------------------------ self-play
def test_random_seats_give_main_one_seat_per_episode():
    seats = RandomSeats(("first", "second"))

    class Episode:
        def __init__(self, id_):
            self.id_ = id_

    modules = [(seats("first", Episode(i)), seats("second", Episode(i))) for i in range(40)]
    assert all(sorted(pair) == ["main", "opponent"] for pair in modules)
    assert 10 < sum(pair[0] == "main" for pair in modules) < 30
    with pytest.raises(ValueError, match="agent 'third' is not one of the seats"):
        seats("third", Episode(0))


def test_self_play_pool_swaps_in_past_snapshots_of_main():
    config = self_play_config(PPOConfig().environment(pile_game).training(**TINY_PPO).debugging(seed=0))
    algo = config.build()
    try:
        modules = algo.learner.module
        pool = OpponentPool(algo, swap_every=2, seed=0)
        initial = modules["main"].get_state()
        assert _equal_states(modules["opponent"].get_state(), initial)
        opponent_before = modules["opponent"].get_state()
        pool.train()  # iteration 1: no swap, only main trained
        assert _equal_states(modules["opponent"].get_state(), opponent_before)
        assert not _equal_states(modules["main"].get_state(), initial)
        result = pool.train()  # iteration 2: snapshot main and swap
        assert result["self_play"]["pool_size"] == 2
        snapshots = dict(pool.snapshots)
        opponent = modules["opponent"].get_state()
        assert _equal_states(opponent, snapshots[result["self_play"]["opponent_snapshot_iteration"]])
        for _ in range(4):
            pool.train()
        assert [it for it, _ in pool.snapshots] == [0, 2, 4, 6]
        opponent = modules["opponent"].get_state()
        assert any(_equal_states(opponent, s) for _, s in pool.snapshots)
        assert not _equal_states(opponent, modules["main"].get_state())
        # The env runners act with the opponent's swapped weights too.
        assert _equal_states(algo.env_runner_group.get_weights()["opponent"], opponent)
    finally:
        algo.stop()


def _equal_states(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def test_run_marl_trains_tictactoe_and_evaluates_it_against_a_random_player(tmp_path, capsys):
    from scripts import run_marl

    run = tmp_path / "ttt"
    run_marl.main(["--env", "classic/tictactoe-v3", "--policy-setup", "shared", "--stop-iters", "1",
                   "--train_batch_size_per_learner=64", "--minibatch_size=32", "--num_epochs=1",
                   "--no-progress", "--run-dir", str(run)])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("iter 1 "))
    # a zero-sum game: the line shows each player's return, not a team return of 0.00
    assert "return player_1 " in line and ", player_2 " in line, line
    outcome = run_marl.main(["--eval", str(run), "--eval-episodes", "6", "--eval-opponent", "random", "--seed", "0"])
    games = outcome["games"]
    assert games["games"] == 6
    assert math.isclose(games["win_rate"] + games["draw_rate"] + games["loss_rate"], 1.0)
    assert "6 games vs random: win " in capsys.readouterr().out


def test_run_marl_self_play_logs_win_rates_against_random_while_training(tmp_path, capsys):
    import json

    from scripts import run_marl

    run = tmp_path / "self-play"
    run_marl.main(["--env", "classic/tictactoe-v3", "--self-play", "1", "--eval-opponent", "random",
                   "--eval-interval", "1", "--eval-episodes", "6", "--stop-iters", "2",
                   "--train_batch_size_per_learner=64", "--minibatch_size=32", "--num_epochs=1",
                   "--no-progress", "--run-dir", str(run)])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("iter ")]
    assert len(lines) == 2 and all(" | win 0." in x or " | win 1." in x for x in lines), lines
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["evaluation/games/games"] == 6
        assert math.isclose(row["evaluation/games/win_rate"] + row["evaluation/games/draw_rate"]
                            + row["evaluation/games/loss_rate"], 1.0)
    assert [r["self_play/pool_size"] for r in rows] == [2, 3]  # the initial weights, then one per iteration
    algo = __import__("marl").Algorithm.from_checkpoint(str(run / "checkpoint"))
    try:
        assert set(algo.get_module(None).keys()) == {"main", "opponent"}
        assert algo.config.policies_to_train == ["main"]
    finally:
        algo.stop()


@pytest.mark.parametrize("argv, named", [
    (["--env", "classic/tictactoe-v3", "--eval-opponent", "random", "--stop-iters", "1"], "--eval-opponent"),
    (["--env", "CartPole-v1", "--self-play", "2", "--stop-iters", "1"], "--self-play"),
])
def test_run_marl_refuses_game_options_that_cannot_apply(tmp_path, capsys, argv, named):
    from scripts import run_marl

    with pytest.raises(SystemExit) as exit_info:
        run_marl.main(argv + ["--run-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err
