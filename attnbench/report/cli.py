"""`python -m attnbench.report PATH [PATH ...]`: every results.json under the paths → a comparison report.

Writes into `--out` (default `<first PATH>/report/`): `report.md` (one table row per
run), `results.csv` (the same runs, machine-readable, every figure), `bench.csv` (every
bench row of every run) and PNG plots (see plots.py). Failed jobs are rows with their
status and error; plots skip what they lack. `--wandb` also logs the table and the
plots to one W&B "report" run in the sweep's group (offline unless told otherwise).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from .build import build_report

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.report",
                                     description="Compare attnbench runs: report.md, results.csv and PNG plots.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run or sweep directories (searched recursively for results.json)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first PATH>/report)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to a W&B report run")
    parser.add_argument("--wandb-mode", choices=("offline", "online", "disabled"),
                        help="default: $WANDB_MODE, else offline")
    parser.add_argument("--wandb-project", help="default: the runs' logger.project")
    parser.add_argument("--wandb-entity", help="default: the runs' logger.entity")
    parser.add_argument("--wandb-timeout", type=float, default=30.0, help="bound on W&B init and finish (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="attnbench report: %(levelname)s: %(message)s")
    try:
        rep = build_report(args.paths, args.out)
    except FileNotFoundError as exc:
        print(f"attnbench report: error: {exc}", file=sys.stderr)
        return 2
    status = Counter(str(r.res.get("status")) for r in rep.runs)
    print(f"{len(rep.runs)} runs ({', '.join(f'{n} {s}' for s, n in status.items())})")
    for path in [*rep.files.values(), *rep.images.values()]:
        print(f"wrote {path}")
    if args.wandb:
        from .wandb_run import log_report

        where = log_report(rep, args.paths, args.out or Path(args.paths[0]) / "report", mode=args.wandb_mode,
                           project=args.wandb_project, entity=args.wandb_entity, timeout_s=args.wandb_timeout)
        print(f"W&B report run: {where}" if where else "W&B report run: not logged (see the warning above)")
    return 0

