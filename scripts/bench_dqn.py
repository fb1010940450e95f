"""Replay sampling and DQN updates per second, next to a hand-written torch DQN update.

    python scripts/bench_dqn.py                 # batch 32 and 256, CartPole-v1, one torch thread
    python scripts/bench_dqn.py --batches 32 --seconds 2

For each batch size, in one process, one after the other:

- replay sampling alone (uniform and prioritized, 50k rows of CartPole
  transitions): samples/s;
- marl's full update step as ``DQN`` runs it: replay sample, learner update
  (forward, double-Q target, Huber loss, backward, clipping, fused Adam),
  priority update: updates/s;
- a hand-written CleanRL-style torch update of the same networks (the same
  encoder and dueling head and their target copies, double Q, Huber loss,
  Adam, gradient clipping) on a pre-made batch: updates/s.

The ratio hand-written / marl is what marl's generality costs per update.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def filled_algo(buffer_type: str, rows: int):
    from marl import DefaultModelConfig, DQNConfig

    algo = (DQNConfig().environment("CartPole-v1")
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[256], head_fcnet_hiddens=[256]))
            .training(replay_buffer_config={"type": buffer_type, "capacity": 50000})
            .debugging(seed=0)).build()
    while not algo.replay_buffers or len(algo.replay_buffers["default_policy"]) < rows:
        samples, _ = algo.env_runner_group.sample(1000)
        algo._store(samples)
    return algo


def per_second(fn, seconds: float = 2.0, minimum: int = 20) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while n < minimum or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def hand_written_nets(module: Any) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """Copies of the module's Q network as two plain modules: ``head(encoder(obs))`` is its Q.

    The feed-forward observation encoder itself, so the hand-written step needs
    none of the module's LSTM plumbing."""
    return copy.deepcopy(module.encoder.obs_encoder), copy.deepcopy(module.qf)


def hand_written_updates_per_s(module: Any, batch: Dict[str, torch.Tensor], seconds: float) -> float:
    """CleanRL's dqn.py update, with RLlib's double Q, dueling head and grad clip, on marl's nets."""
    encoder, head = hand_written_nets(module)
    target_encoder, target_head = copy.deepcopy(encoder), copy.deepcopy(head)
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=5e-4)
    obs, actions, rewards = batch["obs"], batch["actions"].long(), batch["rewards"]
    next_obs, done = batch["new_obs"], batch["terminateds"].float()

    def step() -> None:
        with torch.no_grad():
            best = head(encoder(next_obs)).argmax(-1, keepdim=True)
            q_next = target_head(target_encoder(next_obs)).gather(-1, best).squeeze(-1)
            target = rewards + 0.99 * (1 - done) * q_next
        q = head(encoder(obs)).gather(-1, actions[:, None]).squeeze(-1)
        loss = torch.nn.functional.huber_loss(q, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 40.0)
        optimizer.step()

    return per_second(step, seconds)


def bench(batch_size: int, seconds: float) -> List[Dict[str, Any]]:
    from learners.replay_buffer import INDICES

    rows = []
    for buffer_type in ("uniform", "prioritized"):
        algo = filled_algo(buffer_type, 50_000 if buffer_type == "prioritized" else 50_000)
        try:
            buffer = algo.replay_buffers["default_policy"]
            sample_rate = per_second(lambda: buffer.sample(batch_size), seconds)
            algo.config.train_batch_size_per_learner = batch_size
            marl_rate = per_second(algo._update_once, seconds)
            batch = buffer.sample(batch_size)
            batch.pop(INDICES)
            tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
            hand_rate = hand_written_updates_per_s(algo.get_module(), tensors, seconds)
        finally:
            algo.stop()
        rows.append({"batch": batch_size, "buffer": buffer_type, "samples_per_s": sample_rate,
                     "marl_updates_per_s": marl_rate, "hand_updates_per_s": hand_rate})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [row for b in args.batches for row in bench(b, args.seconds)]
    print("\n| batch | replay | replay samples/s | marl updates/s (sample + update + priorities) "
          "| hand-written updates/s | hand / marl |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['buffer']} | {r['samples_per_s']:,.0f} | {r['marl_updates_per_s']:,.0f} "
              f"| {r['hand_updates_per_s']:,.0f} | {r['hand_updates_per_s'] / r['marl_updates_per_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
