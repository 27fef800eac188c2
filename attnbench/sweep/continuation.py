"""Continuing a SLURM job after a preemption or its time limit (the job's side; docs/sweeps.md).

A job stopped by SLURM checkpoints (train/interrupt.py, train/loop.py) and ends its attempt
`interrupted` with the signal in results.json (`stopped_by`). Then `after_attempt` decides:
- SIGTERM while SLURM requeues the job (`scontrol requeue`, a preemptible partition; seen as the
  job's `Restarts` counter having moved past this attempt's SLURM_RESTART_COUNT): "preempted".
  SLURM starts it again by itself. Preempted during the partition's GraceTime (`PreemptTime` set,
  or an `EndTime` earlier than the time limit gives), or a SIGTERM that `scontrol show job` cannot
  explain: "preempted" too, and the job requeues itself (slurm_state.classify_stop says why);
- SIGUSR1 (sbatch --signal, sent signal_delay_s before the time limit) with SLURM not requeueing:
  "timeout". The job requeues itself (`scontrol requeue`, as submitit and Lightning do);
- any other stop (scancel, Ctrl-C, a SIGTERM at the hard limit): the attempt is the job's end.
A continued attempt (same SLURM job, `is_continuation`) resumes training from checkpoint.pt and
keeps a finished bench (job.py). Each kind is bounded (hydra.launcher.max_num_timeout,
max_num_requeue); past the bound the job ends `interrupted` with the reason and the count.

The attempts are recorded in <run dir>/continuations.json, keyed by the SLURM job id: a new
sweep into the same directory (new job ids) starts afresh, and a copy of the run directory on a
laptop is never mistaken for a continuation.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..track.results import read_results, write_json_atomic, write_results
from .slurm_state import Stop, classify_stop

log = logging.getLogger(__name__)

STATE_NAME = "continuations.json"
# The bounded waits between the pre-timeout signal and the time limit (docs/sweeps.md, "Signal timing"):
SCONTROL_SHOW_TIMEOUT_S = 30  # `scontrol show job` (classify)
REQUEUE_TIMEOUT_S = 60  # `scontrol requeue` (a time limit)
# ... and an allowance for the step in progress and the checkpoint save, which depend on the model:
# conf/hydra/launcher/slurm_gpu.yaml's signal_delay_s is at least their sum plus W&B's close.
STEP_AND_CHECKPOINT_S = 90
LIMIT_KEYS = {"timeout": "max_num_timeout", "preempted": "max_num_requeue"}
CONTINUE, FINISH = "continue", "finish"


@dataclass(frozen=True)
class Limits:
    """How many times a job may continue after each kind of stop (hydra.launcher.*)."""

    max_num_timeout: int = 3
    max_num_requeue: int = 3

    def of(self, kind: str) -> int:
        return int(getattr(self, LIMIT_KEYS[kind]))


# ----------------------------------------------------------------------------- this attempt
def slurm_job_id() -> Optional[str]:
    """The id squeue shows: `<array job>_<task>` for a job array's task, else the job id; None off SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def restart_count() -> int:
    """SLURM_RESTART_COUNT: how often SLURM has started this job again (requeue, node failure)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def read_state(run_dir: Path) -> dict:
    """This run directory's continuation record, if it belongs to the current SLURM job (else empty)."""
    state = read_results(Path(run_dir) / STATE_NAME)
    if not isinstance(state, dict) or state.get("slurm_job_id") != slurm_job_id() or slurm_job_id() is None:
        return {}
    return state


def is_continuation(run_dir: Path) -> bool:
    """True when this process continues an earlier attempt of the same SLURM job: it then resumes from
    the checkpoint. A job that SLURM restarted without a record (killed outright, node failure) too,
    once that job had started here (its results.json names it): a new launch's job that SLURM restarts
    before it wrote anything finds an earlier launch's files, and starts afresh."""
    if slurm_job_id() is None:
        return False
    if read_state(run_dir).get("events"):
        return True
    res = read_results(Path(run_dir) / "results.json")
    return restart_count() > 0 and isinstance(res, dict) and res.get("slurm_job_id") == slurm_job_id()


def counts(state: dict) -> dict:
    out = {kind: 0 for kind in LIMIT_KEYS}
    for ev in state.get("events", []):
        out[ev["reason"]] = out.get(ev["reason"], 0) + 1
    return out


# ----------------------------------------------------------------------------- SLURM's view
def scontrol_job(job_id: str) -> dict:
    """`scontrol show job -o` as a dict (JobState, Restarts, ...); empty when scontrol fails."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                             timeout=SCONTROL_SHOW_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("scontrol show job %s failed: %s", job_id, exc)
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0])) if out.strip() else {}


def classify(stopped_by: Optional[str], job_id: str) -> Stop:
    """"preempted" (SLURM requeues it, or it was preempted in its grace time), "timeout" (the pre-timeout
    signal) or None, and whether the job requeues itself (slurm_state.classify_stop)."""
    return classify_stop(stopped_by, scontrol_job(job_id), restart_count())


def requeue(job_id: str) -> Optional[str]:
    """`scontrol requeue JOB`: SLURM stops this attempt and starts the job again. The error, or None."""
    try:
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True,
                           timeout=REQUEUE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if r.returncode == 0 else " ".join((r.stderr or r.stdout or f"exit {r.returncode}").split())


# ----------------------------------------------------------------------------- the decision
# The attempt this process runs under attnbench's SLURM launcher: its bounds, and the decision once made.
# The job decides as soon as its results.json is final (job.py, `decide_now`), before closing W&B, which
# can take 2 x logger.finish_timeout_s: a time limit's requeue must not wait for it (docs/sweeps.md).
_ATTEMPT: dict = {}


def open_attempt(limits: Limits) -> None:
    """Called by the launcher before the job runs: the job will decide with these bounds."""
    _ATTEMPT.clear()
    _ATTEMPT["limits"] = limits


def decide_now(run_dir: Path) -> Optional[str]:
    """`after_attempt` once per attempt (CONTINUE or FINISH); None outside attnbench's SLURM launcher."""
    if "limits" not in _ATTEMPT:
        return None
    if "decision" not in _ATTEMPT:
        _ATTEMPT["decision"] = after_attempt(run_dir, _ATTEMPT["limits"])
    return _ATTEMPT["decision"]


def begin_attempt(run_dir: Path) -> Optional[dict]:
    """Called before an attempt runs. A job that already ended at its limit, and that SLURM started
    again anyway (a preemption requeues it whatever the job decided), returns its final results
    instead of training again. A fresh job forgets an earlier sweep's record."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if not state:
        (run_dir / STATE_NAME).unlink(missing_ok=True)
        return None
    if state.get("final"):
        res = read_results(run_dir / "results.json")
        return res if isinstance(res, dict) else None
    return None


def after_attempt(run_dir: Path, limits: Limits) -> str:
    """CONTINUE (exit without a result: SLURM starts the job again) or FINISH (the job has ended)."""
    run_dir, job_id = Path(run_dir), slurm_job_id()
    res = read_results(run_dir / "results.json")
    if job_id is None or not isinstance(res, dict) or res.get("status") != "interrupted":
        return FINISH
    stopped_by = res.get("stopped_by") or (res.get("train") or {}).get("stopped_by")
    stop = classify(stopped_by, job_id)
    kind, state = stop.kind, stop.state
    record = read_state(run_dir) or {"slurm_job_id": job_id, "events": []}
    step = (res.get("train") or {}).get("steps")
    where = f"at step {step}" if step is not None else "before training finished"
    if kind is None:
        if stopped_by == "SIGTERM":  # scancel, or the hard time limit after an ignored SIGUSR1
            return _save(run_dir, res, record, f"stopped by SLURM {where} (SIGTERM; job {job_id} not requeued: "
                         "cancelled, or at its time limit); re-run the sweep with the command below "
                         "to continue from the checkpoint", FINISH)
        return FINISH
    n, limit = counts(record)[kind] + 1, limits.of(kind)
    record["events"].append({"reason": kind, "signal": stopped_by, "step": step, "slurm_state": state,
                             "why": stop.why, "restart": restart_count(),
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if n > limit:
        record["final"] = True
        error = (f"{kind} ({stopped_by}) {n} time{'s' * (n > 1)}, more than hydra.launcher.{LIMIT_KEYS[kind]}={limit} allows: stopped {where}; "
                 "re-run the sweep with the command below to continue from the checkpoint")
        return _save(run_dir, res, record, error, FINISH)
    error = f"{kind} {where} ({stopped_by}); SLURM runs it again from the checkpoint (continuation {n} of {limit})"
    _save(run_dir, res, record, error, CONTINUE)  # before the requeue: SLURM then ends this attempt soon
    if stop.requeue_self and (err := requeue(job_id)):
        record["final"] = True
        return _save(run_dir, res, record, f"{kind} {where} ({stop.why}): scontrol requeue {job_id} failed ({err}); "
                     "re-run the sweep with the command below to continue from the checkpoint", FINISH)
    return CONTINUE


def _save(run_dir: Path, res: dict, record: dict, error: str, decision: str) -> str:
    write_json_atomic(run_dir / STATE_NAME, record)
    res["error"] = error
    res["continuations"] = {**counts(record), "events": record["events"]}
    write_results(run_dir, res)
    (log.warning if decision == CONTINUE else log.error)("%s", error)
    return decision
