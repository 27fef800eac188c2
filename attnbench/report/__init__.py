"""The comparison report: `python -m attnbench.report PATH [PATH ...]`.

    runs.py       job discovery: every results.json under the paths, labelled
    tables.py     results.csv / bench.csv rows
    markdown.py   report.md
    plots.py      the PNG plots
    build.py      collect -> tables -> plots -> report.md
    wandb_run.py  the optional W&B report run
    console.py    the plain-text rendering the CLI prints after a job
    cli.py        argument parsing
"""
from .build import PLOTS, Report, build_report, make_plots
from .cli import main
from .runs import Run, collect, find_results, largest_ok, name_runs
from .tables import BENCH_MODES, bench_rows, csv_row, write_csv

__all__ = ["BENCH_MODES", "PLOTS", "Report", "Run", "bench_rows", "build_report", "collect", "csv_row", "find_results",
           "largest_ok", "main", "make_plots", "name_runs", "write_csv"]
