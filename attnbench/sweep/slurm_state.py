"""SLURM job states for the launcher on the login node: squeue first, sacct for what squeue forgot.

submitit asks `sacct` only, and where accounting is disabled (no slurmdbd: the local test cluster,
some real clusters) it logs "Bypassing sacct error" on every poll and never learns that a job was
cancelled: a sweep with one `scancel`ed job would wait forever. squeue knows every job of the
queue, and finished ones for MinJobAge seconds (300 by default), which is all a launcher that
polls every few seconds needs; sacct is asked only about jobs that squeue no longer lists, and
its failure is said once. A pending job that waits for `scontrol release` is `held` (with squeue's
reason, `%r`), not running: it never ends by itself.

`classify_stop` is the job's side: why SLURM stopped this attempt (continuation.py acts on it).
"""
from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Optional

log = logging.getLogger(__name__)

# A job in one of these states will still run, or run again (a requeued job goes through REQUEUED,
# a held one waits for `scontrol release`); every other state is an end (COMPLETED, CANCELLED, FAILED,
# TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED without requeue, BOOT_FAIL, DEADLINE, ...).
ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                    "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
# How each end becomes a row: stopped from outside (resumable) or failed.
INTERRUPTED = frozenset({"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"})
# Waiting for `scontrol release`: these states, and PENDING with one of these reasons (squeue's %r as
# SLURM 22.05 writes it; scontrol writes the same with underscores: job_requeued_in_held_state).
# `scontrol requeuehold` shows as PENDING "job requeued in held state", `... State=SpecialExit` as SPECIAL_EXIT.
HELD_STATES = frozenset({"REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
HOLD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin", "JobHoldMaxRequeue", "job requeued in held state",
                          "launch failed requeued held"})


@dataclass(frozen=True)
class JobState:
    """One job as squeue (or sacct) lists it: its state and, from squeue, the reason (`%r`)."""

    state: str
    reason: str = ""

    @property
    def held(self) -> bool:
        """Waits for `scontrol release`: still in the queue, but it will not run by itself."""
        return self.state in HELD_STATES or (self.state == "PENDING" and self.reason.replace("_", " ") in HOLD_REASONS)

    @property
    def active(self) -> bool:
        """Will still run, or run again: not an end."""
        return self.state in ACTIVE

    @property
    def label(self) -> str:
        """What the launcher's log and the summary say: `held (JobHeldAdmin)`, `PENDING (Priority)`, `RUNNING`."""
        if self.held:
            return f"held ({self.reason or self.state})"
        return f"{self.state} ({self.reason})" if self.reason and self.reason != "None" else self.state


def row_status(state: str) -> str:
    """The results.json status of a job that SLURM ended without a result of its own."""
    state = state.split()[0].upper()  # sacct writes "CANCELLED by 0"
    if state == "OUT_OF_MEMORY":
        return "oom"
    return "interrupted" if state in INTERRUPTED else "failed"


def expand(job_id: str) -> list[str]:
    """squeue's ids as submitit names jobs: "12_[0-2,5]%4" -> 12_0 12_1 12_2 12_5; "12_3" and "12" as they are."""
    from submitit.slurm.slurm import read_job_id

    out = []
    for part in read_job_id(job_id):
        if len(part) == 3:
            out += [f"{part[0]}_{i}" for i in range(int(part[1]), int(part[2]) + 1)]
        else:
            out.append("_".join(part))
    return out


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return 1, str(exc)
    return r.returncode, r.stdout if r.returncode == 0 else (r.stderr or r.stdout)


def _parse(text: str) -> dict[str, JobState]:
    """`id|state[|reason]` lines (squeue -o '%i|%T|%r', sacct -P -o JobID,State)."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        jid, state, reason = (line.split("|", 2) + [""])[:3]
        if "." in jid:  # a job step (sacct): the job's own line says its state
            continue
        try:
            ids = expand(jid.strip())
        except Exception:  # an id format we do not know: skip it rather than guess
            continue
        one_state = JobState(state.strip().split()[0] if state.strip() else "UNKNOWN", reason.strip())
        for one in ids:
            states[one] = one_state
    return states


class SlurmStates:
    """`query(job_ids)` -> {job id: JobState}; a job that neither squeue nor sacct knows is left out."""

    def __init__(self) -> None:
        self.sacct_works: Optional[bool] = None
        self.last_error: Optional[str] = None
        self.failing_since: Optional[float] = None  # time.monotonic() of squeue's first failure in a row

    def query(self, job_ids: Iterable[str]) -> Optional[dict[str, JobState]]:
        """None when squeue cannot be asked (slurmctld busy or down): then nothing is known to have ended."""
        job_ids = list(job_ids)
        if not job_ids:
            return {}
        states = self._squeue(sorted({j.split("_")[0] for j in job_ids}))
        if states is None:
            return None
        missing = [j for j in job_ids if j not in states]
        if self.sacct_works is None:  # asked once, so the log says once where states come from
            self._sacct(job_ids)
        if missing and self.sacct_works:
            states.update(self._sacct(missing))
        return {j: states[j] for j in job_ids if j in states}

    def _squeue(self, roots: list[str]) -> Optional[dict[str, JobState]]:
        code, out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(roots)])
        if code == 0:
            self.last_error = self.failing_since = None
            return _parse(out)
        if "Invalid job id" in out:  # squeue has forgotten a job, and then answers nothing for the others
            if len(roots) == 1:
                return {}
            states: dict[str, JobState] = {}
            for root in roots:
                one = self._squeue([root])
                if one is None:
                    return None
                states.update(one)
            return states
        if out != self.last_error:
            log.warning("squeue failed (%s); waiting", " ".join(out.split())[:200])
        self.last_error = out
        self.failing_since = self.failing_since or time.monotonic()
        return None

    def _sacct(self, job_ids: list[str]) -> dict[str, JobState]:
        cmd = ["sacct", "-n", "-P", "-o", "JobID,State"]
        for root in sorted({j.split("_")[0] for j in job_ids}):
            cmd += ["-j", root]
        code, out = _run(cmd)
        if code != 0:
            if self.sacct_works is None:
                log.info("job states come from squeue: sacct failed (%s); a job that squeue has already "
                         "forgotten is reported as ended with state UNKNOWN", " ".join(out.split())[:200])
            self.sacct_works = False
            return {}
        if self.sacct_works is None:
            log.info("job states come from squeue, and from sacct once squeue has forgotten a job")
        self.sacct_works = True
        return _parse(out)


def held_error(job_id: str, state: JobState) -> str:
    """The row's error of a held job: SLURM's reason, and what lets it run."""
    return (f"SLURM job {job_id} is held ({state.reason or state.state}): it runs once released "
            f"(`scontrol release {job_id}`), or `scancel {job_id}` it")


# ----------------------------------------------------------------------------- the job's side
@dataclass(frozen=True)
class Stop:
    """Why SLURM stopped this attempt, as the job sees it from `scontrol show job` after its signal."""

    kind: Optional[str]  # "preempted", "timeout", or None: the attempt is the job's end
    state: str  # SLURM's JobState then
    requeue_self: bool = False  # the job must `scontrol requeue` itself: SLURM will not (soon enough)
    why: str = ""  # what showed it, for the log and results.json's continuation events


def classify_stop(stopped_by: Optional[str], info: dict[str, str], restarts_before: int) -> Stop:
    """Decide from `scontrol show job` (`info`; empty when scontrol failed) and the signal:
    - `Restarts` moved past this attempt's SLURM_RESTART_COUNT: SLURM has requeued the job (`scontrol
      requeue`, a preemption without grace time) and starts it again by itself;
    - still RUNNING, with `PreemptTime` set or an `EndTime` before StartTime + TimeLimit: preempted, in the
      partition's GraceTime. SLURM requeues only after GraceTime and KillWait, and a job that exits
      before then ends COMPLETED, never requeued (seen on SLURM 22.05): the job requeues itself;
    - a SIGTERM that scontrol cannot explain (it failed): taken as a preemption, the job requeues itself
      (if that fails too, the job ends). A scancel shows COMPLETING, a hard time limit TimeLimit;
    - SIGUSR1, the pre-timeout signal: the time limit; the job requeues itself."""
    state = info.get("JobState", "UNKNOWN")
    if not info and stopped_by == "SIGTERM":
        return Stop("preempted", state, True, "scontrol show job failed, so the SIGTERM is taken as a preemption")
    if _int(info.get("Restarts")) > restarts_before:
        return Stop("preempted", state, False, f"SLURM requeued it (Restarts={info.get('Restarts')})")
    grace = _in_grace(info) if state == "RUNNING" else ""
    if grace:
        return Stop("preempted", state, True, f"preempted in its grace time ({grace})")
    if stopped_by == "SIGUSR1":
        return Stop("timeout", state, True, "the pre-timeout signal")
    return Stop(None, state)


def _in_grace(info: dict[str, str]) -> str:
    """What shows that SLURM has chosen this running job for preemption, or ""."""
    if _when(info.get("PreemptTime")) is not None:
        return f"PreemptTime={info['PreemptTime']}"
    start, end, limit = _when(info.get("StartTime")), _when(info.get("EndTime")), _duration(info.get("TimeLimit"))
    if start and end and limit and end < start + limit - timedelta(seconds=1):
        return f"EndTime={info['EndTime']}, before StartTime+TimeLimit={(start + limit).isoformat()}"
    return ""


def _int(text: Optional[str]) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _when(text: Optional[str]) -> Optional[datetime]:
    """scontrol's times (2026-12-07T23:43:30); None for None, Unknown, N/A."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _duration(text: Optional[str]) -> Optional[timedelta]:
    """scontrol's TimeLimit ([days-]hours:minutes:seconds, or minutes:seconds); None for UNLIMITED."""
    if not text or not text[0].isdigit():
        return None
    days, _, clock = text.rpartition("-")
    try:
        parts = [int(x) for x in clock.split(":")]
        secs = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
        return timedelta(days=int(days or 0), seconds=secs)
    except ValueError:
        return None
