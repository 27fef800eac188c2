"""Launch records: which launch of a sweep directory last started each job.

A sweep can be launched into the same directory again (resume, a smaller grid), and a
sweep directory is copied around (`cp -r`, `rsync`, `scp -r`), which does not always keep
file times. So membership of a launch is recorded in the files, never read from their times:

    <sweep dir>/launch.json          {"launch_id", "started", "launcher"}: written by the launching process
                                     before any job starts (SweepCallback.on_multirun_start), replaced by
                                     each launch; `launcher`: the launching process (host, pid)
    <sweep dir>/launch_jobs.json     {"launch_id", "jobs", "slurm_job_ids"}: every job of that launch
                                     (number, directory, overrides), written just before launch.json, and
                                     the SLURM id of each job once the SLURM launcher submitted it
    <job dir>/.hydra/launch.json     {"launch_id", "started", "config_hash", "resume"}: written by the job
                                     when it starts (SweepCallback.on_job_start), also when resume=true
                                     reuses its result, and by the SLURM launcher for a job SLURM ended
                                     before it started
    <job dir>/results.json           `launch_id`: the launch that wrote this result

The id itself is the config key `launch_id` (conf/config.yaml: `${launch_id:}`, a cached
resolver in config/naming.py): Hydra copies the launching config's resolver cache into every
job's config (`load_sweep_config`, also in submitit's pickles), so every job of one launch
resolves the same id, whatever the launcher.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .results import write_json_atomic

log = logging.getLogger(__name__)

SWEEP_RECORD = "launch.json"  # in the sweep directory, next to multirun.yaml
JOBS_RECORD = "launch_jobs.json"  # the latest launch's job list and SLURM ids, next to it
JOB_RECORD = Path(".hydra") / "launch.json"  # in each job directory

# Membership of a job in its sweep directory's launches (`membership`).
LATEST, EARLIER, UNKNOWN = "latest", "earlier", "unknown"


def record(launch_id: str) -> dict:
    return {"launch_id": launch_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_sweep_launch(sweep_dir: Path, launch_id: str, jobs: Optional[Sequence[Mapping]] = None,
                       launcher: Optional[Mapping] = None) -> None:
    """The launching process's record: this launch is the directory's latest. `jobs`: every job of the
    launch ({"num", "dir" relative to the sweep directory, "overrides"}), None when not known before
    the jobs run (a sweeper that picks them as it goes); `launcher`: this process (`this_process()`).
    The job list goes into its own file (JOBS_RECORD), written first: launch.json stays small, since
    every job's reader reads it (report/runs.py)."""
    if jobs is not None:
        write_json_atomic(Path(sweep_dir) / JOBS_RECORD, {"launch_id": launch_id, "jobs": [dict(j) for j in jobs]})
    rec: dict = record(launch_id)
    if launcher is not None:
        rec["launcher"] = dict(launcher)
    write_json_atomic(Path(sweep_dir) / SWEEP_RECORD, rec)


def record_submitted(sweep_dir: Path, launch_id: str, slurm_job_ids: Mapping[int, str]) -> None:
    """Add the SLURM id of each submitted job (by job number) to the launch's job list, if that is still
    `launch_id`'s: the summary asks SLURM about jobs that have not started yet by these ids."""
    path = Path(sweep_dir) / JOBS_RECORD
    rec = _read(path)
    if rec is None or rec.get("launch_id") != launch_id:
        log.warning("%s is not launch %s's job list; the SLURM ids are not recorded", path, launch_id)
        return
    ids = rec.get("slurm_job_ids") if isinstance(rec.get("slurm_job_ids"), dict) else {}
    rec["slurm_job_ids"] = {**ids, **{str(num): str(jid) for num, jid in slurm_job_ids.items()}}
    write_json_atomic(path, rec)


def write_job_launch(job_dir: Path, launch_id: str, config_hash: Optional[str] = None,
                     resume: Optional[bool] = None) -> None:
    """The job's record: the launch `launch_id` started this job, with the config hash it had and
    whether it may reuse an ok result of that hash (`resume=true`)."""
    rec: dict = record(launch_id)
    if config_hash is not None:
        rec["config_hash"] = config_hash
    if resume is not None:
        rec["resume"] = bool(resume)
    write_json_atomic(Path(job_dir) / JOB_RECORD, rec)


def _read(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_id(path: Path) -> Optional[str]:
    value = (_read(path) or {}).get("launch_id")
    return str(value) if value else None


def read_sweep_record(sweep_dir: Path) -> Optional[dict]:
    """The sweep directory's launch.json with its launch's job list and SLURM ids ("jobs",
    "slurm_job_ids", from JOBS_RECORD when that names the same launch), or None (absent, torn)."""
    rec = _read(Path(sweep_dir) / SWEEP_RECORD)
    jobs = _read(Path(sweep_dir) / JOBS_RECORD) if rec is not None else None
    if jobs is not None and jobs.get("launch_id") == rec.get("launch_id"):
        rec.update({k: jobs[k] for k in ("jobs", "slurm_job_ids") if k in jobs})
    return rec


def read_job_record(job_dir: Path) -> Optional[dict]:
    """The job directory's .hydra/launch.json, or None."""
    return _read(Path(job_dir) / JOB_RECORD)


# ----------------------------------------------------------------------------- the launching process
def _proc_stat(pid: int) -> Optional[list[str]]:
    """/proc/<pid>/stat after the process name (Linux): [state, ppid, ...]; None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces


def _start_ticks(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22), which tells a live launcher from
    another process that got its pid later."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def this_process() -> dict:
    """The launching process, as write_sweep_launch records it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": _start_ticks(pid)}


def launcher_alive(launcher: Optional[Mapping]) -> Optional[bool]:
    """Whether the launching process of a record still runs: True / False on its own host, None where
    it cannot be told (another host, no record). The asking process itself counts as ended: a
    launcher summarising its own launch does so after every job returned."""
    if not launcher or launcher.get("host") != socket.gethostname() or not launcher.get("pid"):
        return None
    pid = int(launcher["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return launcher.get("start_ticks") in (None, fields[19])


def sweep_launch(sweep_dir: Path) -> Optional[str]:
    """The latest launch id of a sweep directory, or None (no record: a sweep from before launch ids)."""
    return _read_id(Path(sweep_dir) / SWEEP_RECORD)


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / "multirun.yaml").is_file() or (Path(path) / SWEEP_RECORD).is_file()


def job_launch(job_dir: Path, results: Optional[dict] = None) -> Optional[str]:
    """The launch that last started a job: its own record, else the one its results.json names."""
    lid = _read_id(Path(job_dir) / JOB_RECORD)
    if lid is None and isinstance(results, dict):
        lid = results.get("launch_id") or (results.get("config") or {}).get("launch_id")
    return str(lid) if lid else None


@dataclass(frozen=True)
class Membership:
    """Where a job stands among its sweep directory's launches."""

    sweep_dir: Optional[Path]  # the nearest directory above it with multirun.yaml or launch.json
    sweep_launch: Optional[str]  # that directory's latest launch id (None: no record)
    job_launch: Optional[str]  # the launch that last started the job (None: no record)

    @property
    def state(self) -> Optional[str]:
        """None: not inside a sweep directory; LATEST / EARLIER; UNKNOWN when it cannot be told
        (a sweep or a job from before launch ids, or a job that died before writing any record)."""
        if self.sweep_dir is None:
            return None
        if self.sweep_launch is None or self.job_launch is None:
            return UNKNOWN
        return LATEST if self.job_launch == self.sweep_launch else EARLIER


__all__ = ["EARLIER", "JOBS_RECORD", "JOB_RECORD", "LATEST", "Membership", "SWEEP_RECORD", "UNKNOWN", "is_sweep_dir",
           "job_launch", "launcher_alive", "read_job_record", "read_sweep_record", "record", "record_submitted",
           "sweep_launch", "this_process", "write_job_launch", "write_sweep_launch"]
