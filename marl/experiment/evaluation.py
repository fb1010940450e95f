"""Greedy episodes with a checkpoint's policies, optionally recorded as a GIF.

The episodes run through the library's own ``MultiAgentEnvRunner`` (same
connectors, mapping and action sampling as training) with ``explore=False``:
each module's deterministic action (argmax for discrete actions). With
``render=True`` the env is built with ``render_mode="rgb_array"`` and a thin
wrapper grabs a frame after every reset and step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from pettingzoo.utils import BaseParallelWrapper

from marl.experiment.cli import UsageError


class FrameRecorder(BaseParallelWrapper):
    """A ParallelEnv wrapper that appends ``env.render()`` to ``frames`` after reset and step."""

    def __init__(self, env: Any, frames: List[np.ndarray]) -> None:
        super().__init__(env)
        self.frames = frames

    def _grab(self) -> None:
        frame = self.env.render()
        if frame is None:
            raise UsageError(
                "argument --render: the env returned no frame from render(); it does not support "
                "render_mode='rgb_array'"
            )
        self.frames.append(np.asarray(frame, dtype=np.uint8))

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        result = self.env.reset(seed=seed, options=options)
        self._grab()
        return result

    def step(self, actions: Dict[Any, Any]):
        result = self.env.step(actions)
        self._grab()
        return result


@dataclass
class EvaluationResult:
    returns: List[float] = field(default_factory=list)
    lengths: List[int] = field(default_factory=list)
    agent_returns: List[Dict[str, float]] = field(default_factory=list)
    gif: Optional[Path] = None


def evaluate_checkpoint(checkpoint: Path, episodes: int, seed: Optional[int], render: bool,
                        gif_path: Optional[Path]) -> EvaluationResult:
    """Run ``episodes`` greedy episodes with the policies in ``checkpoint``."""
    from marl import Algorithm

    algo = Algorithm.from_checkpoint(str(checkpoint))
    try:
        cfg = algo.config
        env_config = dict(cfg.env_config or {})
        frames: List[np.ndarray] = []
        base_creator = algo.env_creator  # as the env runners build it (agent ids, padding)
        if render:
            env_config["render_mode"] = "rgb_array"

        def creator(config: dict) -> Any:
            env = base_creator(config)
            return FrameRecorder(env, frames) if render else env

        try:
            # Configured like training (action normalisation, connectors and
            # their statistics, e.g. a MeanStdFilter's), one env, greedy.
            runner = algo.build_local_env_runner(
                env_creator=creator, env_config=env_config, module=algo.get_module(None),
                num_envs=1, seed=seed, explore=False)
        except TypeError as e:
            if render:
                raise UsageError(f"argument --render: env {cfg.env!r} cannot be built with "
                                 f"render_mode='rgb_array': {e}") from None
            raise
        result = EvaluationResult()
        try:
            for _ in range(episodes):
                # One env, one episode per call: the call's means are that episode's values.
                _, metrics = runner.sample(num_episodes=1, explore=False)
                result.returns.append(float(metrics["episode_return_mean"]))
                result.lengths.append(int(round(metrics["episode_len_mean"])))
                result.agent_returns.append(
                    {str(a): float(r) for a, r in metrics.get("agent_episode_return_mean", {}).items()}
                )
        finally:
            runner.stop()
        if render:
            if not frames:
                raise UsageError("argument --render: no frames were recorded")
            result.gif = write_gif(frames, gif_path or Path("eval.gif"))
        return result
    finally:
        algo.stop()


class GameEvaluation:
    """``--eval-opponent`` during training: win/draw/loss rates of the algorithm's greedy
    policies against ``opponent`` ("random", or a checkpoint / run directory loaded once
    as a frozen self), ``games`` games from both seats, fresh seeds per evaluation."""

    def __init__(self, opponent: str, games: int, seed: Optional[int]) -> None:
        from marl import Algorithm
        from marl.algorithms.game_evaluation import algorithm_players, random_player
        from marl.experiment.run_dir import find_checkpoint

        self.opponent, self.games, self.seed = opponent, games, seed or 0
        self._rival = None
        if opponent != "random":
            self._rival = Algorithm.from_checkpoint(str(find_checkpoint(opponent, "--eval-opponent")))
        self.players = random_player if self._rival is None else algorithm_players(self._rival)

    def results(self, algo: Any, seed: int) -> Any:
        """A ``GameResults`` of ``algo``'s greedy policies (game i uses seed + i)."""
        from marl.algorithms.game_evaluation import algorithm_players, play_games

        try:
            return play_games(algo.env_creator, algorithm_players(algo), self.players, self.games, seed)
        except ValueError as e:  # e.g. not a two-player env
            raise UsageError(f"argument --eval-opponent: {e}") from None

    def __call__(self, algo: Any) -> Dict[str, Any]:
        """The rates for ``algo`` now, as metrics (evaluation k plays seeds seed + 10,000 k + i)."""
        return self.results(algo, self.seed + 10_000 * int(algo.iteration)).to_dict()

    def close(self) -> None:
        if self._rival is not None:
            self._rival.stop()


def evaluate_games(checkpoint: Path, opponent: str, games: int, seed: Optional[int]) -> Any:
    """``--eval-opponent``: win/draw/loss rates (a ``GameResults``) of ``checkpoint``'s greedy
    policies in a two-player game, ``games`` games alternating seats, against ``"random"``
    (a random legal move) or the policies of another checkpoint or run directory."""
    from marl import Algorithm

    algo = Algorithm.from_checkpoint(str(checkpoint))
    try:
        evaluation = GameEvaluation(opponent, games, seed)
        try:
            return evaluation.results(algo, seed or 0)
        finally:
            evaluation.close()
    finally:
        algo.stop()


def write_gif(frames: List[np.ndarray], path: Path, fps: int = 15) -> Path:
    """Write ``frames`` as a looping GIF: imageio if installed, else Pillow."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio.v2 as imageio

        imageio.mimsave(str(path), frames, duration=1000 / fps, loop=0)
        return path
    except ImportError:
        pass
    from PIL import Image

    images = [Image.fromarray(f[..., :3] if f.ndim == 3 else f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, optimize=False)
    return path
