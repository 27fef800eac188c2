"""Sweeps (Hydra multirun): the callback that records failures and writes the summary, resume, and
`python -m attnbench.sweep SWEEP_DIR`.

    callback.py  SweepCallback (conf/config.yaml: hydra.callbacks.sweep), exit status, resume command
    summary.py   summary.csv / summary.md and the table printed at the end of a sweep
"""
from .callback import SweepCallback, check_sweep_overrides, exit_code, main, record_failure, resume_command

__all__ = ["SweepCallback", "check_sweep_overrides", "exit_code", "main", "record_failure", "resume_command"]
