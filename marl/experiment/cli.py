"""The command line of ``run_marl.py``: arguments, ``--config`` files and resumed runs to one `RunSpec`.

Three layers set options; a higher one wins, option by option:

1. the ``config.yaml`` of the run given to ``--resume``,
2. the ``--config FILE.yaml``,
3. the command line,

on top of the defaults in `presets` (the env's preset, then the generic
defaults). Every layer goes through the same argparse parser, so a bad value
in a file is reported exactly like one on the command line, naming the
argument and the accepted values.

Hyperparameters are every ``--key=value`` the parser does not know (the form
wandb's sweep agent passes: ``--lr=0.001 --entropy_coeff=0.01``). Values are
read with ``yaml.safe_load`` (so ``true``, ``[64, 64]`` and ``null`` work),
numbers like ``1e-05`` become floats, and keys are checked against the
algorithm's config before anything is built. ``--env_config.N=2`` and
``--model_config.fcnet_hiddens=[64,64]`` set one field of those dicts.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import json
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from marl.experiment import presets

ALGOS = ("ppo", "mappo", "vpg", "dqn", "iql", "vdn", "qmix", "sac", "masac")
#: Value-based algorithms: their modules are Q-networks, so no shared-encoder setup; the
#: default setup when none is given (IQL: independent learners, one Q-network per agent).
VALUE_BASED_SETUPS = {"dqn": "shared", "iql": "per-agent", "vdn": "shared", "qmix": "shared", "sac": "shared",
                      "masac": "per-agent"}
POLICY_SETUPS = ("shared", "per-agent", "shared-encoder")
WANDB_MODES = ("online", "offline", "disabled")
STOP_KEYS = ("stop_iters", "stop_timesteps", "stop_return", "stop_time")

#: AlgorithmConfig keys that have their own option (``--seed``) or a fixed meaning here.
_KEYS_WITH_OPTIONS = {
    "env", "env_config", "model_config", "policy_mapping_fn", "policies", "seed",
    "num_env_runners", "num_envs_per_env_runner",
}
#: AlgorithmConfig keys that hold Python objects, which a command line cannot express.
_KEYS_NOT_SETTABLE = {
    "rl_module_spec": "the modules come from --policy-setup and --model-config",
    "learner_class": "write a Python script to use a custom Learner class",
    "env_to_module_connector": "write a Python script to use env-to-module connectors",
    "algo_class": "use --algo",
}
#: Spellings accepted for RLlib names.
_KEY_ALIASES = {"lambda": "lambda_", "train_batch_size": "train_batch_size_per_learner"}
#: Dicts whose single fields can be set with ``--<dict>.<field>=value``.
_DOTTED_DICTS = ("env_config", "model_config")
#: Keys of a ``config.yaml`` that are informational and not read back.
_INFORMATIONAL_KEYS = {"algorithm_config", "config", "resumed_from", "marl_version"}


class UsageError(Exception):
    """A bad argument or config value; the message names it and what is accepted."""


# ------------------------------------------------------------------ values
def parse_value(text: str) -> Any:
    """A hyperparameter value from its command-line text.

    ``yaml.safe_load`` gives numbers, booleans, lists and ``null``; what it
    leaves a string but Python reads as a number (``1e-05``, which YAML 1.1
    takes for a string) becomes a float, and Python's ``None`` (what wandb's
    agent writes) becomes None.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        if value == "None":
            return None
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
    return value


def json_object(text: str) -> Dict[str, Any]:
    """A dict from JSON (or the Python repr wandb's sweep agent writes for dict values)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise argparse.ArgumentTypeError(
                f"expected a JSON object such as '{{\"N\": 3}}', got {text!r} ({json_error})"
            ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"N\": 3}}', got {type(value).__name__}: {text!r}"
        )
    return value


def model_config_object(text: str) -> Dict[str, Any]:
    """A ``DefaultModelConfig`` dict; unknown fields fail here, naming the field."""
    value = json_object(text)
    check_model_config(value)
    return value


def check_model_config(value: Dict[str, Any]) -> None:
    from marl.models.default_model_config import resolve_default_model_config

    try:
        resolve_default_model_config(value)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bounded_int(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            number = float(text)  # accepts 1e5 and 200_000
            if not number.is_integer():
                raise ValueError
            value = int(number)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    convert.__name__ = f"int>={minimum}"
    return convert


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def boolean(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on", "y"):
        return True
    if lowered in ("0", "false", "no", "off", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def tag_list(text: str) -> List[str]:
    """Tags as ``a,b`` or a JSON / Python list ``["a", "b"]``."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise argparse.ArgumentTypeError(f"expected a list of tags, got {text!r}") from None
        return [str(v) for v in value]
    return [t.strip() for t in text.split(",") if t.strip()]


def seed_list(text: str) -> List[int]:
    """``--seeds 0,1,2`` (or a JSON list, as a config file holds it): distinct integers."""
    try:
        seeds = [int(s) for s in tag_list(text)]
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected integers separated by commas such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers such as 0,1,2, got {text!r}")
    return seeds


def one_seed(text: str) -> int:
    """``--seed``: one integer; several point to ``--seeds``, which gives each its own run."""
    try:
        return int(text)
    except ValueError:
        hint = f"; to run several seeds use --seeds {text}" if "," in text else ""
        raise argparse.ArgumentTypeError(f"expected one integer, got {text!r}{hint}") from None


def import_path(text: str) -> str:
    """Check that ``module:function`` (or ``module.function``) imports to a callable."""
    load_callable(text)
    return text


def load_callable(path: str) -> Callable[..., Any]:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise argparse.ArgumentTypeError(f"expected MODULE:FUNCTION such as 'my_pkg.mapping:fn', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise argparse.ArgumentTypeError(f"cannot import module {module_name!r} of {path!r}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise argparse.ArgumentTypeError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise argparse.ArgumentTypeError(f"{path!r} is a {type(obj).__name__}, not a callable")
    return obj


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """Raises `UsageError` instead of exiting, so file layers can say where a value came from."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _hyperparameter_keys(algo: str) -> List[str]:
    """The keys ``--key=value`` accepts for ``algo``: its config's plain settings."""
    config = make_algorithm_config(algo)
    return sorted(
        k for k in config.known_keys() if k not in _KEYS_WITH_OPTIONS and k not in _KEYS_NOT_SETTABLE
    )


def make_algorithm_config(algo: str) -> Any:
    from marl import DQNConfig, MAPPOConfig, MASACConfig, PPOConfig, QMIXConfig, SACConfig, VPGConfig

    if algo in ("vdn", "qmix"):
        return QMIXConfig().training(mixer=algo)

    return {"ppo": PPOConfig, "mappo": MAPPOConfig, "vpg": VPGConfig, "dqn": DQNConfig, "iql": DQNConfig,
            "sac": SACConfig, "masac": MASACConfig}[algo]()


def _epilog() -> str:
    preset = presets.PRESETS[presets.DEFAULT_ENV]
    lines = [
        "hyperparameters:",
        "  Any algorithm-config key as --key=value (or --key value); values are YAML",
        "  (numbers, true/false, [lists], null). --env_config.KEY=V / --model_config.KEY=V",
        "  set one field of those dicts.",
    ]
    for algo in ALGOS:
        keys = _hyperparameter_keys(algo)
        lines.append(textwrap.fill(", ".join(keys), width=100, initial_indent=f"  {algo}: ",
                                   subsequent_indent="    ", break_on_hyphens=False))
    lines += [
        "",
        "default experiment (no arguments):",
        f"  --env {presets.DEFAULT_ENV} --env-config '{json.dumps(preset.env_config)}'",
        f"  --algo ppo --policy-setup shared-encoder --model-config '{json.dumps(preset.model_config)}'",
        "  " + " ".join(f"--{k}={v}" for k, v in preset.hyperparameters["ppo"].items()),
        "  " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in preset.stop.items())
        + f" --num-envs-per-env-runner {preset.num_envs_per_env_runner} --seed 0",
        "",
        "examples:",
        "  python scripts/run_marl.py",
        "  python scripts/run_marl.py --seeds 0,1,2 --parallel 2 --tensorboard --eval-interval 10",
        "  python scripts/run_marl.py --policy-setup per-agent --lr=0.0005 --stop-iters 50",
        "  python scripts/run_marl.py --env CartPole-v1 --policy-setup shared --stop-return 450",
        "  python scripts/run_marl.py --resume runs/<run> --stop-timesteps 400000",
        "  python scripts/run_marl.py --eval runs/<run>/checkpoint --eval-episodes 3 --render",
    ]
    return "\n".join(lines)


def build_parser(with_epilog: bool = True) -> _Parser:
    """The argparse parser (every default is shown in the help, set in `presets`)."""
    d = presets.GENERIC_DEFAULTS
    parser = _Parser(
        prog="run_marl.py",
        description=(
            "Train (or evaluate) a multi-agent policy on a PettingZoo or gymnasium env. "
            "With no arguments: IPPO with a shared encoder on MPE simple_spread for "
            f"{presets.DEFAULT_STOP_TIMESTEPS:,} env steps (1.5-2.5 minutes on 2 CPU cores). "
            "Each run writes runs/<env>-<algo>-<setup>-<time>/ with config.yaml, metrics.jsonl, progress.csv, "
            "learning_curve.png and checkpoint/ (and tensorboard/ with --tensorboard); --seeds writes one "
            "such directory per seed, seed-<N>/, under one group directory."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
        epilog=_epilog() if with_epilog else None,
    )
    exp = parser.add_argument_group("experiment")
    exp.add_argument("--config", metavar="FILE.yaml",
                     help="YAML file of options (keys as below, with _ or -) and hyperparameters "
                          "(top level or under 'hyperparameters:'); command-line values override it. "
                          "A run's config.yaml works here.")
    exp.add_argument("--env", metavar="ENV",
                     help="gymnasium id ('CartPole-v1', 'ale_py:ALE/Pong-v5'), PettingZoo module path "
                          "('mpe2.simple_spread_v3'), registry name ('butterfly/pistonball-v6'), a SuperSuit "
                          "preset ('envs.pistonball_preset': 84x84 frames instead of raw 457x120x3 images) "
                          f"or a name given to envs.register_env (default: {presets.DEFAULT_ENV})")
    exp.add_argument("--env-config", metavar="JSON", type=json_object,
                     help="kwargs of the env constructor as a JSON object (default: the env's preset, "
                          f"{json.dumps(presets.PRESETS[presets.DEFAULT_ENV].env_config)} for simple_spread; else {{}})")
    exp.add_argument("--algo", choices=ALGOS, help=f"algorithm (default: {d['algo']})")
    exp.add_argument("--policy-setup", choices=POLICY_SETUPS,
                     help="shared: one module for all agents; per-agent: one module per agent (ids = str(agent_id)); "
                          "shared-encoder: one encoder, one policy/value head per agent "
                          f"(default: {d['policy_setup']}; for dqn, vdn, qmix: shared; iql: per-agent)")
    exp.add_argument("--policy-mapping-fn", metavar="MODULE:FUNCTION", type=import_path,
                     help="import path of policy_mapping_fn(agent_id, episode, **kw) -> module id; overrides the "
                          "setup's mapping; every id it returns must be one of --policies")
    exp.add_argument("--policies", metavar="ID,ID", type=tag_list,
                     help="the policy module ids (default: the setup's: default_policy for shared, the agent "
                          "ids for per-agent and shared-encoder); declare others, e.g. team_a,team_b, for a "
                          "--policy-mapping-fn that returns them")
    exp.add_argument("--model-config", metavar="JSON", type=model_config_object,
                     help="DefaultModelConfig fields as a JSON object, e.g. '{\"fcnet_hiddens\": [64, 64]}' "
                          "(default: the env's preset, else DefaultModelConfig's defaults)")
    exp.add_argument("--seed", type=one_seed, help=f"seed of torch, numpy and the envs (default: {d['seed']})")
    exp.add_argument("--seeds", metavar="S,S,...", type=seed_list,
                     help="one run per seed (run directories seed-<S>/ under one group directory: --run-dir, "
                          "default runs/<env>-<algo>-<setup>-<time>/), then a summary: each seed's final return, "
                          "mean and std")
    exp.add_argument("--parallel", metavar="N", type=_bounded_int(1),
                     help="with --seeds: train N seeds at once, each in its own process (default: 1, one after "
                          "the other)")

    runners = parser.add_argument_group("env runners")
    runners.add_argument("--num-env-runners", metavar="N", type=_bounded_int(0),
                         help="sampling worker processes; 0 samples in the main process (default: 0)")
    runners.add_argument("--num-envs-per-env-runner", metavar="N", type=_bounded_int(1),
                         help="envs stepped in lockstep per env runner (default: the preset's, else 1)")
    runners.add_argument("--torch-threads", metavar="N", type=_bounded_int(1),
                         help="torch.set_num_threads of this process (default: 1; the default models are so "
                              "small that more threads only add synchronisation, and on a busy machine "
                              "they make every layer call many times slower)")

    stop = parser.add_argument_group(
        "stopping (the run stops when any given condition holds; with none given: the env preset's "
        f"(simple_spread: --stop-timesteps {presets.DEFAULT_STOP_TIMESTEPS}), "
        f"else --stop-iters {presets.GENERIC_STOP['stop_iters']}; no time limit unless --stop-time)"
    )
    stop.add_argument("--stop-iters", metavar="N", type=_bounded_int(1), help="training iterations (lifetime)")
    stop.add_argument("--stop-timesteps", metavar="N", type=_bounded_int(1), help="env steps sampled (lifetime)")
    stop.add_argument("--stop-return", metavar="R", type=_float, help="env_runners/episode_return_mean reached")
    stop.add_argument("--stop-time", metavar="SECONDS", type=_positive_float, help="wall-clock seconds of this session")

    out = parser.add_argument_group("output")
    out.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<env>-<algo>-<setup>-<timestamp>/); "
                                                      "with --seeds the group directory holding seed-<S>/")
    out.add_argument("--checkpoint-every", metavar="N", type=_bounded_int(0),
                     help="also save checkpoint/ every N iterations; 0: only at the end (default: 0)")
    out.add_argument("--resume", metavar="RUN_DIR_OR_CHECKPOINT",
                     help="continue a run: its config.yaml is the base config, training restarts from its "
                          "checkpoint and appends to its metrics.jsonl (stop conditions count lifetime "
                          "iterations/steps, so raise them)")
    out.add_argument("--progress", nargs="?", const=True, type=boolean, metavar="BOOL",
                     help="a progress bar in a terminal; when stdout or stderr is not one (a log file, a pipe) "
                          "one line per iteration on stdout instead (default: true)")
    out.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                     help="no bar: one line per iteration even on a terminal")
    out.add_argument("--quiet", nargs="?", const=True, type=boolean, metavar="BOOL",
                     help="neither bar nor per-iteration lines; the start line and the summary still print")
    out.add_argument("--tensorboard", nargs="?", const=True, type=boolean, metavar="BOOL",
                     help="also write every iteration's metrics as TensorBoard scalars to <run dir>/tensorboard/ "
                          "(x-axis: env steps; view with: tensorboard --logdir runs)")

    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval", metavar="CHECKPOINT",
                    help="no training: run greedy episodes with a checkpoint (or a run directory)")
    ev.add_argument("--eval-episodes", metavar="N", type=_bounded_int(1),
                    help=f"episodes of --eval and of each evaluation during training (default: {d['eval_episodes']})")
    ev.add_argument("--eval-interval", metavar="N", type=_bounded_int(0),
                    help="during training, evaluate every N iterations (greedy unless --eval-explore; each "
                         "episode starts from its own env seed); "
                         "shown in the per-iteration line and the summary, logged under evaluation/ "
                         "(default: 0, never)")
    ev.add_argument("--eval-explore", nargs="?", const=True, type=boolean, metavar="BOOL",
                    help="evaluate during training with the stochastic (exploring) policy instead of the greedy "
                         "one (default: false)")
    ev.add_argument("--render", nargs="?", const=True, type=boolean, metavar="BOOL",
                    help="record the episodes as a GIF (envs that render rgb_array)")
    ev.add_argument("--gif", metavar="PATH", help="GIF path (default: eval.gif next to the checkpoint)")
    ev.add_argument("--eval-opponent", metavar="random|CHECKPOINT",
                    help="two-player games (classic/connect_four_v3, ...): play --eval-episodes games from both "
                         "seats against a random legal player ('random') or an earlier checkpoint or run "
                         "directory (a frozen self); with --eval print the win/draw/loss rates, during training "
                         "(with --eval-interval) log them as evaluation/games/* and show the win rate per line")
    ev.add_argument("--self-play", metavar="N", type=_bounded_int(0),
                    help="two-player games: train module 'main' against module 'opponent' (random seats each "
                         "episode, only main learns); every N iterations main's weights join a pool of past "
                         "selves (up to 20) and a random one becomes the opponent (default: 0, off: one policy "
                         "setup as --policy-setup says)")

    wb = parser.add_argument_group(
        "weights & biases (offline unless --wandb-mode online, WANDB_MODE or WANDB_API_KEY says otherwise)"
    )
    wb.add_argument("--wandb", nargs="?", const=True, type=boolean, metavar="BOOL",
                    help="log config, metrics and the final checkpoint to wandb (default: false)")
    wb.add_argument("--wandb-project", metavar="NAME", help=f"(default: {d['wandb_project']})")
    wb.add_argument("--wandb-entity", metavar="NAME")
    wb.add_argument("--wandb-group", metavar="NAME")
    wb.add_argument("--wandb-tags", metavar="TAG,TAG", type=tag_list)
    wb.add_argument("--wandb-mode", choices=WANDB_MODES,
                    help="default: $WANDB_MODE if set, else online if $WANDB_API_KEY is set, else offline")
    return parser


# ------------------------------------------------------------------ layers
@dataclass
class Layer:
    """What one source (command line, config file, resumed run) sets."""

    source: str
    options: Dict[str, Any] = field(default_factory=dict)
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    dotted: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def _normalize_option_tokens(argv: Sequence[str], option_strings: set) -> List[str]:
    """``--stop_iters=5`` -> ``--stop-iters=5`` (wandb passes underscores)."""
    out = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            dashed = "--" + name.replace("_", "-")
            if "--" + name not in option_strings and dashed in option_strings:
                token = dashed + eq + value
        out.append(token)
    return out


def parse_layer(parser: _Parser, argv: Sequence[str], source: str) -> Layer:
    """Parse one layer's tokens into options and raw hyperparameters."""
    option_strings = set(parser._option_string_actions)
    argv = _normalize_option_tokens(argv, option_strings)
    namespace, unknown = parser.parse_known_args(argv)
    layer = Layer(source=source, options=vars(namespace))
    i = 0
    while i < len(unknown):
        token = unknown[i]
        if not token.startswith("--") or token == "--":
            raise UsageError(
                f"unrecognized argument {token!r}: options and hyperparameters are given as --key=value "
                "(see --help)"
            )
        name, eq, text = token[2:].partition("=")
        if not eq:
            if i + 1 < len(unknown) and not unknown[i + 1].startswith("--"):
                text = unknown[i + 1]
                i += 1
            else:
                text = "true"
        key = name.replace("-", "_")
        head, dot, sub = key.partition(".")
        if dot:
            if head not in _DOTTED_DICTS or not sub:
                raise UsageError(
                    f"argument --{name}: dotted keys set one field of {' or '.join(_DOTTED_DICTS)} "
                    f"(e.g. --env_config.N=2), got {token!r}"
                )
            layer.dotted.setdefault(head, {})[sub] = parse_value(text)
        else:
            layer.hyperparameters[_KEY_ALIASES.get(key, key)] = parse_value(text)
        i += 1
    return layer


def _encode_for_cli(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def file_to_argv(data: Dict[str, Any], parser: _Parser, source: str) -> List[str]:
    """A config dict (``config.yaml`` / ``--config``) as the equivalent ``--key=value`` tokens."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of option -> value, got {type(data).__name__}")
    option_strings = set(parser._option_string_actions)
    argv: List[str] = []
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key in _INFORMATIONAL_KEYS:
            continue
        if key == "hyperparameters":
            if not isinstance(value, dict):
                raise UsageError(f"{source}: 'hyperparameters' must be a mapping, got {type(value).__name__}")
            argv += [f"--{k}={_encode_for_cli(v)}" for k, v in value.items()]
            continue
        dashed = "--" + key.replace("_", "-")
        if value is None and (dashed in option_strings or dashed == "--no-progress"):
            continue  # an option left at its default
        if dashed == "--no-progress":
            argv.append(f"--progress={_encode_for_cli(not value)}")
        elif dashed in option_strings:
            argv.append(f"{dashed}={_encode_for_cli(value)}")
        else:  # a hyperparameter at the top level
            argv.append(f"--{key}={_encode_for_cli(value)}")
    return argv


def read_yaml(path: Path, source: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise UsageError(f"{source}: cannot read {str(path)!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{source}: {str(path)!r} is not valid YAML: {e}") from None
    return data or {}


# ------------------------------------------------------------------ the spec
@dataclass
class RunSpec:
    """Every option of one run, resolved (config.yaml holds exactly this)."""

    env: Any
    env_config: Dict[str, Any]
    algo: str
    policy_setup: str
    policy_mapping_fn: Optional[str]
    policies: Optional[List[str]]
    model_config: Dict[str, Any]
    seed: Optional[int]
    seeds: Optional[List[int]]
    parallel: int
    num_env_runners: int
    num_envs_per_env_runner: int
    torch_threads: int
    stop_iters: Optional[int]
    stop_timesteps: Optional[int]
    stop_return: Optional[float]
    stop_time: Optional[float]
    run_dir: Optional[str]
    checkpoint_every: int
    resume: Optional[str]
    eval: Optional[str]
    eval_episodes: int
    eval_interval: int
    eval_explore: bool
    render: bool
    gif: Optional[str]
    progress: bool
    quiet: bool
    tensorboard: bool
    wandb: bool
    wandb_project: Optional[str]
    wandb_entity: Optional[str]
    wandb_group: Optional[str]
    wandb_tags: List[str]
    wandb_mode: Optional[str]
    hyperparameters: Dict[str, Any] = field(default_factory=dict)
    config: Optional[str] = None
    eval_opponent: Optional[str] = None
    self_play: int = 0

    def stop_conditions(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in STOP_KEYS if getattr(self, k) is not None}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _option_keys() -> List[str]:
    """The parser's long options as hyperparameter-style keys (``stop_timesteps``)."""
    return sorted({o[2:].replace("-", "_") for o in build_parser(with_epilog=False)._option_string_actions
                   if o.startswith("--")})


def _check_hyperparameters(algo: str, hyperparameters: Dict[str, Any], source: str) -> None:
    """Unknown keys fail before anything is built, naming the key and the valid ones.

    Every ``--key`` the parser does not know lands here as a hyperparameter, so
    a misspelt option (``--stop-timestep``) is told apart by what it is closest to.
    """
    valid = _hyperparameter_keys(algo)
    options = _option_keys()
    for key, value in hyperparameters.items():
        if key in _KEYS_NOT_SETTABLE:
            raise UsageError(f"argument --{key}: cannot be set from the command line ({_KEYS_NOT_SETTABLE[key]})")
        if key not in valid:
            close = difflib.get_close_matches(key, valid + options, n=1)
            if close and close[0] in options:
                raise UsageError(f"unrecognized arguments: --{key.replace('_', '-')} "
                                 f"(did you mean --{close[0].replace('_', '-')}?)")
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"argument --{key}: unknown hyperparameter {key!r} for --algo {algo}{hint}; "
                f"valid keys: {', '.join(valid)}"
            )


def _from(source: str, error: UsageError) -> UsageError:
    return UsageError(f"{source}: {error}" if source != "command line" else str(error))


def resolve(argv: Sequence[str]) -> RunSpec:
    """Parse ``argv`` (plus its ``--config`` / ``--resume`` files) into a `RunSpec`.

    Raises `UsageError` naming the argument (and the file it came from) on any
    bad value.
    """
    parser = build_parser(with_epilog=False)
    cli = parse_layer(parser, list(argv), "command line")
    layers: List[Layer] = []
    resume = cli.options.get("resume")
    if resume is not None:
        from marl.experiment.run_dir import find_run_dir

        run_dir, _ = find_run_dir(resume, "--resume")
        source = str(run_dir / "config.yaml")
        stored = read_yaml(run_dir / "config.yaml", source)
        for key in ("run_dir", "resume", "eval", "render", "gif", "progress", "quiet", "seeds", "parallel"):
            stored.pop(key, None)
        try:
            layer = parse_layer(parser, file_to_argv(stored, parser, source), source)
        except UsageError as e:
            raise _from(source, e) from None
        layer.options["run_dir"] = str(run_dir)
        layers.append(layer)
    config_file = cli.options.get("config")
    if config_file is not None:
        source = f"--config {config_file}"
        data = read_yaml(Path(config_file), "argument --config")
        if isinstance(data, dict) and "algorithm_config" in data:
            # A run's own config.yaml: reproduce the run in a new directory, do not reuse its own.
            for key in ("run_dir", "resume", "eval"):
                data.pop(key, None)
        try:
            layers.append(parse_layer(parser, file_to_argv(data, parser, source), source))
        except UsageError as e:
            raise _from(source, e) from None
    layers.append(cli)
    return _merge(layers, config_file)


def _merge(layers: List[Layer], config_file: Optional[str]) -> RunSpec:
    given: Dict[str, Any] = {}
    for layer in layers:
        given.update({k: v for k, v in layer.options.items() if k != "config"})
    env = given.get("env", presets.GENERIC_DEFAULTS["env"])
    algo = given.get("algo", presets.GENERIC_DEFAULTS["algo"])
    preset = presets.preset_for(env)

    values = dict(presets.GENERIC_DEFAULTS)
    hyperparameters: Dict[str, Any] = {}
    if preset is not None:
        values["env_config"] = {**preset.env_config, **preset.algo_env_config.get(algo, {})}
        values["model_config"] = dict(preset.model_config)
        if preset.num_envs_per_env_runner is not None:
            values["num_envs_per_env_runner"] = preset.num_envs_per_env_runner
        hyperparameters.update(preset.hyperparameters.get(algo, {}))
    # The stop conditions come as a group from the highest layer that sets any.
    stop_layer = next((l for l in reversed(layers) if any(k in l.options for k in STOP_KEYS)), None)
    stop = {k: v for k, v in stop_layer.options.items() if k in STOP_KEYS} if stop_layer else (
        dict(preset.stop) if preset is not None and preset.stop else dict(presets.GENERIC_STOP)
    )
    values.update({k: v for k, v in given.items() if k not in STOP_KEYS})
    values.update({k: None for k in STOP_KEYS})
    values.update(stop)
    values["env_config"] = dict(values["env_config"])
    values["model_config"] = dict(values["model_config"])
    for layer in layers:
        try:
            _check_hyperparameters(algo, layer.hyperparameters, layer.source)
        except UsageError as e:
            raise _from(layer.source, e) from None
        hyperparameters.update(layer.hyperparameters)
        for name, fields in layer.dotted.items():
            values[name].update(fields)
    if any("model_config" in layer.dotted for layer in layers):
        try:
            check_model_config(values["model_config"])
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"argument --model_config: {e}") from None
    if algo in VALUE_BASED_SETUPS:
        if "policy_setup" not in given:
            values["policy_setup"] = VALUE_BASED_SETUPS[algo]
        elif values["policy_setup"] == "shared-encoder" and algo != "sac":
            raise UsageError(f"argument --policy-setup: shared-encoder builds policy/value heads, but --algo {algo} "
                             "trains its own networks (Q-networks, or SAC's actor and critics); use --policy-setup "
                             "shared or per-agent")
    if values.get("eval_opponent") is not None and values["eval"] is None and not values["eval_interval"]:
        raise UsageError("argument --eval-opponent: during training it plays at every evaluation; give "
                         "--eval-interval N too (or --eval CHECKPOINT to evaluate a finished run)")
    if values["resume"] is not None and values["eval"] is not None:
        raise UsageError("argument --eval: not allowed with --resume (evaluate the run's checkpoint instead)")
    _check_seeds(values, layers[-1].options)
    return RunSpec(**values, hyperparameters=hyperparameters, config=config_file)


def _check_seeds(values: Dict[str, Any], command_line: Dict[str, Any]) -> None:
    """``--seeds`` starts new runs, one per seed: it cannot go with one --seed, --resume or --eval."""
    if values["seeds"] is None:
        if values["parallel"] > 1:
            raise UsageError("argument --parallel: runs several --seeds at once; give --seeds too (e.g. --seeds 0,1,2)")
        return
    for option in ("seed", "resume", "eval"):
        if command_line.get(option) is not None:
            raise UsageError(f"argument --seeds: not allowed with --{option} "
                             + ("(--seeds sets each run's seed)" if option == "seed" else
                                "(it starts one new run per seed; give --" + option + " one seed's run directory)"))


def parse_or_exit(argv: Optional[Sequence[str]]) -> RunSpec:
    """`resolve`, printing argparse-style usage errors and exiting with status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        build_parser().print_help()
        raise SystemExit(0)
    try:
        return resolve(argv)
    except UsageError as e:
        usage_error(str(e))
        raise AssertionError("unreachable")


def usage_error(message: str) -> None:
    """Print ``usage`` and ``run_marl.py: error: <message>`` to stderr and exit with status 2."""
    parser = build_parser(with_epilog=False)
    parser.print_usage(sys.stderr)
    sys.stderr.write(f"{parser.prog}: error: {message}\n")
    raise SystemExit(2)
