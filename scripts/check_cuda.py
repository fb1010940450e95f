"""Check GPU learners on a machine with CUDA: the first update on CUDA equals the CPU
update on the same batch, a few iterations train, a GPU checkpoint loads on the CPU.

    python scripts/check_cuda.py                 # one GPU learner (num_learners=0)
    python scripts/check_cuda.py --learners 2    # plus two data-parallel GPU learners (NCCL)

Exits 2 when torch sees no CUDA device (nothing was checked), 1 when a check fails.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time

import torch

from marl import DefaultModelConfig, PPOConfig

AGENTS = ["agent_0", "agent_1", "agent_2"]
OUT = "action_dist_inputs"


def agent_policy(agent_id, episode, **kw):
    return agent_id


def make_config(*, gpus: float, num_learners: int = 0, batch: int = 400) -> PPOConfig:
    return (
        PPOConfig()
        .environment("mpe2.simple_spread_v3", env_config={"N": 3, "max_cycles": 25})
        .multi_agent(policies=set(AGENTS), policy_mapping_fn=agent_policy)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .training(train_batch_size_per_learner=batch // max(1, num_learners), minibatch_size=100, num_epochs=2,
                  lr=3e-4)
        .learners(num_learners=num_learners, num_gpus_per_learner=gpus, backend="processes")
        .debugging(seed=0)
    )


def max_weight_difference(a: dict, b: dict) -> float:
    return max(float((a[m][k].cpu() - b[m][k].cpu()).abs().max()) for m in a for k in a[m])


def check_first_update(tolerance: float, gpus: float = 1) -> bool:
    """CPU and CUDA learners from the same weights, one update on the same samples."""
    cpu = make_config(gpus=0).build()
    gpu = make_config(gpus=gpus).build()
    try:
        gpu.learner_group.set_state(cpu.learner_group.get_state())
        samples, _ = cpu.env_runner_group.sample(400)
        cpu.learner_group.update_from_samples(samples)
        gpu.learner_group.update_from_samples(samples)
        device = next(gpu.learner.module.parameters()).device
        diff = max_weight_difference(cpu.learner_group.get_weights(), gpu.learner_group.get_weights())
        ok = device.type == ("cuda" if gpus else "cpu") and diff <= tolerance
        print(f"first update: learner on {device}, max |w_cuda - w_cpu| = {diff:.3g} (tolerance {tolerance}) "
              f"{'OK' if ok else 'FAILED'}")
        return ok
    finally:
        cpu.stop()
        gpu.stop()


def check_training_and_checkpoint(num_learners: int, iterations: int, gpus: float = 1) -> bool:
    """A few iterations on CUDA, then the checkpoint restored into a CPU-only algorithm."""
    algo = make_config(gpus=gpus, num_learners=num_learners).build()
    try:
        start = time.perf_counter()
        for _ in range(iterations):
            result = algo.train()
        returns = result["env_runners"].get("episode_return_mean")
        print(f"{num_learners} learner(s) on CUDA: {iterations} iterations in {time.perf_counter() - start:.1f} s, "
              f"episode_return_mean {returns}")
        with tempfile.TemporaryDirectory() as tmp:
            path = algo.save_to_path(f"{tmp}/ckpt")
            on_cpu = make_config(gpus=0).build()
            try:
                on_cpu.restore_from_path(path)
                obs = torch.randn(5, 18)
                ok = all(
                    torch.equal(copy.deepcopy(algo.get_module(m)).cpu().forward_inference({"obs": obs})[OUT],
                                on_cpu.get_module(m).forward_inference({"obs": obs})[OUT])
                    for m in AGENTS)
            finally:
                on_cpu.stop()
        print(f"checkpoint of the CUDA run restored on the CPU: {'OK' if ok else 'FAILED'}")
        return ok
    finally:
        algo.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=0, help="also train this many DDP learners on GPUs")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every check with the 'GPU' side on the CPU (tests this script without a GPU)")
    args = parser.parse_args(argv)
    gpus = 0 if args.cpu_dry_run else 1
    if args.cpu_dry_run:
        print("dry run: the 'CUDA' side runs on the CPU")
    elif not torch.cuda.is_available():
        print("CUDA is not available to this torch (a CPU build or no GPU): nothing checked.")
        return 2
    else:
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)} "
              f"x{torch.cuda.device_count()}")
    ok = check_first_update(args.tolerance, gpus)
    ok = check_training_and_checkpoint(0, args.iterations, gpus) and ok
    if args.learners:
        ok = check_training_and_checkpoint(args.learners, args.iterations, gpus) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
