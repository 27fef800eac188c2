"""Build the report: collect the runs under the paths, write the CSVs, the plots and report.md."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from . import plots
from .markdown import write_markdown
from .runs import Run, collect, name_runs
from .tables import bench_rows, csv_row, write_csv

log = logging.getLogger(__name__)

PLOTS = {"latency": "latency_vs_seq_len.png", "memory": "memory_vs_seq_len.png", "training": "training_curves.png",
         "extrapolation": "val_loss_vs_len.png", "pareto": "quality_vs_throughput.png"}


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


