"""`python -m attnbench.report PATH [PATH ...]`: every results.json under the paths → a comparison report.

Writes into `--out` (default `<first PATH>/report/`): `report.md` (one table row per
run), `results.csv` (the same runs, machine-readable, every figure), `bench.csv` (every
bench row of every run) and PNG plots (see plots.py). Failed jobs are rows with their
status and error; plots skip what they lack. `--wandb` also logs the table and the
plots to one W&B "report" run in the sweep's group (offline unless told otherwise).
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from . import plots
from .report_md import write_markdown
from .report_runs import Run, collect, find_results, largest_ok, name_runs  # noqa: F401 (public API)

log = logging.getLogger(__name__)

BENCH_MODES = ("forward", "train_step", "prefill", "decode")
PLOTS = {"latency": "latency_vs_seq_len.png", "memory": "memory_vs_seq_len.png", "training": "training_curves.png",
         "extrapolation": "val_loss_vs_len.png", "pareto": "quality_vs_throughput.png"}


def csv_row(run: Run) -> dict[str, Any]:
    """Every figure of a run as flat CSV columns (units in the names)."""
    res, m, env, tr = run.res, run.res.get("model") or {}, run.res.get("env") or {}, run.train
    row: dict[str, Any] = {"label": run.label, "variant": run.variant, "distinguishing_overrides": run.distinct,
                           "status": res.get("status"), "error": res.get("error"),
                           "overrides": " ".join(run.overrides), "run_dir": str(run.dir)}
    row.update({k: m.get(k) for k in ("params", "non_embedding_params", "flops_per_token_fwd",
                                      "flops_per_token_train", "kv_cache_bytes_per_token")})
    for mode in BENCH_MODES:
        pt = largest_ok(res.get("bench"), mode) or {}
        for k in ("seq_len", "median_ms", "p10_ms", "p90_ms", "tokens_per_s", "peak_mem_bytes", "mfu"):
            row[f"{mode}_{k}"] = pt.get(k)
    row["bench_points_not_ok"] = sum(1 for r in res.get("bench") or [] if r.get("status") != "ok")
    for k in ("status", "steps", "tokens", "wall_s", "tokens_per_s", "train_loss", "val_loss", "metric_name", "metric"):
        row[f"train_{k}" if k in ("status", "steps", "tokens", "wall_s", "tokens_per_s") else k] = tr.get(k)
    for t, v in sorted((tr.get("val_loss_by_len") or {}).items(), key=lambda kv: int(kv[0])):
        row[f"val_loss_T{t}"] = v
    row.update({f"env_{k}": env.get(k) for k in ("device", "device_name", "torch", "threads", "dtype")})
    return row


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return path


def bench_rows(runs: list[Run]) -> list[dict]:
    return [{"label": r.label, "variant": r.variant, **row} for r in runs for row in r.res.get("bench") or []]


# ----------------------------------------------------------------------------- the report
@dataclass
class Report:
    runs: list
    files: dict  # name -> Path
    images: dict  # plot key -> Path


def make_plots(runs: list[Run], out: Path, common: str) -> dict[str, Path]:
    series = [plots.Series(label=r.short, bench=r.res.get("bench") or [], curve=r.curve, train=r.train,
                           train_len=((r.res.get("config") or {}).get("train") or {}).get("seq_len")) for r in runs]
    plots.assign_colors(series)
    envs = {f"{e.get('device')} {e.get('device_name')}, {e.get('dtype')}" for r in runs if (e := r.res.get("env"))}
    where = f" on {envs.pop()}" if len(envs) == 1 else ""
    suffix = f"\n{common}" if common else ""
    made = {
        "latency": plots.bench_vs_seq_len(series, out / PLOTS["latency"], "median_ms",
                                          f"latency vs sequence length{where}{suffix}"),
        "memory": plots.bench_vs_seq_len(series, out / PLOTS["memory"], "peak_mem_bytes",
                                         f"peak memory vs sequence length{where}{suffix}"),
        "training": plots.training_curves(series, out / PLOTS["training"], f"training{suffix}"),
        "extrapolation": plots.val_loss_by_len(series, out / PLOTS["extrapolation"],
                                               f"validation loss vs evaluation length{suffix}"),
        "pareto": plots.quality_vs_throughput(series, out / PLOTS["pareto"],
                                              f"quality vs throughput (outlined: Pareto front){where}{suffix}"),
    }
    return {k: v for k, v in made.items() if v is not None}


def build_report(paths: Sequence[Path], out: Optional[Path] = None) -> Report:
    """Collect the runs under `paths` and write the report files into `out` (default <paths[0]>/report)."""
    paths = [Path(p) for p in paths]
    runs = collect(paths)
    common = name_runs(runs)
    out = Path(out) if out is not None else paths[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = {"results.csv": write_csv(out / "results.csv", [csv_row(r) for r in runs])}
    if rows := bench_rows(runs):
        files["bench.csv"] = write_csv(out / "bench.csv", rows)
    images = make_plots(runs, out, common)
    files["report.md"] = write_markdown(out / "report.md", runs, paths, images)
    log.info("report: %d runs -> %s", len(runs), out)
    return Report(runs=runs, files=files, images=images)


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
        from .report_wandb import log_report

        where = log_report(rep, args.paths, args.out or Path(args.paths[0]) / "report", mode=args.wandb_mode,
                           project=args.wandb_project, entity=args.wandb_entity, timeout_s=args.wandb_timeout)
        print(f"W&B report run: {where}" if where else "W&B report run: not logged (see the warning above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
