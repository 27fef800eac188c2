"""The comparison report: `python -m attnbench.report PATH [PATH ...]`.

    runs.py       job discovery (also the sweep summary's): every job under the paths, labelled
    variants.py   grouping into variants (minus replicate and tuned keys), tuning, baseline comparison
    stats.py      t confidence intervals, paired and Welch differences, verdicts
    format.py     the cell formatters and table renderers
    tables.py     results.csv / bench.csv rows
    markdown.py   report.md
    plots.py      the PNG plots
    curves.py     mean training curves with 95% CI bands, in numpy, one variant's histories at a time
    build.py      collect -> variants -> tables -> plots -> report.md
    wandb_run.py  the optional W&B report run
    dashboard*.py the optional W&B workspace view and report (--wandb-dashboard, --push)
    console.py    the plain-text rendering the CLI prints after a job
    cli.py        argument parsing
"""
from ..bench.modes import BENCH_MODES
from .build import PLOTS, Report, build_report, make_plots
from .cli import main
from .runs import Run, collect, find_jobs, find_results, largest_ok, name_runs
from .tables import bench_rows, csv_row, write_csv
from .variants import Comparison, Variant, group, variant_rows

__all__ = ["BENCH_MODES", "PLOTS", "Comparison", "Report", "Run", "Variant", "bench_rows", "build_report", "collect",
           "csv_row", "find_jobs", "find_results", "group", "largest_ok", "main", "make_plots", "name_runs",
           "variant_rows", "write_csv"]
