#!/usr/bin/env python
"""Learning curves of several runs on one figure.

    python scripts/plot.py runs/run-a runs/run-b --out curves.png
    python scripts/plot.py runs/sweeps/ppo_simple_spread_setups_seeds-*/ --out setups.png
    python scripts/plot.py runs/* --group-by policy_setup --band std
    python scripts/plot.py runs/* --metric learners/agent_0/entropy

Arguments are run directories (with metrics.jsonl) or directories holding runs
(a sweep directory, runs/). By default runs whose config.yaml differ only in
the seed (and other bookkeeping options) form one group, drawn as the mean
over its runs with a min-max band; ``--group-by KEY`` groups by one config key
instead (an option, a hyperparameter, or a dotted field like env_config.N).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from scripts.experiment import plotting  # noqa: E402
from scripts.experiment.run_dir import RETURN_KEY, STEP_KEY  # noqa: E402


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
    parser.add_argument("--out", default="learning_curves.png", metavar="PNG",
                        help="output image path (default: learning_curves.png)")
    parser.add_argument("--title", default=None)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Draw the figure; returns ``{"out", "groups"}`` (``groups``: label -> run directories)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run_dirs = plotting.find_runs(args.runs)
    except FileNotFoundError as e:
        parser.error(f"argument RUN_DIR: {e}")
    runs = [plotting.load_run(p) for p in run_dirs]
    groups = plotting.group_runs(runs, args.group_by)
    try:
        out = plotting.plot_groups(groups, Path(args.out), metric=args.metric, x=args.x, band=args.band,
                                   title=args.title)
    except ValueError as e:
        parser.error(f"argument --metric: {e}")
    for label, members in groups.items():
        print(f"{label}: {len(members)} run(s): {', '.join(str(m.path) for m in members)}")
    print(f"wrote {out}")
    return {"out": out, "groups": {label: [m.path for m in members] for label, members in groups.items()}}


if __name__ == "__main__":
    main()
