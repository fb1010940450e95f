"""Sampling throughput: the env runner against a bare random-action loop on the same envs.

For each env and each ``num_envs`` setting this script

1. builds a ``MultiAgentEnvRunner`` with random-weight ``DefaultPPOTorchRLModule``s
   (small nets) and samples ``--steps`` env steps (after one warm-up call);
2. steps the same number of envs (built by the same creator) sequentially with
   random actions (``action_space(agent).sample()``) in a bare loop, resetting
   finished envs, for the same number of env steps;

and prints env steps per second of both and their ratio (bare / runner: 1.0
means the runner costs nothing over stepping the envs; our aim is <= 2 at 8
envs on MultiAgentCartPole). Torch runs single-threaded, as in env runner
workers.

Usage::

    PYTHONPATH=. python scripts/bench_sampling.py --steps 4000
    PYTHONPATH=. python scripts/bench_sampling.py --envs cartpole --num-envs 8 --profile
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from envs.env_runner import MultiAgentEnvRunner  # noqa: E402
from marl.core import MultiRLModuleSpec, RLModuleSpec  # noqa: E402


def cartpole_creator(config: dict) -> Any:
    from envs.multi_agent_cartpole import MultiAgentCartPole

    return MultiAgentCartPole({"num_agents": 4})


def simple_spread_creator(config: dict) -> Any:
    """As ``.environment("mpe2.simple_spread_v3")`` builds it (the lean AEC conversion)."""
    from envs.registry import make_env

    return make_env("mpe2.simple_spread_v3", {"N": 3, "max_cycles": 25})


def simple_spread_pettingzoo_creator(config: dict) -> Any:
    """PettingZoo's own ``parallel_env`` (its converter and check wrappers), for comparison."""
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(N=3, max_cycles=25)


def pistonball_creator(config: dict) -> Any:
    from envs.supersuit_presets import pistonball_preset

    return pistonball_preset({"n_pistons": 4, "max_cycles": 50, "size": 42, "frame_stack": 2})


ENVS: Dict[str, Callable[[dict], Any]] = {
    "cartpole": cartpole_creator,
    "simple_spread": simple_spread_creator,
    "simple_spread_pettingzoo": simple_spread_pettingzoo_creator,
    "pistonball": pistonball_creator,
}

MODEL_CONFIGS = {
    "cartpole": {"fcnet_hiddens": [64, 64]},
    "simple_spread": {"fcnet_hiddens": [64, 64]},
    "simple_spread_pettingzoo": {"fcnet_hiddens": [64, 64]},
    "pistonball": {"conv_filters": [[16, [4, 4], 2], [32, [4, 4], 2], [64, [3, 3], 2]],
                   "fcnet_hiddens": [64]},
}


def bare_loop(creator: Callable[[dict], Any], num_envs: int, total_steps: int, seed: int = 0) -> float:
    """Env steps per second of a sequential random-action loop over ``num_envs`` envs."""
    envs = [creator({}) for _ in range(num_envs)]
    observations = []
    for i, env in enumerate(envs):
        obs, _ = env.reset(seed=seed + i)
        observations.append(obs)
        for agent in env.possible_agents:
            env.action_space(agent).seed(seed + i)
    steps = 0
    start = time.perf_counter()
    while steps < total_steps:
        for i, env in enumerate(envs):
            obs = observations[i]
            actions = {agent: env.action_space(agent).sample() for agent in obs if agent in env.agents}
            obs, rewards, terms, truncs, infos = env.step(actions)
            steps += 1
            if not env.agents:
                obs, _ = env.reset()
            observations[i] = obs
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return steps / elapsed


def make_runner(name: str, num_envs: int) -> MultiAgentEnvRunner:
    """A runner with random-weight default PPO modules, warmed up (first resets, allocations)."""
    spec = MultiRLModuleSpec(rl_module_specs=RLModuleSpec(
        module_class=_ppo_module_class(), model_config=MODEL_CONFIGS[name]))
    runner = MultiAgentEnvRunner(env_creator=ENVS[name], module_spec=spec, num_envs=num_envs, seed=0)
    runner.sample(num_timesteps=50 * num_envs)
    return runner


def runner_rate(runner: MultiAgentEnvRunner, total_steps: int, profile: bool = False) -> float:
    """Env steps per second of one ``MultiAgentEnvRunner.sample`` call."""
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    _, metrics = runner.sample(num_timesteps=total_steps)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - start
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return metrics["num_env_steps_sampled"] / elapsed


def _ppo_module_class() -> type:
    from marl.models import DefaultPPOTorchRLModule

    return DefaultPPOTorchRLModule


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per measurement")
    parser.add_argument("--envs", nargs="*", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--num-envs", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating measurements of each; the best of each is reported "
                             "(other processes on the machine only ever slow a run down)")
    parser.add_argument("--profile", action="store_true", help="cProfile the runner's sample()")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    np.random.seed(0)
    print(f"torch threads: 1; steps per measurement: {args.steps} "
          f"(pistonball: {max(1, args.steps // 4)}); best of {args.repeats}")
    print(f"{'env':<14}{'num_envs':>9}{'runner steps/s':>16}{'bare steps/s':>14}{'bare/runner':>13}")
    for name in args.envs:
        for num_envs in args.num_envs:
            steps = args.steps if name != "pistonball" else max(num_envs, args.steps // 4)
            runner = make_runner(name, num_envs)
            runner_best = bare_best = 0.0
            for i in range(args.repeats):
                runner_best = max(runner_best, runner_rate(runner, steps, profile=args.profile and i == 0))
                bare_best = max(bare_best, bare_loop(ENVS[name], num_envs, steps, seed=i))
            runner.stop()
            print(f"{name:<14}{num_envs:>9}{runner_best:>16.0f}{bare_best:>14.0f}"
                  f"{bare_best / runner_best:>13.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
