"""Sweeps (Hydra multirun): the callback that records failures and writes the summary, resume, and
`python -m attnbench.sweep SWEEP_DIR`.

    callback.py  SweepCallback (conf/config.yaml: hydra.callbacks.sweep), exit status, resume command
    summary.py   summary.csv / summary.md and the table printed at the end of a sweep
    jobs.py      every job of a launch and its status (`launch_jobs`: frozen LaunchJob rows)
    plan.py      the launch's job list, recorded before any job starts; the guard against a second launch
    precheck.py  every job composed and validated before anything launches (`check_sweep_overrides`)
"""
from .callback import SweepCallback, exit_code, main, record_failure, resume_command
from .jobs import LaunchJob, LaunchJobs, launch_jobs
from .precheck import check_sweep_overrides

__all__ = ["LaunchJob", "LaunchJobs", "SweepCallback", "check_sweep_overrides", "exit_code", "launch_jobs", "main",
           "record_failure", "resume_command"]
