"""The SLURM launcher's wait on the login node (slurm_launcher.py): until every job has really ended,
with a progress line, and bounded (docs/sweeps.md, "Waiting").

A job has ended when submitit's result pickle exists, or when SLURM lists it in an end state
(COMPLETED, CANCELLED, FAILED, ...). In the second case its files may not be visible yet: NFS caches
directory entries for 30-60 s (acdirmin/acdirmax), so a results.json renamed into place, or the
result pickle, can stay invisible to the login node that long. Such a job gets `end_grace_s` for
them, checked on every poll, side by side with the other jobs (no job waits for another); its own
final results.json (it names this SLURM job id) ends the wait for it at once. Held jobs are waited
for: `scontrol release` makes them run. The whole wait ends after `max_wait_h`, or once squeue has
failed for `squeue_fail_min` in a row; the jobs left are named in one line and keep running.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import ConfigError
from ..track.results import FINAL_STATUSES, read_results
from .continuation import STATE_NAME
from .slurm_state import JobState, SlurmStates

log = logging.getLogger(__name__)


_ALLOWED = {"max_wait_h": "a number > 0, or null for no bound", "end_grace_s": "a number >= 0"}


@dataclass(frozen=True)
class WaitBounds:
    """hydra.launcher.{poll_s, end_grace_s, max_wait_h, squeue_fail_min, progress_min}."""

    poll_s: float = 10.0  # seconds between two looks at squeue and the result files
    end_grace_s: float = 120.0  # a job SLURM says ended gets this long for its files to appear (NFS)
    max_wait_h: Optional[float] = 72.0  # the whole wait; None: no bound
    squeue_fail_min: float = 30.0  # squeue failing this long in a row ends the wait
    progress_min: float = 10.0  # minutes between two progress lines

    def __post_init__(self) -> None:
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if value is None and key == "max_wait_h":
                continue
            if value is None or not (value >= 0 if key == "end_grace_s" else value > 0):
                raise ConfigError(f"hydra.launcher.{key}={value}: must be {_ALLOWED.get(key, 'a number > 0')}")

    @classmethod
    def pop_from(cls, params: dict) -> "WaitBounds":
        """Take these keys out of the launcher's params (the rest go to submitit)."""
        return cls(**{k: _number(k, params.pop(k)) for k in cls.__dataclass_fields__ if k in params})

    @classmethod
    def check_launcher(cls, launcher: Any) -> None:
        """Refuse bad bounds in a launching config's `hydra.launcher` before anything is submitted
        (sweep/precheck.py); other launchers have none of these keys."""
        if launcher is not None and "max_wait_h" in launcher:
            cls.pop_from({k: launcher.get(k) for k in cls.__dataclass_fields__ if k in launcher})


def _number(key: str, value: Any) -> Optional[float]:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if value is None else float(value)
    raise ConfigError(f"hydra.launcher.{key}={value!r}: must be a number")


@dataclass
class Waited:
    """What the wait learnt: `ended` maps a job id to None (its result pickle is there) or to SLURM's
    end state (it ended without one); `unfinished` maps each job still in SLURM's hands when the wait
    stopped early to its last state (`stopped` says why it stopped)."""

    ended: dict[str, Optional[str]] = field(default_factory=dict)
    unfinished: dict[str, JobState] = field(default_factory=dict)
    stopped: Optional[str] = None


def own_final_status(run_dir: Path, job_id: str) -> Optional[str]:
    """The final status this SLURM job wrote into its results.json, or None (none yet, not final, or
    written by another job: an earlier launch into the same directory)."""
    res = read_results(Path(run_dir) / "results.json")
    if isinstance(res, dict) and res.get("slurm_job_id") == job_id and res.get("status") in FINAL_STATUSES:
        return str(res["status"])
    return None


def wait_for_jobs(jobs: Sequence[Any], bounds: WaitBounds, run_dir_of: Callable[[str], Path],
                  sweep_dir: Path) -> Waited:
    """Wait until each job (submitit Jobs: `job_id`, `paths.result_pickle`) has ended, or a bound stops
    the wait. `run_dir_of(job_id)` is the job's run directory (asked only once SLURM says it ended)."""
    states, pending, out = SlurmStates(), {j.job_id: j for j in jobs}, Waited()
    seen: dict[str, JobState] = {}
    over_since: dict[str, float] = {}
    start = last_line = time.monotonic()
    while pending:
        for jid in [j for j, job in pending.items() if job.paths.result_pickle.exists()]:
            log.info("job %s: ended (its result is written)", jid)
            out.ended[jid] = None
            del pending[jid]
        now = states.query(pending) if pending else {}
        for jid in list(pending) if now is not None else []:  # None: squeue failed, nothing learnt
            state = now.get(jid, JobState("UNKNOWN"))
            if seen.get(jid) != state:
                log.info("job %s: %s", jid, state.label)
                seen[jid] = state
            if _has_ended(jid, state, over_since, bounds, run_dir_of):
                out.ended[jid] = state.state
                del pending[jid]
        if not pending:
            break
        t = time.monotonic()
        if t - last_line >= bounds.progress_min * 60:
            log.info("%s", progress_line(list(pending), seen, t - start, len(jobs), bounds))
            last_line = t
        if (why := _stop_reason(states, t - start, bounds)) is not None:
            out.stopped = f"{why}; {_left(list(pending), seen, sweep_dir)}"
            out.unfinished = {jid: seen.get(jid, JobState("UNKNOWN")) for jid in pending}
            log.error("%s", out.stopped)
            break
        time.sleep(bounds.poll_s)
    return out


def _has_ended(jid: str, state: JobState, over_since: dict[str, float], bounds: WaitBounds,
               run_dir_of: Callable[[str], Path]) -> bool:
    """SLURM ended it, and its own final results.json is visible or `end_grace_s` has passed."""
    if state.active:
        over_since.pop(jid, None)
        return False
    since = over_since.setdefault(jid, time.monotonic())
    if time.monotonic() - since > bounds.end_grace_s:
        return True
    status = own_final_status(run_dir_of(jid), jid)
    # An attempt that ended `interrupted` after continuing before may be waiting for SLURM to run it
    # again: a passing state is not taken for its end before end_grace_s.
    return status is not None and not (status == "interrupted" and _has_continued(run_dir_of(jid), jid))


def _has_continued(run_dir: Path, job_id: str) -> bool:
    """This SLURM job has continued after a stop before (continuations.json, not at its bound)."""
    record = read_results(Path(run_dir) / STATE_NAME)
    return isinstance(record, dict) and record.get("slurm_job_id") == job_id and bool(record.get("events")) \
        and not record.get("final")


def _stop_reason(states: SlurmStates, waited_s: float, bounds: WaitBounds) -> Optional[str]:
    if bounds.max_wait_h is not None and waited_s > bounds.max_wait_h * 3600:
        return f"stopped waiting after {_span(waited_s)} (hydra.launcher.max_wait_h={bounds.max_wait_h})"
    if states.failing_since is not None and time.monotonic() - states.failing_since > bounds.squeue_fail_min * 60:
        error = " ".join((states.last_error or "").split())[:200]
        return (f"stopped waiting: squeue has failed for {_span(time.monotonic() - states.failing_since)} "
                f"(hydra.launcher.squeue_fail_min={bounds.squeue_fail_min}): {error}")
    return None


def _left(pending: list[str], seen: dict[str, JobState], sweep_dir: Path) -> str:
    shown = ", ".join(f"{jid} {seen[jid].label if jid in seen else 'state unknown'}" for jid in pending[:10])
    more = f" and {len(pending) - 10} more" if len(pending) > 10 else ""
    return (f"{len(pending)} job{'s' * (len(pending) > 1)} not ended ({shown}{more}); SLURM keeps them: "
            f"`python -m attnbench.sweep {sweep_dir}` summarises them later")


def progress_line(pending: list[str], seen: dict[str, JobState], waited_s: float, total: int,
                  bounds: WaitBounds) -> str:
    """`waiting for 3 of 8 jobs after 1 h 10 min (max_wait_h=72): 2 RUNNING, 1 held (12_4: JobHeldAdmin)`."""
    counts: dict[str, int] = {}
    held = []
    for jid in pending:
        state = seen.get(jid, JobState("UNKNOWN"))
        key = "held" if state.held else state.state
        counts[key] = counts.get(key, 0) + 1
        if state.held:
            held.append(f"{jid}: {state.reason or state.state}")
    parts = [f"{n} {k}" for k, n in sorted(counts.items()) if k != "held"]
    if held:
        parts.append(f"{len(held)} held ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''})")
    bound = f"max_wait_h={bounds.max_wait_h}" if bounds.max_wait_h is not None else "no max_wait_h"
    return f"waiting for {len(pending)} of {total} jobs after {_span(waited_s)} ({bound}): {', '.join(parts)}"


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
