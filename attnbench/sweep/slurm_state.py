"""SLURM job states for the launcher on the login node: squeue first, sacct for what squeue forgot.

submitit asks `sacct` only, and where accounting is disabled (no slurmdbd: the local test cluster,
some real clusters) it logs "Bypassing sacct error" on every poll and never learns that a job was
cancelled: a sweep with one `scancel`ed job would wait forever. squeue knows every job of the
queue, and finished ones for MinJobAge seconds (300 by default), which is all a launcher that
polls every few seconds needs; sacct is asked only about jobs that squeue no longer lists, and
its failure is said once.
"""
from __future__ import annotations

import logging
import subprocess
from typing import Iterable, Optional

log = logging.getLogger(__name__)

# A job in one of these states will still run, or run again (a requeued job goes through REQUEUED,
# a held one waits for `scontrol release`); every other state is an end (COMPLETED, CANCELLED, FAILED,
# TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED without requeue, BOOT_FAIL, DEADLINE, ...).
ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                    "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
# How each end becomes a row: stopped from outside (resumable) or failed.
INTERRUPTED = frozenset({"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"})


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


def _parse(text: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        jid, state = line.split("|", 1)
        if "." in jid:  # a job step (sacct): the job's own line says its state
            continue
        try:
            ids = expand(jid.strip())
        except Exception:  # an id format we do not know: skip it rather than guess
            continue
        for one in ids:
            states[one] = state.strip().split()[0] if state.strip() else "UNKNOWN"
    return states


class SlurmStates:
    """`query(job_ids)` -> {job id: state}; a job that neither squeue nor sacct knows is left out."""

    def __init__(self) -> None:
        self.sacct_works: Optional[bool] = None
        self.last_error: Optional[str] = None

    def query(self, job_ids: Iterable[str]) -> Optional[dict[str, str]]:
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

    def _squeue(self, roots: list[str]) -> Optional[dict[str, str]]:
        code, out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(roots)])
        if code == 0:
            self.last_error = None
            return _parse(out)
        if "Invalid job id" in out:  # squeue has forgotten a job, and then answers nothing for the others
            if len(roots) == 1:
                return {}
            states: dict[str, str] = {}
            for root in roots:
                one = self._squeue([root])
                if one is None:
                    return None
                states.update(one)
            return states
        if out != self.last_error:
            log.warning("squeue failed (%s); waiting", " ".join(out.split())[:200])
        self.last_error = out
        return None

    def _sacct(self, job_ids: list[str]) -> dict[str, str]:
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


def unfinished_row(res: dict) -> dict:
    """status and error for the summary row of a job whose results.json never got a final status:
    still `running` while SLURM runs (or will rerun) it, else `failed` with SLURM's state. Off SLURM
    (no slurm_job_id in results.json), the job died: `failed`."""
    error = res.get("error") or f"job ended with status {res.get('status')}"
    job_id = res.get("slurm_job_id")
    if not job_id:
        return {"status": "failed", "error": error}
    state = (SlurmStates().query([job_id]) or {}).get(job_id)
    if state in ACTIVE:
        return {"status": "running", "error": f"SLURM job {job_id} is {state}: not ended yet"}
    return {"status": "failed", "error": f"{error} (SLURM job {job_id}: {state or 'no longer known'})"}
