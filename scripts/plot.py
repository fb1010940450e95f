#!/usr/bin/env python
"""Learning curves of several runs on one figure.

    python scripts/plot.py runs/<group>/ --band std --smooth 5 --out seeds.png   # a --seeds group
    python scripts/plot.py runs/<group>/ --per-agent --out agents.png
    python scripts/plot.py runs/run-a runs/run-b --out curves.png
    python scripts/plot.py runs/sweeps/ppo_simple_spread_setups_seeds-*/ --out setups.png
    python scripts/plot.py runs/* --group-by policy_setup --band std
    python scripts/plot.py runs/* --metric learners/agent_0/entropy

Arguments are run directories (with metrics.jsonl) or directories holding runs
(a --seeds group directory, a sweep directory, runs/). By default runs whose
config.yaml differ only in the seed (and other bookkeeping options) form one
group, drawn as the mean over its runs with a min-max band (--band std: mean
+- one std); --group-by KEY groups by one config key instead (an option, a
hyperparameter, or a dotted field like env_config.N). --smooth N averages each
run over N iterations first; --per-agent adds each agent's return (dashed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from marl.experiment import plotting  # noqa: E402
from marl.experiment.run_dir import RETURN_KEY, STEP_KEY  # noqa: E402


def _window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (iterations), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
        allow_abbrev=False,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or directories of runs")
    parser.add_argument("--metric", default=RETURN_KEY, help=f"y-axis metric (default: {RETURN_KEY})")
    parser.add_argument("--x", default=STEP_KEY, help=f"x-axis metric (default: {STEP_KEY})")
    parser.add_argument("--group-by", default=None, metavar="KEY",
                        help="config key to group runs by (default: runs equal except for the seed form a group)")
    parser.add_argument("--band", choices=plotting.BANDS, default="minmax",
                        help="spread drawn around a group's mean (default: minmax)")
    parser.add_argument("--smooth", type=_window, default=1, metavar="N",
                        help="moving average over N iterations, per run, before the mean (default: 1, none)")
    parser.add_argument("--per-agent", action="store_true",
                        help="also draw each agent's return (the per-agent keys of a return metric), dashed")
    parser.add_argument("--out", default="learning_curves.png", metavar="PNG",
                        help="output image path (default: learning_curves.png)")
    parser.add_argument("--title", default=None)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Draw the figure; returns ``{"out", "groups", "figure"}`` (``groups``: label -> run
    directories; ``figure``: the matplotlib figure, closed, for a caller to inspect)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run_dirs = plotting.find_runs(args.runs)
    except FileNotFoundError as e:
        parser.error(f"argument RUN_DIR: {e}")
    runs = [plotting.load_run(p) for p in run_dirs]
    groups = plotting.group_runs(runs, args.group_by)
    try:
        figure = plotting.draw_groups(groups, metric=args.metric, x=args.x, band=args.band, title=args.title,
                                      smoothing=args.smooth, per_agent=args.per_agent)
    except plotting.PlotError as e:
        parser.error(f"argument {e.argument}: {e}")
    out = plotting.save_figure(figure, Path(args.out))
    for label, members in groups.items():
        print(f"{label}: {len(members)} run(s): {', '.join(str(m.path) for m in members)}")
    print(f"wrote {out}")
    return {"out": out, "groups": {label: [m.path for m in members] for label, members in groups.items()},
            "figure": figure}


if __name__ == "__main__":
    main()
