"""The jobs of a launch and their statuses: what `python -m attnbench.sweep DIR` (and `attnbench.study`) count.

The launching process records every job of its launch in `<sweep dir>/launch_jobs.json` before any job
starts (track/launch.py; the job list is the one the precheck composes, sweep/plan.py). So the
summary lists every job of the launch, whether or not its directory exists, and trusts a job's
files only where they are this launch's:

- a job that this launch never started is `pending` while SLURM still lists it (or its launcher
  still runs), else `missing`, whatever an earlier launch left in its directory;
- a result is this job's when its `launch_id` is this launch's; an ok result of an earlier launch
  counts (`reused`) only when the job of this launch had `resume=true` and the same config hash,
  as the job itself would have decided (job.py already_done). A job started by this launch that
  died before writing its own result is `running` while SLURM runs it, else `failed`, never the old
  result;
- a result that is not final (`running`), or `interrupted` while SLURM still lists the job (it waits
  for its own requeue), is `running` while SLURM lists it (or its local launcher still runs).

SLURM is asked once, for every job id at once (slurm_state.SlurmStates). A launch record without
a job list (a launch from before this, or a sweeper that picks its jobs as it goes) counts the job
directories, as before.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from ..report.runs import Run, job_set
from ..track.launch import launcher_alive, read_job_record, read_sweep_record
from ..track.results import FINAL_STATUSES
from .slurm_state import JobState, SlurmStates, held_error

PENDING, MISSING, RUNNING, HELD = "pending", "missing", "running", "held"
# held: SLURM keeps the job until `scontrol release` (slurm_state.JobState.held)
NOT_FINAL = (PENDING, RUNNING, HELD)  # SLURM or the launcher still has the job: its status will change
ON_NODE = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"})


@dataclass(frozen=True)
class LaunchJob:
    """One job of a launch: where it runs, what it runs, and its status as the summary states it."""

    num: Optional[int]  # its number in the launch (None: counted from its directory, no job list)
    dir: Path
    overrides: tuple[str, ...]
    status: str  # ok, pending, missing, running, held, interrupted, failed, diverged, oom, unreadable
    error: Optional[str] = None
    reused: bool = False  # ok: a result an earlier launch wrote, which this launch's job reuses
    started: bool = True  # this launch started it (pending and missing jobs did not)
    trusted: bool = True  # its results.json is this job's (this launch wrote it, or reuses it): figures count
    slurm_job_id: Optional[str] = None
    slurm_state: Optional[str] = None  # what SLURM said when asked (None: not asked, or not listed)

    @property
    def final(self) -> bool:
        """False while SLURM (or the launcher) still has the job: its status will change."""
        return self.status not in NOT_FINAL


@dataclass(frozen=True)
class LaunchJobs:
    """Every job of the latest launch into a sweep directory (see the module docstring)."""

    sweep_dir: Path
    launch_id: Optional[str]
    jobs: tuple[LaunchJob, ...]
    planned: bool  # the launch record lists its jobs (else: the job directories were counted)
    runs: tuple[Run, ...] = field(repr=False, default=())  # same order as jobs; a placeholder where none started
    earlier: tuple[Run, ...] = field(repr=False, default=())  # job directories of earlier launches, left out
    slurm_error: Optional[str] = None  # SLURM could not be asked: states it would give are unknown

    @property
    def final(self) -> bool:
        return all(j.final for j in self.jobs)

    @property
    def busy(self) -> tuple[LaunchJob, ...]:
        """The jobs SLURM or the launcher still has: no second writer may start in their directories."""
        return tuple(j for j in self.jobs if not j.final)


@dataclass(frozen=True)
class _Ask:
    """What is known about who still runs jobs: SLURM's states and the launching process."""

    states: Mapping[str, JobState]
    slurm_error: Optional[str]
    launcher: Optional[Mapping]
    alive: Optional[bool]
    ended: bool = False  # the launcher asks about its own launch, after every job returned

    def listed(self, jid: Optional[str]) -> Optional[JobState]:
        """SLURM's state of `jid` when SLURM still has the job (it runs, waits or will run again)."""
        state = self.states.get(jid) if jid else None
        return state if state is not None and state.active else None

    def said(self, jid: Optional[str]) -> Optional[str]:
        """What SLURM said of `jid` (state and reason), or None when it does not list it."""
        state = self.states.get(jid) if jid else None
        if state is None:
            return None
        return state.label if state.active else state.state  # an ended job's reason (a hold) is stale

    def launcher_line(self) -> str:
        launcher = self.launcher or {}
        return f"its launcher (pid {launcher.get('pid')} on {launcher.get('host')})"


# ----------------------------------------------------------------------------- reading a launch
def launch_jobs(sweep_dir: Path, all_launches: bool = False, ended: bool = False) -> LaunchJobs:
    """The jobs of the latest launch into `sweep_dir` with their statuses. `all_launches`: every job
    directory instead (no job list). `ended`: the launcher itself asks after every job returned, so
    nothing is asked of SLURM or of the launching process."""
    sweep_dir = Path(sweep_dir)
    rec = read_sweep_record(sweep_dir) or {}
    lid = rec.get("launch_id")
    plan = rec.get("jobs") if isinstance(rec.get("jobs"), list) and not all_launches else None
    found = job_set([sweep_dir], all_launches=all_launches or plan is not None, require=False)
    by_dir = {r.dir: r for r in found.runs}
    if plan is None:
        entries = [(None, r.dir, tuple(r.overrides), r) for r in found.runs]
        earlier: list[Run] = list(found.earlier)
    else:
        entries = [(int(p["num"]), (sweep_dir / str(p["dir"])).resolve(), tuple(map(str, p.get("overrides") or ())),
                    None) for p in plan]
        entries = [(n, d, ov, by_dir.get(d)) for n, d, ov, _ in entries]
        listed = {d for _, d, _, _ in entries}
        earlier = [r for r in found.runs if r.dir not in listed]
    ids = {str(k): str(v) for k, v in (rec.get("slurm_job_ids") or {}).items()} if plan is not None else {}
    ask = _Ask({}, None, None, None, ended=True) if ended else _ask(entries, ids, rec.get("launcher"), lid)
    jobs, runs = [], []
    for num, d, overrides, run in entries:
        job = judge(num, d, overrides, run, lid if plan is not None else None, ids.get(str(num)), ask)
        jobs.append(job)
        runs.append(run if job.trusted and run is not None else _placeholder(job))
    return LaunchJobs(sweep_dir, lid, tuple(jobs), plan is not None, tuple(runs), tuple(earlier), ask.slurm_error)


def _placeholder(job: LaunchJob) -> Run:
    """A Run for a job with no result of this launch: its status and overrides, no figures."""
    return Run(dir=job.dir, res={"status": job.status, "error": job.error}, overrides=list(job.overrides))


def _ask(entries: list, ids: Mapping[str, str], launcher: Optional[Mapping], lid: Optional[str]) -> _Ask:
    """Ask SLURM once about every job that may still be on it, and whether the launcher still runs."""
    wanted = set()
    for num, _, _, run in entries:
        res = run.res if run is not None else {}
        if res.get("status") == "ok" and res.get("launch_id") == lid:
            continue  # this launch's job ended ok: nothing to ask
        wanted |= {str(j) for j in (ids.get(str(num)), res.get("slurm_job_id")) if j}
    states: dict[str, JobState] = {}
    error = None
    if wanted and shutil.which("squeue"):
        got = SlurmStates().query(sorted(wanted))
        if got is None:
            error = "squeue failed: cannot tell whether SLURM still has the jobs"
        else:
            states = got
    return _Ask(states, error, launcher, launcher_alive(launcher))


# ----------------------------------------------------------------------------- one job
def judge(num: Optional[int], d: Path, overrides: tuple[str, ...], run: Optional[Run], lid: Optional[str],
          submitted: Optional[str], ask: _Ask) -> LaunchJob:
    """The status of one job of launch `lid` (None: no job list; the directory's files are the job's)."""
    res = run.res if run is not None else {}
    rec = read_job_record(d) if run is not None else None
    base = LaunchJob(num=num, dir=d, overrides=overrides, status=str(res.get("status")), error=res.get("error"),
                     slurm_job_id=res.get("slurm_job_id") or submitted)
    if lid is None or res.get("launch_id") == lid:
        return _own(base, res, rec, ask)
    if not rec or rec.get("launch_id") != lid:
        return _never_started(base, res, submitted, ask)
    if res.get("status") == "ok" and _reusable(rec, res):
        return _replace(base, reused=True)
    was = (f"results.json is launch {res.get('launch_id')}'s ({res.get('status')})" if res.get("launch_id")
           else "it wrote no results.json")
    return _unfinished(_replace(base, trusted=False),
                       f"started by this launch, it ended before writing a result of its own; {was}", ask)


def _reusable(rec: Mapping, res: Mapping) -> bool:
    """An earlier launch's ok result that this launch's job reuses (it had resume=true and the same config).
    A job record from before config hashes were recorded cannot tell: its ok result is kept, as before."""
    if "config_hash" not in rec:
        return True
    return bool(rec.get("resume")) and rec.get("config_hash") == res.get("config_hash")


def _own(job: LaunchJob, res: Mapping, rec: Optional[Mapping], ask: _Ask) -> LaunchJob:
    """A job whose results.json this launch wrote (or any job, without a job list)."""
    if rec and rec.get("config_hash") and res.get("config_hash") and rec["config_hash"] != res["config_hash"]:
        return _replace(job, status="failed", trusted=False, error=f"results.json has config hash {res['config_hash']}, "
                        f"the job of this launch {rec['config_hash']}: not this job's result")
    if job.status == "ok":
        return _replace(job, reused=bool(job_reused(rec, res)))
    if job.status not in (*FINAL_STATUSES, "unreadable"):
        return _unfinished(job, job.error or f"job ended with status {job.status}", ask)
    if job.status == "interrupted" and (state := ask.listed(job.slurm_job_id)):
        return _replace(job, status=HELD if state.held else RUNNING, slurm_state=state.label,
                        error=f"SLURM job {job.slurm_job_id} is {state.label}: it runs again"
                        f"{' once released' if state.held else ''} (its last attempt: {job.error})")
    return job


def job_reused(rec: Optional[Mapping], res: Mapping) -> bool:
    """Without a job list: an ok result that an earlier launch wrote and the latest one skipped."""
    started = rec.get("launch_id") if rec else None
    return bool(started and res.get("launch_id") and res.get("launch_id") != started)


def _unfinished(job: LaunchJob, why: str, ask: _Ask) -> LaunchJob:
    """A job this launch started that has no final result: still running, or died."""
    if state := ask.listed(job.slurm_job_id):
        error = (held_error(str(job.slurm_job_id), state) if state.held
                 else f"SLURM job {job.slurm_job_id} is {state.label}: not ended yet")
        return _replace(job, status=HELD if state.held else RUNNING, slurm_state=state.label, error=error)
    if job.slurm_job_id and ask.slurm_error:
        return _replace(job, status=RUNNING, error=f"{why} ({ask.slurm_error} {job.slurm_job_id})")
    if not job.slurm_job_id and ask.alive:
        return _replace(job, status=RUNNING, error=f"not ended yet: {ask.launcher_line()} still runs")
    where = (f"SLURM job {job.slurm_job_id}: {ask.said(job.slurm_job_id) or 'no longer listed'}"
             if job.slurm_job_id else f"{ask.launcher_line()} is gone" if ask.alive is False else "")
    return _replace(job, status="failed", error=why + (f" ({where})" if where else ""))


def _never_started(job: LaunchJob, res: Mapping, submitted: Optional[str], ask: _Ask) -> LaunchJob:
    """A job of this launch with no record or result of it: pending or missing."""
    left = f"; the directory holds launch {res.get('launch_id')}'s {res.get('status')} result" \
        if res.get("launch_id") else ""
    base = _replace(job, started=False, trusted=False, slurm_job_id=submitted, error=None)
    if state := ask.listed(submitted):
        if state.state in ON_NODE:  # SLURM started it, and it has not recorded itself yet
            return _replace(base, status=RUNNING, slurm_state=state.label, error=f"SLURM job {submitted} is "
                            f"{state.label}: starting, not recorded yet{left}")
        return _replace(base, status=HELD if state.held else PENDING, slurm_state=state.label,
                        error=f"SLURM job {submitted} is {state.label}: not started yet{left}")
    if submitted and ask.slurm_error:
        return _replace(base, status=PENDING, error=f"not started; {ask.slurm_error} {submitted}{left}")
    if ask.alive:
        return _replace(base, status=PENDING, error=f"not started yet: {ask.launcher_line()} still runs{left}")
    if submitted:
        state = ask.said(submitted)
        why = f"SLURM job {submitted} ended as {state}" if state else f"SLURM no longer lists job {submitted}"
    elif ask.ended:
        why = "the launcher returned without starting it"
    elif ask.alive is False:
        why = f"{ask.launcher_line()} is gone"
    else:
        why = "no SLURM id recorded, and its launcher runs elsewhere or was not recorded"
    return _replace(base, status=MISSING, slurm_state=ask.said(submitted),
                    error=f"never started: {why}{left}")


def _replace(job: LaunchJob, **changes: object) -> LaunchJob:
    from dataclasses import replace

    return replace(job, **changes)


__all__ = ["HELD", "LaunchJob", "LaunchJobs", "MISSING", "NOT_FINAL", "PENDING", "RUNNING", "job_reused", "judge", "launch_jobs"]
