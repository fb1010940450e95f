"""Results runner: an algorithm x env x seed matrix -> a table to compare with papers.

    python scripts/benchmark.py                                   # the small default matrix (~2 min, 2 cores)
    python scripts/benchmark.py --algos ppo,mappo --envs mpe2/simple_spread_v3,CartPole-v1 \\
        --seeds 0,1,2 --stop-timesteps 50000
    python scripts/benchmark.py --algos ppo --envs mpe2.simple_speaker_listener_v4 --policy-setup per-agent \\
        --set lr=0.0005 --set num_epochs=10 --eval-episodes 20 --out runs/my-benchmark

Each run trains in this process through the library API (``<Algo>Config``
built here from marl's public names) until ``--stop-timesteps`` env steps (or
``--stop-iters``), then plays ``--eval-episodes`` greedy episodes. The output
directory gets:

- ``results.md``: one row per (algorithm, env), mean ± std over seeds, with
  the reward convention stated under the table;
- ``summary.csv``: the same rows, each mean and std in its own column;
- ``runs.csv``: one row per seed (what the summary is computed from);
- ``curves.csv`` and ``learning_curves.png``: return against env steps per
  seed, and the mean ± std over seeds per (algorithm, env);
- ``config.json``: the matrix, the hyperparameters each algorithm ran with,
  package versions and the machine.

Every algorithm starts from marl's defaults for its config class; the on-policy
ones get ``ON_POLICY_DEFAULTS`` (smaller batches than RLlib's, so the default
matrix finishes in minutes), and ``--set key=value`` overrides both, for every
algorithm of the matrix. A key an algorithm does not know is refused before
any run starts. ``--envs`` takes every form ``.environment()`` takes, plus
``package/module`` for ``package.module`` (``mpe2/simple_spread_v3``).
"""
from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALGOS = ("ppo", "mappo", "vpg", "dqn", "iql", "vdn", "qmix", "sac", "masac")
POLICY_SETUPS = ("shared", "per-agent")
DEFAULT_ALGOS = "ppo,mappo"
DEFAULT_ENVS = "mpe2.simple_spread_v3,CartPole-v1"
DEFAULT_SEEDS = "0,1"
DEFAULT_STOP_TIMESTEPS = 20_000
#: On-policy batch settings of the default matrix: RLlib's 4000 x 30 epochs of 128 is slow on
#: 2 cores. Not tuned per env: the table is a like-for-like run of every algorithm, not a best score.
_PPO_FAMILY = {"lr": 3e-4, "train_batch_size_per_learner": 2000, "minibatch_size": 500, "num_epochs": 5}
ON_POLICY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ppo": dict(_PPO_FAMILY), "mappo": dict(_PPO_FAMILY), "vpg": {"train_batch_size_per_learner": 2000},
}
#: The per-seed values that the summary averages (``runs.csv`` columns).
METRICS = ("env_steps", "agent_steps", "episodes", "wall_time_s", "team_return", "per_agent_return",
           "episode_len", "eval_team_return", "eval_per_agent_return", "eval_episode_len")
SMOOTHING_EPISODES = 100  # AlgorithmConfig.metrics_num_episodes_for_smoothing (RLlib's default)

CONVENTION = [
    ("**team return**: the return of one episode summed over all agents (RLlib's `episode_return_mean`); "
     "for a single-agent env, the agent's return."),
    ("**per-agent return**: each agent's own episode return, averaged over the agents (for MPE "
     "`simple_spread`, whose reward is shared plus per-agent collision penalties, about team / N)."),
    ("**training** columns: the mean over the last {smoothing} training episodes at the end of training "
     "(`env_runners/smoothed_*`; actions sampled, so exploration is included)."),
    ("**episode length**: env steps per episode (truncation at the env's limit counts, e.g. MPE's "
     "`max_cycles`). **env steps**: steps of the env (all agents acting once is one step), not agent steps."),
    "**wall time**: seconds spent in `algo.train()` (sampling and learning), on the machine named below.",
    ("Each cell is the mean ± std over seeds (population std, `numpy.std` with ddof=0, so 0 for one seed); "
     "the per-seed values are in `runs.csv`."),
]
GREEDY_CONVENTION = ("**greedy** columns: the mean over {eval_episodes} episodes played after training with "
                     "deterministic actions (the distribution's mode), on an env seeded apart from training.")


class UsageError(ValueError):
    """A bad command-line value; the message names the argument and what it accepts."""


# ------------------------------------------------------------------ the matrix
@dataclass(frozen=True)
class Job:
    """One run of the matrix: everything needed to build its config."""

    algo: str
    env: str
    env_config: Dict[str, Any]
    seed: int
    policy_setup: str
    hyperparameters: Dict[str, Any]
    eval_episodes: int


def parse_list(text: str, option: str, cast: Callable[[str], Any] = str) -> List[Any]:
    """``"a,b"`` -> ``[cast("a"), cast("b")]``, naming ``option`` on a bad value."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"argument {option}: expected a comma-separated list, got {text!r}")
    try:
        return [cast(item) for item in items]
    except ValueError as e:
        raise UsageError(f"argument {option}: {text!r}: {e}") from None


def parse_algos(text: str) -> List[str]:
    algos = parse_list(text, "--algos")
    unknown = [a for a in algos if a not in ALGOS]
    if unknown:
        raise UsageError(f"argument --algos: unknown algorithm(s) {unknown}; choose from {', '.join(ALGOS)}")
    return algos


def parse_settings(pairs: Sequence[str]) -> Dict[str, Any]:
    """``["lr=0.001", "num_epochs=5"]`` -> ``{"lr": 0.001, "num_epochs": 5}`` (values read as JSON)."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"argument --set: expected key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value  # a bare string such as a mixer name
    return out


def parse_env_configs(text: Optional[str], envs: Dict[str, str]) -> Dict[str, Dict[str, Any]]:
    """``--env-config`` JSON ``{env: env_config}``; every key must be an env of ``--envs`` (as given or resolved)."""
    if not text:
        return {}
    try:
        configs = json.loads(text)
    except ValueError as e:
        raise UsageError(f"argument --env-config: not JSON ({e}): {text!r}") from None
    if not isinstance(configs, dict) or not all(isinstance(v, dict) for v in configs.values()):
        raise UsageError(f"argument --env-config: expected {{env: {{key: value}}}}, got {text!r}")
    unknown = sorted(set(configs) - set(envs) - set(envs.values()))
    if unknown:
        raise UsageError(f"argument --env-config: names env(s) {unknown} that are not in --envs {list(envs)}")
    return configs


def resolve_env_name(name: str) -> str:
    """``name`` as the env registry knows it; ``package/module`` is read as ``package.module``."""
    from envs.registry import UnknownEnvError, make_env_creator

    try:
        make_env_creator(name, {})
        return name
    except UnknownEnvError:
        dotted = name.replace("/", ".")
        if "/" in name and ":" not in name:
            try:
                make_env_creator(dotted, {})
                return dotted
            except UnknownEnvError:
                pass
        raise


def env_version(env: str) -> str:
    """``"<distribution> <version>"`` of the package that defines ``env`` (e.g. ``mpe2 0.0.1``)."""
    from envs.registry import make_env_creator

    creator = make_env_creator(env, {})
    if creator.kind == "gym":
        import gymnasium as gym

        try:
            entry = gym.spec(creator.target).entry_point
            module = entry if isinstance(entry, str) else entry.__module__
        except Exception:  # ids such as "ale_py:ALE/Pong-v5" name their module before the colon
            module = str(creator.target).split(":")[0]
    elif creator.kind == "pettingzoo_module":
        module = str(creator.target)
    elif creator.kind == "pettingzoo_registry":
        module = "pettingzoo"
    else:
        module = getattr(creator.target, "__module__", "") or ""
    top = module.split(":")[0].split(".")[0]
    for dist in dict.fromkeys(importlib.metadata.packages_distributions().get(top, [])):
        return f"{dist} {importlib.metadata.version(dist)}"
    return top or "unknown"


def make_config(job: Job) -> Any:
    """The validated ``AlgorithmConfig`` of ``job``, from marl's public config classes."""
    from marl import DQNConfig, MAPPOConfig, MASACConfig, PPOConfig, QMIXConfig, SACConfig, VPGConfig

    if job.algo in ("vdn", "qmix"):
        config = QMIXConfig().training(mixer=job.algo)
    else:
        config = {"ppo": PPOConfig, "mappo": MAPPOConfig, "vpg": VPGConfig, "dqn": DQNConfig, "iql": DQNConfig,
                  "sac": SACConfig, "masac": MASACConfig}[job.algo]()
    config.environment(job.env, env_config=dict(job.env_config))
    if job.policy_setup == "per-agent":
        from envs.registry import make_env
        from marl.algorithms.module_setup import agent_id_as_module_id

        env = make_env(job.env, dict(job.env_config))
        try:
            modules = {agent_id_as_module_id(agent, None) for agent in env.possible_agents}
        finally:
            env.close()
        config.multi_agent(policies=modules, policy_mapping_fn=agent_id_as_module_id)
    config.update_from_dict(job.hyperparameters)
    if job.eval_episodes:
        config.evaluation(evaluation_duration=job.eval_episodes, evaluation_duration_unit="episodes")
    config.debugging(seed=job.seed)
    config.validate()
    return config


def build_matrix(args: argparse.Namespace) -> List[Tuple[Job, Any]]:
    """Every (job, config) of the matrix, all validated before the first run starts."""
    from marl.algorithms.algorithm_config import ConfigError

    algos = parse_algos(args.algos)
    try:
        envs = {name: resolve_env_name(name) for name in parse_list(args.envs, "--envs")}
    except ValueError as e:
        raise UsageError(f"argument --envs: {e}") from None
    seeds = parse_list(args.seeds, "--seeds", int)
    env_configs = parse_env_configs(args.env_config, envs)
    settings = parse_settings(args.set or [])
    matrix = []
    for algo in algos:
        hyperparameters = {**ON_POLICY_DEFAULTS.get(algo, {}), **settings}
        for name, env in envs.items():
            env_config = env_configs.get(name, env_configs.get(env, {}))
            for seed in seeds:
                job = Job(algo, env, env_config, seed, args.policy_setup, hyperparameters, args.eval_episodes)
                try:
                    matrix.append((job, make_config(job)))
                except ConfigError as e:
                    raise UsageError(f"{algo} on {env}: {e}") from None
    return matrix


# ------------------------------------------------------------------ one run
@dataclass
class RunRecord:
    """One seed's results: the final values and its learning curve."""

    algo: str
    env: str
    env_version: str
    seed: int
    iterations: int = 0
    agent_returns: Dict[str, float] = field(default_factory=dict)
    curve: List[Tuple[int, float, float]] = field(default_factory=list)  # (env steps, smoothed, iteration)
    error: str = ""
    values: Dict[str, float] = field(default_factory=dict)  # the METRICS


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _agent_returns(metrics: Dict[str, Any], key: str) -> Dict[str, float]:
    """Per-agent mean returns under ``key`` (training: ``agent_episode_returns_mean``, eval: ``..._return_mean``)."""
    found = metrics.get(key) or metrics.get(key.replace("returns", "return")) or {}
    return {str(agent): float(value) for agent, value in found.items()}


def run_job(job: Job, config: Any, stop_timesteps: int, stop_iters: Optional[int]) -> RunRecord:
    """Train one (algorithm, env, seed) to its budget and record its curve and final values."""
    record = RunRecord(job.algo, job.env, env_version(job.env), job.seed)
    algo = config.build()
    try:
        wall, result = 0.0, {}
        while True:
            t0 = time.perf_counter()
            result = algo.train()
            wall += time.perf_counter() - t0
            record.iterations += 1
            runners = result["env_runners"]
            steps = int(result["num_env_steps_sampled_lifetime"])
            record.curve.append((steps, _number(runners.get("smoothed_episode_return_mean")),
                                 _number(runners.get("episode_return_mean"))))
            if steps >= stop_timesteps or (stop_iters is not None and record.iterations >= stop_iters):
                break
        runners = result["env_runners"]
        record.agent_returns = _agent_returns(runners, "smoothed_agent_episode_returns_mean")
        record.values = {
            "env_steps": steps, "agent_steps": _number(result.get("num_agent_steps_sampled_lifetime")),
            "episodes": _number(runners.get("num_episodes_lifetime")), "wall_time_s": wall,
            "team_return": _number(runners.get("smoothed_episode_return_mean")),
            "per_agent_return": mean_std(list(record.agent_returns.values()))[0],
            "episode_len": _number(runners.get("smoothed_episode_len_mean")),
        }
        evaluation = algo.evaluate()["env_runners"] if job.eval_episodes else {}
        record.values.update(
            eval_team_return=_number(evaluation.get("episode_return_mean")),
            eval_per_agent_return=mean_std(list(_agent_returns(evaluation, "agent_episode_returns_mean").values()))[0],
            eval_episode_len=_number(evaluation.get("episode_len_mean")),
        )
    finally:
        algo.stop()
    return record


# ------------------------------------------------------------------ summary
def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and population std (ddof=0) of the finite ``values``; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def summarize(records: Sequence[RunRecord]) -> List[Dict[str, Any]]:
    """One row per (algorithm, env), in matrix order: seeds, and mean/std of every metric."""
    groups: Dict[Tuple[str, str], List[RunRecord]] = {}
    for record in records:
        if not record.error:
            groups.setdefault((record.algo, record.env), []).append(record)
    rows = []
    for (algo, env), runs in groups.items():
        row: Dict[str, Any] = {"algo": algo, "env": env, "env_version": runs[0].env_version,
                               "seeds": " ".join(str(r.seed) for r in runs), "num_seeds": len(runs)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([r.values[metric] for r in runs])
        rows.append(row)
    return rows


# ------------------------------------------------------------------ outputs
def _write_csv(path: Path, rows: Sequence[Dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_csvs(out: Path, records: Sequence[RunRecord], summary: Sequence[Dict[str, Any]]) -> None:
    """``runs.csv`` (per seed), ``summary.csv`` (per algorithm and env), ``curves.csv`` (per iteration)."""
    run_columns = ["algo", "env", "env_version", "seed", "iterations", *METRICS, "agent_returns", "error"]
    _write_csv(out / "runs.csv", [
        {"algo": r.algo, "env": r.env, "env_version": r.env_version, "seed": r.seed, "iterations": r.iterations,
         **{m: r.values.get(m, math.nan) for m in METRICS}, "agent_returns": json.dumps(r.agent_returns),
         "error": r.error} for r in records], run_columns)
    summary_columns = ["algo", "env", "env_version", "num_seeds", "seeds",
                       *[f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")]]
    _write_csv(out / "summary.csv", summary, summary_columns)
    _write_csv(out / "curves.csv", [
        {"algo": r.algo, "env": r.env, "seed": r.seed, "iteration": i + 1, "env_steps": steps,
         "smoothed_team_return": smoothed, "iteration_team_return": this_iter}
        for r in records for i, (steps, smoothed, this_iter) in enumerate(r.curve)],
        ["algo", "env", "seed", "iteration", "env_steps", "smoothed_team_return", "iteration_team_return"])


def _cell(row: Dict[str, Any], metric: str, digits: int = 2) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def markdown_table(summary: Sequence[Dict[str, Any]], eval_episodes: int) -> List[str]:
    header = ["algorithm", "env (package version)", "seeds", "env steps", "team return, training (sum over agents)",
              "per-agent return, training (mean over agents)", "episode length, training"]
    columns = ["team_return", "per_agent_return", "episode_len"]
    if eval_episodes:
        header += ["team return, greedy", "per-agent return, greedy"]
        columns += ["eval_team_return", "eval_per_agent_return"]
    header.append("wall time (s)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [row["algo"], f"{row['env']} ({row['env_version']})", str(row["num_seeds"]),
                 _cell(row, "env_steps", 0), *[_cell(row, c) for c in columns], _cell(row, "wall_time_s", 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(out: Path, summary: Sequence[Dict[str, Any]], records: Sequence[RunRecord],
                   context: Dict[str, Any]) -> None:
    """``results.md``: the table, the convention it follows, the settings and the machine."""
    eval_episodes = context["eval_episodes"]
    lines = [f"# Benchmark: {', '.join(context['algos'])} on {', '.join(context['envs'])}", "",
             (f"Seeds {', '.join(map(str, context['seeds']))}; budget {context['stop']}; policy setup "
              f"`{context['policy_setup']}`."), "", *markdown_table(summary, eval_episodes), "",
             "Reward convention (read before comparing with papers):", ""]
    notes = CONVENTION + ([GREEDY_CONVENTION] if eval_episodes else [])
    lines += [f"{i}. {text.format(smoothing=SMOOTHING_EPISODES, eval_episodes=eval_episodes)}"
              for i, text in enumerate(notes, 1)]
    lines += ["", "Hyperparameters: marl's defaults for each config class, except "
              + "; ".join(f"{algo}: `{json.dumps(hp)}`" for algo, hp in context["hyperparameters"].items())
              + ". Env configs: " + (f"`{json.dumps(context['env_config'])}`" if context["env_config"]
                                     else "the envs' defaults") + ".",
              "", f"Machine: {context['machine']}."]
    failed = [r for r in records if r.error]
    if failed:
        lines += ["", "Failed runs (left out of the table):", ""]
        lines += [f"- {r.algo} on {r.env}, seed {r.seed}: {r.error}" for r in failed]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def mean_curve(curves: Sequence[Sequence[Tuple[int, float, float]]]) -> Optional[Tuple[Any, Any, Any]]:
    """Seeds' smoothed returns on one env-step grid (their common range): grid, mean, std."""
    import numpy as np

    usable = []
    for curve in curves:
        points = np.asarray([(s, v) for s, v, _ in curve if not math.isnan(v)], dtype=float).reshape(-1, 2)
        if len(points):
            usable.append(points)
    if not usable:
        return None
    start, end = max(p[0, 0] for p in usable), min(p[-1, 0] for p in usable)
    grid = np.linspace(start, end, 100) if end > start else np.asarray([end])
    values = np.stack([np.interp(grid, p[:, 0], p[:, 1]) for p in usable])
    return grid, values.mean(axis=0), values.std(axis=0)


def plot_curves(out: Path, records: Sequence[RunRecord]) -> None:
    """``learning_curves.png``: one panel per env, the mean ± std over seeds of each algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r.env for r in records))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for algo in dict.fromkeys(r.algo for r in records if r.env == env):
            runs = [r for r in records if r.env == env and r.algo == algo and not r.error]
            curve = mean_curve([r.curve for r in runs])
            if curve is None:
                continue
            grid, mean, std = curve
            ax.plot(grid, mean, label=f"{algo} ({len(runs)} seeds)")
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{env} ({next(r.env_version for r in records if r.env == env)})")
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"team return (sum over agents),\nmean of last {SMOOTHING_EPISODES} episodes")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=100)
    plt.close(fig)


def machine() -> str:
    import torch

    return (f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} thread(s)), marl {importlib.metadata.version('marl')}")


# ------------------------------------------------------------------ command line
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default=DEFAULT_ALGOS, help=f"comma-separated, from {', '.join(ALGOS)} "
                        f"(default {DEFAULT_ALGOS})")
    parser.add_argument("--envs", default=DEFAULT_ENVS, help=f"comma-separated env strings (default {DEFAULT_ENVS})")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated ints (default {DEFAULT_SEEDS})")
    parser.add_argument("--stop-timesteps", type=int, default=DEFAULT_STOP_TIMESTEPS,
                        help=f"env steps per run (default {DEFAULT_STOP_TIMESTEPS})")
    parser.add_argument("--stop-iters", type=int, help="also stop after this many iterations")
    parser.add_argument("--eval-episodes", type=int, default=10, help="greedy episodes after training (0: none)")
    parser.add_argument("--policy-setup", choices=POLICY_SETUPS, default="shared",
                        help="shared: one module for all agents; per-agent: one module per agent")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="an AlgorithmConfig value for every algorithm (repeatable; values read as JSON)")
    parser.add_argument("--env-config", help='JSON {env: env_config}, e.g. \'{"mpe2.simple_spread_v3": {"N": 3}}\'')
    parser.add_argument("--out", help="output directory (default runs/benchmark-<timestamp>)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    for name in ("stop_timesteps", "torch_threads"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.eval_episodes < 0:
        parser.error(f"argument --eval-episodes: expected an int >= 0, got {args.eval_episodes}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)
    try:
        matrix = build_matrix(args)
    except (UsageError, ValueError) as e:
        print(f"benchmark.py: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "runs" / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for n, (job, config) in enumerate(matrix, 1):
        print(f"[{n}/{len(matrix)}] {job.algo} on {job.env}, seed {job.seed} ...", flush=True)
        try:
            record = run_job(job, config, args.stop_timesteps, args.stop_iters)
        except Exception as e:  # one failed run must not lose the others' results
            record = RunRecord(job.algo, job.env, env_version(job.env), job.seed, error=f"{type(e).__name__}: {e}")
            print(f"    failed: {record.error}", file=sys.stderr)
        else:
            print(f"    team return {record.values['team_return']:.2f} after {record.values['env_steps']:,} env "
                  f"steps, {record.values['wall_time_s']:.1f} s", flush=True)
        records.append(record)
    summary = summarize(records)
    first = {job.algo: job for job, _ in matrix}
    context = {
        "algos": list(first), "envs": list(dict.fromkeys(job.env for job, _ in matrix)),
        "seeds": list(dict.fromkeys(job.seed for job, _ in matrix)), "policy_setup": args.policy_setup,
        "stop": f"{args.stop_timesteps:,} env steps" + (f" or {args.stop_iters} iterations" if args.stop_iters else ""),
        "eval_episodes": args.eval_episodes, "hyperparameters": {a: j.hyperparameters for a, j in first.items()},
        "env_config": json.loads(args.env_config) if args.env_config else {}, "machine": machine(),
        "env_versions": {r.env: r.env_version for r in records},
    }
    write_csvs(out, records, summary)
    write_markdown(out, summary, records, context)
    plot_curves(out, records)
    (out / "config.json").write_text(json.dumps({**context, "argv": list(argv or sys.argv[1:])}, indent=2) + "\n")
    print("\n".join(markdown_table(summary, args.eval_episodes)))
    print(f"\nwrote {out}/results.md, summary.csv, runs.csv, curves.csv, learning_curves.png, config.json")
    return 0 if all(not r.error for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
