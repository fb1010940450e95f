"""Scaling: sampling and ``train()`` env steps/s against env runners and learners.

    python scripts/bench_scaling.py                                  # runners 0,1,2 x learners 0,2
    python scripts/bench_scaling.py --runners 0,4,8,14 --learners 0,2,4 --backend ray

PPO on simple_spread (N=3, one shared policy), ``num_envs_per_env_runner=8``,
``train_batch_size_per_learner=4000``, ``minibatch_size=128``, ``num_epochs=10``,
``fcnet_hiddens=[64, 64]``. For every (runners, learners) pair, after one
warm-up iteration it times ``--iters`` calls of the env runner group's
``sample()`` alone (sampling env steps/s) and ``--iters`` whole ``train()``
calls (which sample ``learners x 4000`` steps and update). ``--overlap`` adds
rows with ``overlap_sampling=True`` (1+ runners sample the next batch while the
learner trains).

``ideal`` is the first row's rate times the number of workers that column can
use (``max(1, runners)`` for sampling, ``max(1, runners) * max(1, learners)``
for ``train()``): linear scaling, which a machine with fewer cores than
workers cannot reach. Each setting runs in this process, one after another.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from marl import DefaultModelConfig, PPOConfig  # noqa: E402

BATCH = 4000


def make_config(runners: int, learners: int, backend: str, overlap: bool) -> PPOConfig:
    return (
        PPOConfig()
        .environment("mpe2.simple_spread_v3", env_config={"N": 3})
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=8, backend=backend,
                     overlap_sampling=overlap)
        .learners(num_learners=learners, backend=backend)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .training(train_batch_size_per_learner=BATCH, minibatch_size=128, num_epochs=10, lr=3e-4)
        .debugging(seed=0)
    )


def measure(runners: int, learners: int, backend: str, overlap: bool, iters: int) -> Dict[str, Any]:
    algo = make_config(runners, learners, backend, overlap).build()
    try:
        algo.train()  # warm-up: worker start, first weights, allocator
        group, steps = algo.env_runner_group, 0
        start = time.perf_counter()
        if not overlap:  # an overlapped group has a sample in flight between train() calls
            for _ in range(iters):
                _, metrics = group.sample(algo.config.total_train_batch_size)
                steps += int(metrics["num_env_steps_sampled"])
        sample_rate = steps / (time.perf_counter() - start) if steps else float("nan")
        steps, start = 0, time.perf_counter()
        for _ in range(iters):
            steps += int(algo.train()["env_runners"]["num_env_steps_sampled"])
        train_rate = steps / (time.perf_counter() - start)
    finally:
        algo.stop()
    return {"runners": runners, "learners": learners, "overlap": overlap,
            "sample": sample_rate, "train": train_rate}


def table(rows: List[Dict[str, Any]]) -> str:
    base = rows[0]
    lines = ["| env runners | learners | overlap | sampling env steps/s | ideal | train() env steps/s | ideal |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        runner_scale = max(1, r["runners"])
        sample = "—" if r["overlap"] else f"{r['sample']:,.0f}"  # overlapped groups are timed in train() only
        lines.append(
            f"| {r['runners']} | {r['learners']} | {'yes' if r['overlap'] else 'no'} | "
            f"{sample} | {base['sample'] * runner_scale:,.0f} | {r['train']:,.0f} | "
            f"{base['train'] * runner_scale * max(1, r['learners']):,.0f} |")
    return "\n".join(lines)


def ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", type=ints, default=[0, 1, 2], help="comma-separated env runner counts")
    parser.add_argument("--learners", type=ints, default=[0, 2], help="comma-separated learner counts")
    parser.add_argument("--backend", choices=["processes", "ray"], default="processes")
    parser.add_argument("--overlap", action="store_true", help="also time overlap_sampling=True (runners >= 1)")
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args(argv)
    if args.backend == "ray":
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    for learners in args.learners:
        for runners in args.runners:
            for overlap in ([False, True] if args.overlap and runners > 0 else [False]):
                rows.append(measure(runners, learners, args.backend, overlap, args.iters))
                r = rows[-1]
                print(f"runners={runners} learners={learners} overlap={overlap}: sampling {r['sample']:,.0f} "
                      f"env steps/s (nan: not timed), train() {r['train']:,.0f} env steps/s", flush=True)
    print(f"\n{os.cpu_count()} CPU cores, backend {args.backend}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
