"""One PPO update, same weights and same batch, on RLlib and on marl: do the weights agree?

    python scripts/parity_update.py                     # cartpole-plain, 4000 steps, 5 full-batch epochs
    python scripts/parity_update.py --case cartpole-tuned --epochs 3
    python scripts/parity_update.py --minibatch-size 128 --epochs 2  # RLlib's minibatch layout, unshuffled

RLlib (in its own venv, ``--rllib-python`` as in ``scripts/parity.py``)
builds the case's PPO, samples a batch with its own env runner, saves its
learner's initial weights and the batch, and runs ``num_epochs`` full-batch
updates. marl loads the same weights into its default module, turns RLlib's
episodes into its sample layout and runs the same update. Full-batch epochs
make the result independent of minibatch order, so what remains is the
update's arithmetic: advantages, value targets, the loss, Adam. With
``--minibatch-size`` both sides walk the batch in sampled order without
shuffling (RLlib's first epoch always does), which checks the minibatch
layout as well: RLlib's rows include one masked bootstrap step per segment,
which marl's ``minibatches_include_bootstrap_steps`` reproduces. The script
prints the largest weight difference per parameter, once with marl's plain
advantage statistics and once with ``advantage_stats_include_bootstrap_steps``
(RLlib's statistics exactly), and exits 1 unless the latter agrees within
``--tolerance``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.parity import default_rllib_python  # noqa: E402
from scripts.parity_cases import CASES  # noqa: E402

GROUPS = ("encoder.", "pi.", "vf.")


def rllib_dump(case_name: str, steps: int, epochs: int, minibatch_size: Optional[int], seed: int,
               out: str) -> None:
    """RLlib side: initial weights, the sampled batch and the updated weights, to ``out``."""
    from scripts.parity import build_rllib

    algo = build_rllib(CASES[case_name], seed)
    learner = algo.learner_group._learner
    module = learner.module["default_policy"]
    init = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
    episodes = algo.env_runner.sample(num_timesteps=steps, random_actions=False)
    cols: Dict[str, List[np.ndarray]] = {k: [] for k in ("obs", "boot", "act", "rew", "logp", "dist", "term", "seq")}
    for e in episodes:
        n = len(e)
        obs = np.asarray(e.get_observations())
        cols["obs"].append(obs[:n])
        cols["boot"].append(obs[n:n + 1])
        cols["act"].append(np.asarray(e.get_actions()))
        cols["rew"].append(np.asarray(e.get_rewards(), np.float32))
        cols["logp"].append(np.asarray(e.get_extra_model_outputs("action_logp"), np.float32))
        cols["dist"].append(np.asarray(e.get_extra_model_outputs("action_dist_inputs"), np.float32))
        term = np.zeros(n, bool)
        term[-1] = bool(e.is_terminated)
        cols["term"].append(term)
        cols["seq"].append(np.asarray([n]))
    # Learner.update does not shuffle unless asked (PPO's training step asks).
    learner.update(episodes=episodes, num_epochs=epochs, minibatch_size=minibatch_size,
                   timesteps={"num_env_steps_sampled_lifetime": steps})
    after = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    arrays.update({f"init/{k}": v for k, v in init.items()})
    arrays.update({f"after/{k}": v for k, v in after.items()})
    np.savez(out, **arrays)
    algo.stop()


def pair_parameters(marl_names: List[str], rllib_names: List[str]) -> Dict[str, str]:
    """marl name -> RLlib name: the n-th weight (bias) of each group pairs with the n-th."""
    pairs = {}
    for group in GROUPS:
        for kind in ("weight", "bias"):
            ours = [n for n in marl_names if n.startswith(group) and n.endswith(kind)]
            theirs = [n for n in rllib_names if n.startswith(group) and n.endswith(kind)]
            if len(ours) != len(theirs):
                raise ValueError(f"{group}*{kind}: marl has {ours}, RLlib has {theirs}")
            pairs.update(zip(ours, theirs))
    return pairs


def marl_update(case_name: str, data: Dict[str, np.ndarray], epochs: int, minibatch_size: Optional[int],
                rllib_stats: bool, bootstrap_slots: bool = True) -> Tuple[Dict[str, float], Dict[str, float]]:
    """marl side: the same update from the same weights; per parameter, the max
    |marl - RLlib| after the update and the size of RLlib's update."""
    import torch

    from learners import PPOTorchLearner
    from marl import Columns, DefaultModelConfig, MultiRLModuleSpec, PPOConfig, RLModuleSpec
    from marl.models import DefaultPPOTorchRLModule
    from scripts.parity import build_marl

    case = CASES[case_name]
    probe = build_marl(case, 0)
    obs_space = probe.learner.module["default_policy"].observation_space
    act_space = probe.learner.module["default_policy"].action_space
    probe.stop()
    config = PPOConfig().training(**{**case["training"], "minibatch_size": minibatch_size, "num_epochs": epochs,
                                     "shuffle_batch_per_epoch": False,
                                     "advantage_stats_include_bootstrap_steps": rllib_stats,
                                     "minibatches_include_bootstrap_steps": bootstrap_slots})
    spec = MultiRLModuleSpec(rl_module_specs={"default_policy": RLModuleSpec(
        module_class=DefaultPPOTorchRLModule, observation_space=obs_space, action_space=act_space,
        model_config=DefaultModelConfig(**case.get("model", {})))})
    learner = PPOTorchLearner(config=config, module_spec=spec)
    learner.build()
    module = learner.module["default_policy"]
    rllib_names = [k[len("init/"):] for k in data if k.startswith("init/")]
    pairs = pair_parameters(list(module.state_dict()), rllib_names)
    module.load_state_dict({k: torch.as_tensor(data[f"init/{v}"]) for k, v in pairs.items()})
    n = len(data["act"])
    sample = {
        Columns.OBS: data["obs"].astype(np.float32), Columns.ACTIONS: data["act"],
        Columns.REWARDS: data["rew"], Columns.ACTION_LOGP: data["logp"], Columns.ACTION_DIST_INPUTS: data["dist"],
        Columns.TERMINATEDS: data["term"], Columns.TRUNCATEDS: np.zeros(n, bool), Columns.SEQ_LENS: data["seq"],
        "bootstrap_obs": data["boot"].astype(np.float32),
    }
    learner.update_from_samples({"default_policy": sample})
    after = module.state_dict()
    return {k: float(np.abs(after[k].numpy() - data[f"after/{v}"]).max()) for k, v in pairs.items()}, {
        k: float(np.abs(data[f"after/{v}"] - data[f"init/{v}"]).max()) for k, v in pairs.items()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="cartpole-plain",
                        choices=[c for c, v in CASES.items() if not v.get("policies")])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--minibatch-size", type=int, default=None,
                        help="minibatches of this many rows, unshuffled (default: full-batch epochs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--rllib-python", default=default_rllib_python())
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        rllib_dump(args.case, args.steps, args.epochs, args.minibatch_size, args.seed, args.dump)
        return 0
    if not Path(args.rllib_python).exists():
        parser.error(f"--rllib-python {args.rllib_python!r} does not exist (see scripts/parity.py)")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rllib_update.npz")
        cmd = [args.rllib_python, str(Path(__file__).resolve()), "--case", args.case, "--steps", str(args.steps),
               "--epochs", str(args.epochs), "--seed", str(args.seed), "--dump", out]
        if args.minibatch_size:
            cmd += ["--minibatch-size", str(args.minibatch_size)]
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 2
        data = dict(np.load(out))
    layout = (f"epochs of minibatches of {args.minibatch_size} rows, unshuffled" if args.minibatch_size
              else "full-batch epochs")
    print(f"{args.case}: {len(data['act'])} steps in {len(data['seq'])} segments, {args.epochs} {layout}")
    variants = [(False, True, "marl's advantage statistics"), (True, True, "RLlib's advantage statistics")]
    if args.minibatch_size:
        variants.append((True, False, "RLlib's advantage statistics, minibatches_include_bootstrap_steps=False"))
    worst = {}
    for rllib_stats, slots, label in variants:
        diffs, sizes = marl_update(args.case, data, args.epochs, args.minibatch_size, rllib_stats, slots)
        print(f"\n{label}: max |marl - RLlib| per parameter (update size in brackets)")
        for k, d in diffs.items():
            print(f"  {k:<40} {d:.2e}  ({sizes[k]:.2e})")
        worst[(rllib_stats, slots)] = max(diffs.values())
    ok = worst[(True, True)] <= args.tolerance
    print(f"\nwith RLlib's statistics the weights agree to {worst[(True, True)]:.1e} "
          f"({'within' if ok else 'OUTSIDE'} tolerance {args.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
