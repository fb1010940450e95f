"""Learning parity with RLlib: one config, both libraries, N seeds, side by side.

    python scripts/parity.py                                  # every case, 3 seeds
    python scripts/parity.py --cases cartpole-plain cartpole-tuned --seeds 0 1 2
    python scripts/parity.py --only marl                      # no RLlib venv needed

Each (case, library, seed) runs in its own process, stopping at the case's
threshold or its env-step budget, and reports env steps and wall seconds to
the threshold. RLlib runs from its own virtual environment (``--rllib-python``,
default ``$MARL_RLLIB_PYTHON`` or ``../rllib-venv/bin/python``), made with::

    python -m venv ../rllib-venv
    ../rllib-venv/bin/pip install torch==2.13.0 && ../rllib-venv/bin/pip install "ray[rllib]==2.60.0" torch==2.13.0 mpe2

Runs go one at a time by default (``--jobs 1``), alternating the libraries
seed by seed, so both see the same machine load; the table prints medians
and marl/RLlib ratios. The cases live in ``scripts/parity_cases.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.parity_cases import COMMON_ENV_RUNNERS, CASES, algo_of, reached  # noqa: E402

RESULT_PREFIX = "PARITY_RESULT "
#: A case's ``algo`` -> the config class both libraries name the same way.
CONFIG_CLASSES = {"ppo": "PPOConfig", "dqn": "DQNConfig", "sac": "SACConfig"}
#: A case's multi-agent ``env`` -> the class both libraries name the same way (RLlib's examples, marl's ``envs``).
MULTI_AGENT_ENVS = {"multi_agent_cartpole": "MultiAgentCartPole", "multi_agent_pendulum": "MultiAgentPendulum"}


# --------------------------------------------------------------------- workers
def configure(config: Any, model_config_cls: type, case: Dict[str, Any], seed: int, env: Any,
              connector: Any = None) -> Any:
    """Apply a case to either library's algorithm config (both speak the same fluent API)."""
    runners = {**COMMON_ENV_RUNNERS, **case.get("env_runners", {})}
    if connector is not None:
        runners["env_to_module_connector"] = connector
    config = (
        config.environment(env, env_config=dict(case.get("env_config", {})))
        .env_runners(**runners)
        .training(**case["training"])
        .rl_module(model_config=model_config_cls(**case.get("model", {})))
        .debugging(seed=seed)
    )
    if case.get("reporting"):
        config.reporting(**case["reporting"])
    if case.get("framework"):
        config.framework(**case["framework"])
    if case.get("policies"):
        fmt = case["policy_of"]
        config.multi_agent(policies=set(case["policies"]),
                           policy_mapping_fn=lambda agent_id, episode, **kw: fmt.format(agent_id=agent_id))
    return config


def build_marl(case: Dict[str, Any], seed: int):
    import marl
    from marl import DefaultModelConfig, MeanStdFilter

    env: Any = case["env"]
    if env in MULTI_AGENT_ENVS:
        import envs

        env = getattr(envs, MULTI_AGENT_ENVS[env])
    connector = (lambda env: MeanStdFilter()) if case.get("mean_std_filter") else None
    config_cls = getattr(marl, CONFIG_CLASSES[algo_of(case)])
    return configure(config_cls(), DefaultModelConfig, case, seed, env, connector).build()


def build_rllib(case: Dict[str, Any], seed: int):
    import importlib

    import ray
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    env: Any = case["env"]
    if env in MULTI_AGENT_ENVS:
        from ray.rllib.examples.envs.classes import multi_agent

        env = getattr(multi_agent, MULTI_AGENT_ENVS[env])
    elif env == "mpe2.simple_spread_v3":
        from mpe2 import simple_spread_v3
        from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
        from ray.tune.registry import register_env

        register_env("simple_spread", lambda cfg: ParallelPettingZooEnv(simple_spread_v3.parallel_env(**cfg)))
        env = "simple_spread"
    connector = (lambda env, spaces, device: MeanStdFilter()) if case.get("mean_std_filter") else None
    algo = algo_of(case)
    config_cls = getattr(importlib.import_module(f"ray.rllib.algorithms.{algo}"), CONFIG_CLASSES[algo])
    return configure(config_cls(), DefaultModelConfig, case, seed, env, connector).build_algo()


def env_steps_of(result: Dict[str, Any]) -> int:
    for where in (result, result.get("env_runners", {})):
        if "num_env_steps_sampled_lifetime" in where:
            return int(where["num_env_steps_sampled_lifetime"])
    raise KeyError("num_env_steps_sampled_lifetime not in the result")


def run_worker(library: str, case_name: str, seed: int) -> Dict[str, Any]:
    """Train one run until threshold or budget; return what the table needs."""
    case = CASES[case_name]
    start = time.perf_counter()
    algo = build_marl(case, seed) if library == "marl" else build_rllib(case, seed)
    built = time.perf_counter() - start
    best, steps, value = float("-inf"), 0, None
    out: Dict[str, Any] = {"library": library, "case": case_name, "seed": seed, "build_s": built}
    try:
        while steps < case["budget"]:
            result = algo.train()
            steps = env_steps_of(result)
            value = reached(case, result.get("env_runners", {}))
            if value is not None:
                best = max(best, value)
            print(f"[{library} {case_name} seed={seed}] {steps:>7} steps {time.perf_counter() - start:7.1f}s "
                  f"value={value}", file=sys.stderr, flush=True)
            if value is not None and value >= case["threshold"]:
                out.update(reached=True, steps=steps, seconds=time.perf_counter() - start)
                break
        else:
            out.update(reached=False, steps=None, seconds=None)
    finally:
        algo.stop()
    out.update(best=best, final=value, steps_run=steps, total_s=time.perf_counter() - start)
    return out


# ---------------------------------------------------------------- orchestrator
def default_rllib_python() -> str:
    return os.environ.get("MARL_RLLIB_PYTHON", str(ROOT.parent / "rllib-venv" / "bin" / "python"))


def launch(python: str, library: str, case: str, seed: int, threads: Optional[int]) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_DEDUP_LOGS="0")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [python, str(Path(__file__).resolve()), "--worker", library, "--case", case, "--seed", str(seed)]
    proc = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = "\n".join((proc.stderr or "").splitlines()[-15:])
    return {"library": library, "case": case, "seed": seed, "reached": False, "error": tail or f"exit {proc.returncode}"}


def fmt_run(r: Dict[str, Any]) -> str:
    if r.get("error"):
        return "error"
    if r.get("reached"):
        return f"{r['steps'] / 1000:.0f}k ({r['seconds']:.0f} s)"
    return f"no ({r['best']:.0f})"


def median_of(runs: List[Dict[str, Any]], key: str) -> Optional[float]:
    """Median over seeds, counting a run that missed as +inf (so a majority must reach)."""
    values = [r[key] if r.get("reached") else float("inf") for r in runs]
    m = statistics.median(values) if values else None
    return None if m is None or m == float("inf") else m


def reached_values(runs: List[Dict[str, Any]], key: str = "steps") -> List[float]:
    return [r[key] if r.get("reached") else float("inf") for r in runs]


def median_ratio_interval(ours: List[float], theirs: List[float], level: float = 0.9,
                          resamples: int = 10_000, seed: int = 0) -> Optional[tuple]:
    """Bootstrap interval of median(ours) / median(theirs), seeds resampled with replacement.

    The runs are deterministic per seed (RLlib's single-agent PPO too), so
    the seeds are the only source of spread; the interval says how far the
    median ratio could move with another draw of as many seeds. A miss counts
    as inf, so a bound can be inf (or 0); when both resampled medians are
    misses the two are counted as equal. None below 5 seeds a side.
    """
    if min(len(ours), len(theirs)) < 5:
        return None
    rng = np.random.default_rng(seed)
    a = np.median(rng.choice(np.asarray(ours, float), (resamples, len(ours))), axis=1)
    b = np.median(rng.choice(np.asarray(theirs, float), (resamples, len(theirs))), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isinf(a) & np.isinf(b), 1.0, a / b)
    tail = (1.0 - level) / 2.0
    # Order statistics, not interpolation: a bound is a resampled ratio (and inf stays inf).
    return float(np.quantile(ratios, tail, method="lower")), float(np.quantile(ratios, 1.0 - tail, method="higher"))


def latest_per_run(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One result per (library, case, seed): a later file's run replaces an earlier one."""
    return list({(r["library"], r["case"], r["seed"]): r for r in results}.values())


def print_table(results: List[Dict[str, Any]], cases: List[str], libraries: List[str]) -> None:
    seeds = sorted({r["seed"] for r in results})
    print("\n| case | library | " + " | ".join(f"seed {s}" for s in seeds)
          + " | reached | median steps | median s |")
    print("|---|---|" + "---|" * (len(seeds) + 3))
    ratios = []
    for case in cases:
        med, values = {}, {}
        for lib in libraries:
            runs = sorted((r for r in results if r["case"] == case and r["library"] == lib), key=lambda r: r["seed"])
            if not runs:
                continue
            med[lib] = (median_of(runs, "steps"), median_of(runs, "seconds"))
            values[lib] = reached_values(runs)
            n_ok = sum(bool(r.get("reached")) for r in runs)
            steps, secs = med[lib]
            by_seed = {r["seed"]: r for r in runs}
            print(f"| {case} | {lib} | " + " | ".join(fmt_run(by_seed[s]) if s in by_seed else "" for s in seeds)
                  + f" | {n_ok}/{len(runs)} | {'-' if steps is None else f'{steps / 1000:.0f}k'}"
                  f" | {'-' if secs is None else f'{secs:.0f}'} |")
        if "marl" in med and "rllib" in med:
            (ms, mt), (rs, rt) = med["marl"], med["rllib"]
            interval = median_ratio_interval(values["marl"], values["rllib"])
            ratios.append((case, ms / rs if ms and rs else None, interval, mt / rt if mt and rt else None))
    if ratios:
        print("\n| case | marl/RLlib median env steps | 90% bootstrap interval over seeds | marl/RLlib median wall s |"
              "\n|---|---|---|---|")
        for case, rs, interval, rt in ratios:
            shown = "-" if interval is None else f"{interval[0]:.2f} - {interval[1]:.2f}"
            print(f"| {case} | {'-' if rs is None else f'{rs:.2f}'} | {shown} | {'-' if rt is None else f'{rt:.2f}'} |")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--only", choices=["marl", "rllib"], help="run one library only")
    parser.add_argument("--rllib-python", default=default_rllib_python())
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (1 keeps timings comparable)")
    parser.add_argument("--threads", type=int, default=None, help="OMP threads per run (default: torch's)")
    parser.add_argument("--json", help="also write every run's result to this file")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="print the table of earlier --json files (pooled) instead of running")
    parser.add_argument("--worker", choices=["marl", "rllib"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(RESULT_PREFIX + json.dumps(run_worker(args.worker, args.case, args.seed)), flush=True)
        return 0

    if args.table:
        pooled = latest_per_run([r for path in args.table for r in json.loads(Path(path).read_text())])
        cases = [c for c in CASES if any(r["case"] == c for r in pooled)]
        print_table(pooled, cases, [lib for lib in ("marl", "rllib") if any(r["library"] == lib for r in pooled)])
        return 0
    libraries = [args.only] if args.only else ["marl", "rllib"]
    if "rllib" in libraries and not Path(args.rllib_python).exists():
        parser.error(f"--rllib-python {args.rllib_python!r} does not exist; make the RLlib venv as the "
                     "module docstring shows, or pass --only marl")
    pythons = {"marl": sys.executable, "rllib": args.rllib_python}
    jobs = [(lib, case, seed) for case in args.cases for seed in args.seeds for lib in libraries]
    results: List[Dict[str, Any]] = []

    def one(job):
        lib, case, seed = job
        r = launch(pythons[lib], lib, case, seed, args.threads)
        print(f"{case:>15} {lib:>5} seed {seed}: {fmt_run(r)}" + (f"\n{r['error']}" if r.get("error") else ""),
              flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, jobs))
    print_table(results, args.cases, libraries)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
