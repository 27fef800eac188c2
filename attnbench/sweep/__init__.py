"""Sweeps (Hydra multirun): the callback that records failures and writes the summary, resume, and
`python -m attnbench.sweep SWEEP_DIR`.

    callback.py  SweepCallback (conf/config.yaml: hydra.callbacks.sweep), exit status, resume command
    summary.py   summary.csv / summary.md and the table printed at the end of a sweep
    precheck.py  every job composed and validated before anything launches (`check_sweep_overrides`)
"""
from .callback import SweepCallback, exit_code, main, record_failure, resume_command
from .precheck import check_sweep_overrides

__all__ = ["SweepCallback", "check_sweep_overrides", "exit_code", "main", "record_failure", "resume_command"]
