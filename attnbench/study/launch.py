"""Launching one multirun of a study, and picking up a SLURM launch whose launcher is gone.

Each launch is `python -m attnbench -m <overrides> hydra.sweep.dir=<dir> resume=true` in a child
process: the same entry point, precheck, launcher plugins and sweep callback as a person's own
`-m` command, so every launcher (basic, joblib, submitit_local, SLURM) behaves exactly as it does
there, and `resume=true` is the project's rule for a re-run: a job with an ok result for the same
config is skipped (job.py already_done), every other job runs again.

On SLURM the jobs outlive the launcher (a lost login session kills it, not them). Before a launch
into a folder that was launched before, the study asks SLURM (sweep/slurm_state.py, squeue first,
then sacct) about the job ids that submitit left in `<dir>/.submitit/<job id>/` and waits while any
is still queued or running, instead of submitting them again. Once every job of the folder has ended
(ok, or a final failure such as diverged or oom), the folder is done without another launch.
"""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..track.launch import sweep_launch

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str], Path], int]  # (overrides, sweep dir) -> the multirun's exit status
JOB_ID = re.compile(r"\d+(_\d+)?")


def multirun(overrides: Sequence[str], sweep_dir: Path) -> int:
    """Run the multirun in a child process and return its exit status (0 all ok, 1 some job not ok,
    2 refused before launching). Ctrl-C reaches the child as it does under `-m` (same process group): the
    running job finishes its step, checkpoints and records `interrupted`; the study waits for the child
    to end, so a second Ctrl-C, which stops the child at once, is also what stops the study at once."""
    cmd = [sys.executable, "-m", "attnbench", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}", "resume=true"]
    log.info("launching: %s", " ".join(cmd[1:]))
    child = subprocess.Popen(cmd)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.wait()
        raise


def slurm_ids(sweep_dir: Path) -> list[str]:
    """The SLURM job ids submitit used for this folder (its job folders: `.submitit/<job id>`)."""
    base = Path(sweep_dir) / ".submitit"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and JOB_ID.fullmatch(p.name))


def queued(sweep_dir: Path) -> Optional[list[str]]:
    """The folder's SLURM jobs that are still queued or running; None when SLURM cannot be asked now."""
    from ..sweep.slurm_state import SlurmStates

    ids = slurm_ids(sweep_dir)
    if not ids:
        return []
    states = SlurmStates().query(ids)
    if states is None:
        return None
    return [j for j in ids if (state := states.get(j)) is not None and state.active]


def wait_for_queue(sweep_dir: Path, poll_s: float, say: Callable[[str], None]) -> None:
    """Wait while jobs of an earlier launch into `sweep_dir` are still in the SLURM queue."""
    said = False
    while (ids := queued(sweep_dir)) != []:
        if not said:
            what = f"{len(ids)} SLURM jobs ({', '.join(ids[:4])}{', ...' if len(ids) > 4 else ''})" \
                if ids is not None else "SLURM (squeue does not answer)"
            say(f"{sweep_dir}: waiting for {what} of an earlier launch instead of launching them again")
            said = True
        time.sleep(poll_s)


def launch_ids(sweep_dir: Path, slurm: bool) -> dict:
    """The launch record of the folder's latest launch (track/launch.py) and, on SLURM, its job ids."""
    out: dict = {"launch_id": sweep_launch(sweep_dir)}
    if slurm:
        out["slurm_jobs"] = slurm_ids(sweep_dir)
    return out


def unfinished(sweep_dir: Path, jobs: int) -> Optional[str]:
    """None when the latest launch into `sweep_dir` has all `jobs` jobs ended for good (ok, diverged,
    oom, failed), else what is missing ("2 of 6 jobs have no final result")."""
    from ..report.runs import MISSING
    from ..sweep.summary import collect_job_set
    from ..track.results import FINAL_STATUSES

    if not Path(sweep_dir).is_dir():
        return f"0 of {jobs} jobs ran"
    _, rows = collect_job_set(Path(sweep_dir))
    final = [r for r in rows if r["status"] in FINAL_STATUSES and r["status"] != "interrupted"
             and r["error"] != MISSING]
    if len(final) >= jobs:
        return None
    return f"{jobs - len(final)} of {jobs} jobs have no final result"


__all__ = ["Runner", "launch_ids", "multirun", "queued", "slurm_ids", "unfinished", "wait_for_queue"]
