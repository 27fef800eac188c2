"""`python -m attnbench.report PATH [PATH ...]`: every results.json under the paths → a comparison report.

Writes into `--out` (default `<first PATH>/report/`): `report.md` (the variant table, then
one row per job while there are at most 30), `variants.csv` (one row per variant: n, mean,
std, 95% CI of every figure; the tuned value; the difference from the baseline and the
verdict), `results.csv` (one row per job, every figure), `bench.csv` (every bench row of
every run) and PNG plots, one series per variant (see plots.py). A variant is a job's
resolved config minus the `--replicates` keys and the `--tune` key (see variants.py).
Failed jobs are rows with their status and error, left out of the statistics and counted
as `n_failed`; plots skip what they lack. `--wandb` also logs the table and the
plots to one W&B "report" run in the sweep's group (offline unless told otherwise).
`--wandb-dashboard` (and `--push`) builds a W&B workspace view and report of the variants
(see dashboard.py and dashboard_save.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError
from ..track.wandb_rules import LOGGER_MODES
from .build import LEGEND_LIMIT, build_report
from .heldout import confirm_note
from .variants import edge_note

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.report",
                                     description="Compare attnbench runs: report.md, results.csv and PNG plots.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run or sweep directories (searched recursively for results.json)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first PATH>/report)")
    parser.add_argument("--replicates", nargs="+", default=["seed"], metavar="KEY",
                        help="config keys whose values are replicates of one variant (default: seed)")
    parser.add_argument("--tune", metavar="KEY",
                        help="config key tuned per variant (e.g. train.lr): each variant's value is chosen on the "
                             "replicates present at every value (best mean objective) and reported on held-out "
                             "replicates present only at that value; without them, on the same runs (flagged), "
                             "and the report prints the commands that run the held-out jobs")
    parser.add_argument("--objective", metavar="FIGURE",
                        help="results.csv figure that --tune and the verdict use (default: val_loss, lower is "
                             "better; `metric` follows metric_name: recall_acc higher, bpc lower)")
    parser.add_argument("--baseline", nargs="+", metavar="OVERRIDE",
                        help="the variant every other one is compared against, as overrides (e.g. attn=mha)")
    parser.add_argument("--legend-limit", type=int, default=LEGEND_LIMIT, metavar="K",
                        help=f"beyond K variants the plots label only the best K (default {LEGEND_LIMIT})")
    parser.add_argument("--all-launches", action="store_true",
                        help="also count the jobs of earlier launches into the same sweep directory (default: "
                             "the latest launch of each, the jobs the sweep summary counts)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to a W&B report run")
    parser.add_argument("--wandb-mode", choices=LOGGER_MODES,
                        help="default: $WANDB_MODE, else offline")
    parser.add_argument("--wandb-project", help="default: the runs' logger.project")
    parser.add_argument("--wandb-entity", help="default: the runs' logger.entity")
    parser.add_argument("--wandb-timeout", type=float, default=30.0,
                        help="bound on W&B init and finish, and on saving the dashboard (s)")
    parser.add_argument("--wandb-dashboard", action="store_true",
                        help="also build a W&B workspace view and a W&B report of the variants (wandb-workspaces): "
                             "written to <out>/wandb_workspace.json and wandb_report.json; saved to W&B when online "
                             "with credentials")
    parser.add_argument("--push", action="store_true",
                        help="save the dashboard to W&B now (after `wandb sync`; needs credentials, else exit 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="attnbench report: %(levelname)s: %(message)s")
    try:
        rep = build_report(args.paths, args.out, replicates=args.replicates, tune=args.tune,
                           objective=args.objective, baseline=args.baseline, legend_limit=args.legend_limit,
                           all_launches=args.all_launches)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"attnbench report: error: {exc}", file=sys.stderr)
        return 2
    status = Counter(str(r.res.get("status")) for r in rep.runs)
    print(f"{len(rep.runs)} runs ({', '.join(f'{n} {s}' for s, n in status.items())}), "
          f"{len(rep.comparison.variants)} variants")
    for note in rep.launch_notes:
        print(f"note: {note}")
    for note in rep.comparison.notes:  # what the variant table does not compare (lengths.py, heldout.py)
        print(f"note: {note}")
    if note := edge_note(rep.comparison):  # empty without --tune
        print(f"note: {note}")
    if note := confirm_note(rep.comparison):
        print(f"note: {note}")
        print("confirmation runs:\n" + "\n".join(f"  {c}" for c in rep.confirm))
    for path in [*rep.files.values(), *rep.images.values()]:
        print(f"wrote {path}")
    if args.wandb:
        from .wandb_run import log_report

        where = log_report(rep, args.paths, args.out or Path(args.paths[0]) / "report", mode=args.wandb_mode,
                           project=args.wandb_project, entity=args.wandb_entity, timeout_s=args.wandb_timeout)
        print(f"W&B report run: {where}" if where else "W&B report run: not logged (see the warning above)")
    if args.wandb_dashboard or args.push:
        from .dashboard_save import run_dashboard

        return run_dashboard(rep, args, list(sys.argv[1:] if argv is None else argv),
                             args.out or Path(args.paths[0]) / "report")
    return 0

