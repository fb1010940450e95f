"""Win, draw and loss rates of a policy in two-player games, from both seats.

Why this exists: in a zero-sum game the team return (the sum over agents that
training reports) is 0 whatever the players do, and a policy trained by
self-play only ever met itself. What tells whether it learned is how often it
beats a fixed opponent: a random player that respects the action mask, or a
frozen earlier copy of itself. Games alternate seats (first player in even
games, second in odd ones), and game ``i`` resets the env with ``seed + i``,
so the rates are reproducible and fair to both seats.

A game is won by the seat with the larger total reward (PettingZoo's classic
games give +1 / -1 at the end, 0 / 0 for a draw), so any two-player game with
a ParallelEnv or AECEnv interface works, turn-based or simultaneous.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Union

import gymnasium as gym
import numpy as np
import torch

from marl.core.columns import Columns
from marl.core.nested import tree_map
from marl.models.action_masking import ACTION_MASK_KEY

#: ``player(observation, action_space, rng) -> action`` for the agent whose turn it is.
Player = Callable[[Any, gym.Space, np.random.Generator], Any]
#: One player for every seat, or one per seat (e.g. per-agent modules trained for their own seat).
Players = Union[Player, Mapping[Any, Player]]
#: An outcome from the evaluated policy's side.
WIN, DRAW, LOSS = "win", "draw", "loss"


@dataclass
class GameResults:
    """Outcomes of the evaluated policy; ``by_seat[agent]`` counts the games it played as ``agent``."""

    by_seat: Dict[Any, Dict[str, int]] = field(default_factory=dict)

    def record(self, seat: Any, outcome: str) -> None:
        counts = self.by_seat.setdefault(seat, {WIN: 0, DRAW: 0, LOSS: 0})
        counts[outcome] += 1

    def count(self, outcome: str, seat: Any = None) -> int:
        """Games with ``outcome`` (from one seat, or from all)."""
        seats = self.by_seat.values() if seat is None else [self.by_seat.get(seat, {})]
        return sum(c.get(outcome, 0) for c in seats)

    def rate(self, outcome: str, seat: Any = None) -> float:
        games = sum(self.count(o, seat) for o in (WIN, DRAW, LOSS))
        return self.count(outcome, seat) / games if games else float("nan")

    @property
    def games(self) -> int:
        return sum(self.count(o) for o in (WIN, DRAW, LOSS))

    @property
    def win_rate(self) -> float:
        return self.rate(WIN)

    @property
    def draw_rate(self) -> float:
        return self.rate(DRAW)

    @property
    def loss_rate(self) -> float:
        return self.rate(LOSS)

    def summary(self, opponent: str = "the opponent") -> str:
        """One line for the console: overall rates, then the win rate from each seat."""
        seats = "; ".join(f"as {seat}: win {self.rate(WIN, seat):.2f}" for seat in self.by_seat)
        return (f"{self.games} games vs {opponent}: win {self.win_rate:.2f}, draw {self.draw_rate:.2f}, "
                f"loss {self.loss_rate:.2f} ({seats})")

    def to_dict(self) -> Dict[str, Any]:
        """Flat metrics: overall rates, then ``win_rate_as_<seat>`` per seat."""
        out: Dict[str, Any] = {"games": self.games, "win_rate": self.win_rate,
                               "draw_rate": self.draw_rate, "loss_rate": self.loss_rate}
        for seat in self.by_seat:
            out[f"win_rate_as_{seat}"] = self.rate(WIN, seat)
        return out


# ------------------------------------------------------------------ players
def random_player(observation: Any, action_space: gym.Space, rng: np.random.Generator) -> int:
    """A uniformly random legal action: from the observation's action mask, else any of a Discrete space."""
    mask = _action_mask(observation)
    if mask is not None:
        legal = np.flatnonzero(mask)
        if legal.size == 0:
            raise ValueError(f"random_player: the action mask {mask.tolist()} allows no action.")
        return int(rng.choice(legal))
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.start + rng.integers(int(action_space.n)))
    raise TypeError(f"random_player needs an action mask or a Discrete action space; got {action_space}.")


def module_player(module: Any, explore: bool = False) -> Player:
    """Play with an RLModule: its greedy (argmax) action, or a sample with ``explore=True``.

    The observation goes to ``forward_inference`` as a batch of one, unchanged
    (no env-to-module connectors); illegal actions are masked again here, so a
    module that ignores masks still plays legal moves.
    """

    def play(observation: Any, action_space: gym.Space, rng: np.random.Generator) -> int:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise TypeError(f"module_player supports Discrete action spaces; got {action_space}.")
        batch = {Columns.OBS: tree_map(lambda x: torch.as_tensor(np.asarray(x)[None]), observation)}
        with torch.no_grad():
            logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0].double().numpy()
        mask = _action_mask(observation)
        if mask is not None:
            logits = np.where(mask.astype(bool), logits, -np.inf)
        if explore:
            probs = np.exp(logits - logits.max())
            action = int(rng.choice(len(probs), p=probs / probs.sum()))
        else:
            action = int(np.argmax(logits))
        return int(action_space.start) + action

    return play


def algorithm_players(algo: Any, explore: bool = False) -> Dict[Any, Player]:
    """``{seat: player}`` for a trained algorithm: ``"main"`` in every seat when it has
    that module (a self-play run, see `marl.algorithms.self_play`), else the module
    its ``policy_mapping_fn`` gives the seat (shared or per-agent setups)."""
    env = algo.env_creator()
    try:
        seats = list(env.possible_agents)
    finally:
        env.close()
    modules = algo.learner.module
    ids = {seat: "main" if "main" in modules else algo.policy_mapping_fn(seat, None) for seat in seats}
    return {seat: module_player(modules[module_id], explore) for seat, module_id in ids.items()}


def _action_mask(observation: Any) -> Optional[np.ndarray]:
    if isinstance(observation, dict) and ACTION_MASK_KEY in observation:
        return np.asarray(observation[ACTION_MASK_KEY])
    return None


# -------------------------------------------------------------------- games
def play_games(
    env: Any,
    player: Players,
    opponent: Players,
    num_games: int = 100,
    seed: int = 0,
    env_config: Optional[Dict[str, Any]] = None,
) -> GameResults:
    """Play ``num_games`` two-player games of ``player`` against ``opponent``.

    ``env`` is anything ``.environment()`` accepts (``"classic/connect_four-v3"``,
    a creator such as ``algo.env_creator``). In game ``i`` the player takes seat
    ``i % 2`` of ``possible_agents``, the env is reset with ``seed + i`` and both
    players draw their random numbers from ``numpy.random.default_rng([seed, i])``.
    ``player`` / ``opponent`` may map seats to players (``{"player_0": ...}``).
    """
    from envs.registry import make_env_creator

    if isinstance(num_games, bool) or not isinstance(num_games, int) or num_games < 1:
        raise ValueError(f"play_games: num_games must be an int >= 1, got {num_games!r}.")
    instance = make_env_creator(env, env_config)()
    try:
        seats = list(instance.possible_agents)
        if len(seats) != 2:
            raise ValueError(f"play_games needs a two-player env; {env!r} has agents {seats}.")
        results = GameResults()
        for game in range(num_games):
            seat, other = seats[game % 2], seats[1 - game % 2]
            rng = np.random.default_rng([seed, game])
            players = {seat: _for_seat(player, seat), other: _for_seat(opponent, other)}
            returns = _play_one(instance, players, seed + game, rng)
            results.record(seat, _outcome(returns[seat], returns[other]))
        return results
    finally:
        instance.close()


def evaluate_policy(
    module: Any,
    env: Any,
    opponent: Union[str, Any, Player] = "random",
    num_games: int = 100,
    seed: int = 0,
    explore: bool = False,
    env_config: Optional[Dict[str, Any]] = None,
) -> GameResults:
    """Rates of ``module`` (greedy unless ``explore``) against ``opponent``, from both seats.

    ``opponent``: ``"random"`` (a random legal move), another RLModule (e.g. a
    frozen earlier copy, played like ``module``) or a `Player` function.
    """
    if isinstance(opponent, str):
        if opponent != "random":
            raise ValueError(f"evaluate_policy: opponent {opponent!r} is not 'random', an RLModule or a player.")
        opponent_player: Player = random_player
    elif hasattr(opponent, "forward_inference"):
        opponent_player = module_player(opponent, explore=explore)
    elif callable(opponent):
        opponent_player = opponent
    else:
        raise TypeError(f"evaluate_policy: opponent must be 'random', an RLModule or a player function; "
                        f"got {type(opponent).__name__}.")
    return play_games(env, module_player(module, explore=explore), opponent_player, num_games, seed, env_config)


def _play_one(env: Any, players: Dict[Any, Player], seed: int, rng: np.random.Generator) -> Dict[Any, float]:
    """One episode; every agent in the observations that has not finished acts. Returns total rewards."""
    observations, _ = env.reset(seed=seed)
    returns = {agent: 0.0 for agent in players}
    finished: set = set()
    while True:
        acting = {a: o for a, o in observations.items() if a not in finished}
        if not acting:
            return returns
        actions = {a: players[a](o, env.action_space(a), rng) for a, o in acting.items()}
        observations, rewards, terminations, truncations, _ = env.step(actions)
        for agent, reward in rewards.items():
            returns[agent] += float(reward)
        finished.update(a for a in terminations if terminations[a] or truncations.get(a, False))


def _for_seat(players: Players, seat: Any) -> Player:
    if not isinstance(players, Mapping):
        return players
    if seat not in players:
        raise KeyError(f"play_games: no player for seat {seat!r}; players are given for {list(players)}.")
    return players[seat]


def _outcome(own: float, other: float) -> str:
    return WIN if own > other else LOSS if own < other else DRAW

