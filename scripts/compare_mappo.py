"""MAPPO against IPPO: learning at equal env steps, and what the central critic costs.

    python scripts/compare_mappo.py                      # learning: both envs, seeds 0-2
    python scripts/compare_mappo.py --envs spread --seeds 0 --steps 100000
    python scripts/compare_mappo.py --speed              # env steps/s, MAPPO next to PPO

Learning mode trains ``MAPPOConfig()`` twice per (env, seed): with the
centralised critic (``critic="central"``) and with each policy's own value
function (``critic="local"``, which is exactly PPO/IPPO). Everything else is
equal: config, model, seed, budget. Reported per (env, algorithm): the mean
over seeds of the final smoothed episode return (the return of an episode is
the sum over agents of their rewards; ``env_runners/smoothed_episode_return_mean``,
the latest 100 episodes), and the best.

- ``spread``: mpe2 ``simple_spread_v3`` (N=3, max_cycles 25), one shared policy.
- ``speaker_listener``: mpe2 ``simple_speaker_listener_v4`` (max_cycles 25),
  one policy per agent (the speaker and the listener have different spaces).

Speed mode (``--speed``) runs, on simple_spread with the same config and
model sizes, one process each, one after the other (twice, interleaved):
PPO with its value head on the policy's trunk (``vf_share_layers=True``),
PPO with a separate value network (``vf_share_layers=False``: an actor and a
critic of the same sizes as MAPPO's), and MAPPO. It prints env steps/s of
whole ``train()`` calls and the ratios: against the separate-network PPO the
ratio is what centralising costs (recording global inputs, a wider critic
input); against the shared-trunk PPO it also counts the critic's own
network.

Runs go in ``--jobs`` parallel processes (one torch thread each).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULT_PREFIX = "MAPPO_RESULT "
ENVS = {
    "spread": {"env": "mpe2.simple_spread_v3", "env_config": {"N": 3, "max_cycles": 25}, "per_agent": False},
    "speaker_listener": {"env": "mpe2.simple_speaker_listener_v4", "env_config": {"max_cycles": 25},
                         "per_agent": True},
}
DEFAULT_STEPS = {"spread": 300_000, "speaker_listener": 300_000}
MODEL = {"fcnet_hiddens": [128, 128], "fcnet_activation": "tanh", "head_fcnet_hiddens": []}


def make_config(env_name: str, algo: str, seed: int) -> Any:
    """``algo``: "mappo" (central critic), "ippo" (MAPPO with local critics), "ppo" or
    "ppo_separate_vf" (PPO with ``vf_share_layers=False``)."""
    from marl import DefaultModelConfig, MAPPOConfig, PPOConfig
    from marl.experiment.presets import SIMPLE_SPREAD_PPO

    case = ENVS[env_name]
    config = PPOConfig() if algo.startswith("ppo") else MAPPOConfig()
    config.environment(case["env"], env_config=dict(case["env_config"]))
    config.env_runners(num_envs_per_env_runner=8)
    config.rl_module(model_config=DefaultModelConfig(**MODEL, vf_share_layers=algo != "ppo_separate_vf"))
    config.training(**SIMPLE_SPREAD_PPO)
    if algo == "ippo":
        config.training(critic="local")
    if case["per_agent"]:
        from marl.algorithms.module_setup import agent_id_as_module_id
        from envs.registry import make_env

        agents = make_env(case["env"], case["env_config"]).possible_agents
        config.multi_agent(policies={str(a) for a in agents}, policy_mapping_fn=agent_id_as_module_id)
    return config.debugging(seed=seed)


def run_learning(env_name: str, algo: str, seed: int, steps: int) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    algo_obj = make_config(env_name, algo, seed).build()
    curve, best, t0 = [], -float("inf"), time.perf_counter()
    try:
        sampled = 0
        while sampled < steps:
            result = algo_obj.train()
            sampled = result["num_env_steps_sampled_lifetime"]
            smoothed = result["env_runners"].get("smoothed_episode_return_mean")
            if smoothed is not None:
                curve.append([sampled, smoothed])
                best = max(best, smoothed)
    finally:
        algo_obj.stop()
    seconds = time.perf_counter() - t0
    return {"env": env_name, "algo": algo, "seed": seed, "steps": sampled, "final": curve[-1][1],
            "best": best, "seconds": seconds, "env_steps_per_s": sampled / seconds, "curve": curve}


def run_speed(algo: str, iters: int) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    algo_obj = make_config("spread", algo, 0).build()
    try:
        algo_obj.train()  # warm-up
        steps0 = algo_obj.train()["num_env_steps_sampled_lifetime"]
        t0 = time.perf_counter()
        for _ in range(iters):
            result = algo_obj.train()
        seconds = time.perf_counter() - t0
    finally:
        algo_obj.stop()
    return {"algo": algo, "env_steps_per_s": (result["num_env_steps_sampled_lifetime"] - steps0) / seconds}


def launch(args: List[str]) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=str(ROOT),
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return {"args": args, "error": "\n".join(proc.stderr.splitlines()[-15:]) or f"exit {proc.returncode}"}


def print_learning(results: List[Dict[str, Any]]) -> None:
    import numpy as np

    print("\n| env | algorithm | seeds | final return (mean of seeds) | per seed | best (mean) | env steps |")
    print("|---|---|---|---|---|---|---|")
    for env_name in ENVS:
        for algo in ("mappo", "ippo"):
            rows = [r for r in results if r.get("env") == env_name and r.get("algo") == algo]
            if not rows:
                continue
            finals = [r["final"] for r in rows]
            print(f"| {env_name} | {algo} | {len(rows)} | {np.mean(finals):.2f} | "
                  f"{', '.join(f'{f:.2f}' for f in finals)} | {np.mean([r['best'] for r in rows]):.2f} "
                  f"| {rows[0]['steps']:,} |")
    for r in results:
        if "error" in r:
            print("error:", r["args"], r["error"], file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="env steps per run (default: 300k per env)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--speed", action="store_true", help="env steps/s of MAPPO next to PPO instead")
    parser.add_argument("--iters", type=int, default=5, help="--speed: timed iterations")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        kind, *rest = args.worker
        if kind == "speed":
            result = run_speed(rest[0], int(rest[1]))
        else:
            result = run_learning(rest[0], rest[1], int(rest[2]), int(rest[3]))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    if args.speed:
        algos = ("ppo", "ppo_separate_vf", "mappo")
        results = [launch(["--worker", "speed", algo, str(args.iters)]) for algo in algos * 2]
        ok = [r for r in results if "error" not in r]
        by = {a: [r["env_steps_per_s"] for r in ok if r["algo"] == a] for a in algos}
        print("\n| simple_spread, shared policy | env steps/s (two runs, interleaved) |\n|---|---|")
        for algo, values in by.items():
            print(f"| {algo} | {', '.join(f'{v:,.0f}' for v in values)} |")
        if all(by.values()):
            best = {a: max(v) for a, v in by.items()}
            print(f"| ppo_separate_vf / mappo: what centralising costs | {best['ppo_separate_vf'] / best['mappo']:.2f}x |")
            print(f"| ppo / mappo: centralising and the critic's own network | {best['ppo'] / best['mappo']:.2f}x |")
    else:
        jobs = [(env_name, algo, seed, args.steps or DEFAULT_STEPS[env_name])
                for env_name in args.envs for seed in args.seeds for algo in ("mappo", "ippo")]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda j: launch(["--worker", "learn", j[0], j[1], str(j[2]), str(j[3])]),
                                    jobs))
        print_learning(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
