"""`python -m attnbench.study`: tune, extend the grid at its edges, confirm on fresh seeds, report (issue 27).

    cli.py        the command line, --dry-run's plan, the exit status
    plan.py       the tuning sweep read and checked before anything runs (the sweep precheck, --tune, seeds)
    grid.py       the grid's own step (log or linear) and the value past an edge
    choices.py    each variant's choice by the report's held-out rule; extension and confirmation overrides
    stages.py     Tune, Extend, Confirm: one recorded launch at a time
    launch.py     a launch as `python -m attnbench -m ... resume=true`; SLURM jobs still queued are waited for
    record.py     study.json, written atomically
    reporting.py  the Report stage (attnbench.report over every folder) and its Study section
"""
from .cli import main

__all__ = ["main"]
