"""Launch records: which launch of a sweep directory last started each job.

A sweep can be launched into the same directory again (resume, a smaller grid), and a
sweep directory is copied around (`cp -r`, `rsync`, `scp -r`), which does not always keep
file times. So membership of a launch is recorded in the files, never read from their times:

    <sweep dir>/launch.json          {"launch_id", "started"}: written by the launching process
                                     (SweepCallback.on_multirun_start), replaced by each launch
    <job dir>/.hydra/launch.json     the same record, written by the job when it starts
                                     (SweepCallback.on_job_start), also when resume=true reuses its result
    <job dir>/results.json           `launch_id`: the launch that wrote this result

The id itself is the config key `launch_id` (conf/config.yaml: `${launch_id:}`, a cached
resolver in config/naming.py): Hydra copies the launching config's resolver cache into every
job's config (`load_sweep_config`, also in submitit's pickles), so every job of one launch
resolves the same id, whatever the launcher.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .results import write_json_atomic

log = logging.getLogger(__name__)

SWEEP_RECORD = "launch.json"  # in the sweep directory, next to multirun.yaml
JOB_RECORD = Path(".hydra") / "launch.json"  # in each job directory

# Membership of a job in its sweep directory's launches (`membership`).
LATEST, EARLIER, UNKNOWN = "latest", "earlier", "unknown"


def record(launch_id: str) -> dict:
    return {"launch_id": launch_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_sweep_launch(sweep_dir: Path, launch_id: str) -> None:
    """The launching process's record: this launch is the directory's latest."""
    write_json_atomic(Path(sweep_dir) / SWEEP_RECORD, record(launch_id))


def write_job_launch(job_dir: Path, launch_id: str) -> None:
    """The job's record: the launch `launch_id` started this job."""
    write_json_atomic(Path(job_dir) / JOB_RECORD, record(launch_id))


def _read_id(path: Path) -> Optional[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("launch_id") if isinstance(data, dict) else None
    return str(value) if value else None


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


__all__ = ["EARLIER", "JOB_RECORD", "LATEST", "Membership", "SWEEP_RECORD", "UNKNOWN", "is_sweep_dir",
           "job_launch", "record", "sweep_launch", "write_job_launch", "write_sweep_launch"]
