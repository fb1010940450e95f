"""PPO training speed, marl against RLlib, and the learner against a hand-written update.

    python scripts/bench_ppo.py                          # both backends (RLlib if its venv exists)
    python scripts/bench_ppo.py --backend marl           # no RLlib venv needed
    python scripts/bench_ppo.py --cases simple-spread --iters 3

Every (backend, case) runs in its own process with the same PPO config
(``train_batch_size_per_learner=4000``, ``minibatch_size=128``,
``num_epochs=10``, ``lr=3e-4``, ``DefaultModelConfig(fcnet_hiddens=[64, 64])``,
``num_env_runners=0``, everything else each library's defaults). Reported:

- env steps/s of whole ``train()`` calls over ``--iters`` iterations after one
  warm-up iteration;
- time from process start to the first ``train()`` result;
- peak RSS of the process tree (the process and every descendant, e.g. Ray's
  raylet and workers; read from ``/proc``, so Linux only);
- marl/RLlib ratios when both ran.

Runs go one at a time, alternating the backends case by case, so both see the
same machine. The learner floor (``--floor``, on by default) times marl's
learner per 128-row minibatch on a simple_spread batch against a hand-written
eager PPO update of the same networks (shared [64, 64] tanh encoder, policy
and value heads, Adam), in one process with one torch thread.

RLlib runs from its own virtual environment (``--rllib-python``, default
``$MARL_RLLIB_PYTHON`` or ``../rllib-venv/bin/python``), made with::

    python -m venv ../rllib-venv
    ../rllib-venv/bin/pip install torch==2.13.0 && ../rllib-venv/bin/pip install "ray[rllib]==2.60.0" torch==2.13.0 mpe2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.parity import build_marl, build_rllib, default_rllib_python, env_steps_of  # noqa: E402

RESULT_PREFIX = "BENCH_RESULT "

#: ``--marl-compile``: the whole loss step compiled (RLlib's switch names).
COMPILED = {"torch_compile_learner": True, "torch_compile_learner_what_to_compile": "complete_update"}

#: The issue's configuration; each case adds its env (and policies).
COMMON = {
    "training": {"train_batch_size_per_learner": 4000, "minibatch_size": 128, "num_epochs": 10, "lr": 3e-4},
    "model": {"fcnet_hiddens": [64, 64]},
}
CASES: Dict[str, Dict[str, Any]] = {
    "ma-cartpole": {**COMMON, "env": "multi_agent_cartpole", "env_config": {"num_agents": 2},
                    "policies": ["p0", "p1"], "policy_of": "p{agent_id}"},
    # One shared policy (RLlib needs the multi-agent setup spelled out for a PettingZoo env).
    "simple-spread": {**COMMON, "env": "mpe2.simple_spread_v3", "env_config": {"N": 3},
                      "policies": ["shared"], "policy_of": "shared"},
    "cartpole": {**COMMON, "env": "CartPole-v1"},
}


# --------------------------------------------------------------------- workers
def run_worker(backend: str, case_name: str, iters: int, started: float,
               marl_env_runners: Optional[Dict[str, Any]] = None, marl_compile: bool = False) -> Dict[str, Any]:
    """Build, one warm-up ``train()`` (the first result), then ``iters`` timed ones."""
    case = CASES[case_name]
    if backend == "marl" and marl_env_runners:
        case = {**case, "env_runners": {**case.get("env_runners", {}), **marl_env_runners}}
    if backend == "marl" and marl_compile:
        case = {**case, "framework": COMPILED}
    algo = build_marl(case, seed=0) if backend == "marl" else build_rllib(case, seed=0)
    try:
        result = algo.train()
        first_result_s = time.time() - started
        steps0 = env_steps_of(result)
        t0 = time.perf_counter()
        for _ in range(iters):
            result = algo.train()
        seconds = time.perf_counter() - t0
        steps = env_steps_of(result) - steps0
    finally:
        algo.stop()
    setup = {**(marl_env_runners or {}), "compiled": marl_compile} if backend == "marl" else {}
    return {"backend": backend, "case": case_name, "env_runners": setup,
            "first_result_s": first_result_s,
            "env_steps": steps, "seconds": seconds, "env_steps_per_s": steps / seconds}


def run_floor(minibatches: int = 200) -> Dict[str, Any]:
    """ms per 128-row minibatch: marl's learner, eager and compiled, vs a hand-written eager PPO update."""
    import torch

    torch.set_num_threads(1)
    eager = marl_update_ms(CASES["simple-spread"], minibatches)
    compiled = marl_update_ms({**CASES["simple-spread"], "framework": COMPILED}, minibatches)
    hand_ms = hand_written_update_ms(eager["obs_dim"], eager["num_actions"], minibatches)
    return {"marl_ms": eager["ms"], "marl_compiled_ms": compiled["ms"], "hand_ms": hand_ms,
            "ratio": eager["ms"] / hand_ms, "compiled_ratio": compiled["ms"] / hand_ms,
            "compile_s": compiled["first_update_s"] - eager["first_update_s"],
            "obs_dim": eager["obs_dim"], "num_actions": eager["num_actions"]}


def marl_update_ms(case: Dict[str, Any], minibatches: int) -> Dict[str, Any]:
    """ms per 128-row minibatch of marl's learner on a simple_spread batch (after a warm-up update)."""
    algo = build_marl(case, seed=0)
    try:
        learner = algo.learner
        samples, _ = algo.env_runner_group.sample(4000)
        t0 = time.perf_counter()
        learner.update_from_samples(samples)  # warm-up (builds the learner, compiles if asked)
        first_update_s = time.perf_counter() - t0
        batches = learner.build_train_batches(samples)
        rows = sum(len(b["actions"]) for b in batches.values())
        epochs = max(1, round(minibatches * 128 / rows))
        t0 = time.perf_counter()
        out = learner.update(batches, minibatch_size=128, num_epochs=epochs)
        marl_ms = (time.perf_counter() - t0) * 1000 / out["__all_modules__"]["num_gradient_steps"]
        module = learner.module[next(iter(batches))]
        obs_dim = int(module.observation_space.shape[0])
        num_actions = int(module.action_space.n)
    finally:
        algo.stop()
    return {"ms": marl_ms, "first_update_s": first_update_s, "obs_dim": obs_dim, "num_actions": num_actions}


def hand_written_update_ms(obs_dim: int, num_actions: int, minibatches: int, rows: int = 128) -> float:
    """A CleanRL-style eager PPO step on the nets marl builds by default (shared encoder)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
    pi, vf = nn.Linear(64, num_actions), nn.Linear(64, 1)
    params = [*encoder.parameters(), *pi.parameters(), *vf.parameters()]
    opt = torch.optim.Adam(params, lr=3e-4)
    obs = torch.randn(rows, obs_dim)
    actions = torch.randint(num_actions, (rows,))
    old_logp, adv, targets = torch.randn(rows) - 1.0, torch.randn(rows), torch.randn(rows)

    def step() -> None:
        h = encoder(obs)
        logp_all = torch.log_softmax(pi(h), -1)
        logp = logp_all.gather(1, actions[:, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        ratio = torch.exp(logp - old_logp)
        surrogate = torch.min(adv * ratio, adv * ratio.clamp(0.7, 1.3))
        vf_loss = torch.clamp((vf(h).squeeze(-1) - targets) ** 2, 0.0, 10.0)
        loss = (-surrogate + vf_loss - 0.0 * entropy).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    t0 = time.perf_counter()
    for _ in range(minibatches):
        step()
    return (time.perf_counter() - t0) * 1000 / minibatches


# ---------------------------------------------------------------- orchestrator
def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, from /proc (0 where unreadable)."""
    children: Dict[int, List[int]] = {}
    rss: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total / 2**20


def launch(python: str, args: List[str], threads: Optional[int]) -> Dict[str, Any]:
    """Run one worker process; return its result with the peak RSS of its tree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_DEDUP_LOGS="0", BENCH_T0=repr(time.time()))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.Popen([python, str(Path(__file__).resolve()), *args], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mib(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX):]), "peak_rss_mib": peak}
    tail = "\n".join(err.splitlines()[-15:])
    return {"args": args, "error": tail or f"exit {proc.returncode}"}


def print_tables(runs: List[Dict[str, Any]], floor: Optional[Dict[str, Any]]) -> None:
    print("\n| case | backend | env steps/s | first result s | peak RSS MiB |\n|---|---|---|---|---|")
    for r in runs:
        if "error" in r:
            print(f"| {' '.join(r['args'])} | error | | | |")
            continue
        setup = "".join(f", {k}={v}" for k, v in r.get("env_runners", {}).items() if v)
        print(f"| {r['case']} | {r['backend']}{setup} | {r['env_steps_per_s']:,.0f} | {r['first_result_s']:.1f} "
              f"| {r['peak_rss_mib']:,.0f} |")
    by = {(r["case"], r["backend"]): r for r in runs if "error" not in r}
    pairs = [(c, by[(c, "marl")], by[(c, "rllib")]) for c in CASES if (c, "marl") in by and (c, "rllib") in by]
    if pairs:
        print("\n| case | marl/RLlib env steps/s | marl/RLlib first result | marl/RLlib peak RSS |\n|---|---|---|---|")
        for case, m, r in pairs:
            print(f"| {case} | {m['env_steps_per_s'] / r['env_steps_per_s']:.2f} "
                  f"| {m['first_result_s'] / r['first_result_s']:.2f} | {m['peak_rss_mib'] / r['peak_rss_mib']:.2f} |")
    if floor is not None and "error" not in floor:
        print("\n| learner per 128-row minibatch | ms |\n|---|---|")
        print(f"| marl (simple_spread, shared policy) | {floor['marl_ms']:.2f} |")
        print(f"| marl, torch_compile_learner complete_update (compiling: +{floor['compile_s']:.1f} s once) "
              f"| {floor['marl_compiled_ms']:.2f} |")
        print(f"| hand-written eager PPO update, same nets | {floor['hand_ms']:.2f} |")
        print(f"| marl / hand-written | {floor['ratio']:.2f} |")
        print(f"| marl compiled / hand-written | {floor['compiled_ratio']:.2f} |")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["marl", "rllib", "both"], default="both")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--iters", type=int, default=5, help="timed train() calls after the warm-up")
    parser.add_argument("--rllib-python", default=default_rllib_python())
    parser.add_argument("--threads", type=int, default=None, help="OMP threads per run (default: torch's)")
    parser.add_argument("--no-floor", action="store_true", help="skip the learner-floor measurement")
    parser.add_argument("--marl-env-runners", type=int, default=0,
                        help="num_env_runners of the marl runs (RLlib keeps its default 0)")
    parser.add_argument("--overlap", action="store_true",
                        help="marl runs with overlap_sampling=True (needs --marl-env-runners >= 1)")
    parser.add_argument("--marl-compile", action="store_true",
                        help="marl runs with torch_compile_learner=True, what_to_compile='complete_update'")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument("--worker", choices=["marl", "rllib", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        started = float(os.environ.get("BENCH_T0", time.time()))
        runners = {"num_env_runners": args.marl_env_runners, "overlap_sampling": args.overlap}
        result = run_floor() if args.worker == "floor" else run_worker(args.worker, args.case, args.iters,
                                                                       started, runners, args.marl_compile)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    backends = ["marl", "rllib"] if args.backend == "both" else [args.backend]
    if "rllib" in backends and not Path(args.rllib_python).exists():
        if args.backend == "rllib":
            parser.error(f"--rllib-python {args.rllib_python!r} does not exist (see the module docstring)")
        print(f"RLlib venv not found at {args.rllib_python!r}: marl only", file=sys.stderr)
        backends = ["marl"]
    runs = []
    for case in args.cases:
        for backend in backends:
            python = sys.executable if backend == "marl" else args.rllib_python
            extra = (["--marl-env-runners", str(args.marl_env_runners)] + (["--overlap"] if args.overlap else [])
                     + (["--marl-compile"] if args.marl_compile else []))
            r = launch(python, ["--worker", backend, "--case", case, "--iters", str(args.iters), *extra],
                       args.threads)
            print(json.dumps(r), file=sys.stderr, flush=True)
            runs.append(r)
    floor = None if args.no_floor else launch(sys.executable, ["--worker", "floor"], args.threads)
    print_tables(runs, floor)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "floor": floor}, indent=2))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
