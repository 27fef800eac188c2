"""A launch's own record of its jobs, written before any job starts, and the launch guard.

`planned_jobs` is the job list the precheck composes (precheck.sweep_jobs: Hydra's basic sweeper's
order, so a job's number is its `hydra.job.num`) with each job's directory; SweepCallback writes it
into `<sweep dir>/launch_jobs.json` in `on_multirun_start`, before the sweeper starts or submits any job.
`refuse_busy_directory` is the precheck's guard: a launch into a directory whose jobs SLURM still
runs (or whose launcher still runs) would put two writers into one job directory, so it is refused
in one line naming them, before anything is submitted.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError

log = logging.getLogger(__name__)

NUM_SUBDIR = "${hydra.job.num}"  # conf/config.yaml's hydra.sweep.subdir: job n's directory is <sweep dir>/n
MAX_NAMED = 5  # jobs named in the refusal; the rest are counted


def planned_jobs(config: DictConfig) -> Optional[list[dict]]:
    """Every job of the multirun that `config` (the launching config) describes, in launch order:
    {"num", "dir" (relative to the sweep directory), "overrides"}. None when the jobs are not known
    before they run (a sweeper other than Hydra's basic one) or a directory cannot be told (a
    hydra.sweep.subdir that reads the job's own config)."""
    from ..config import one_line_error
    from .precheck import sweep_jobs

    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    try:
        jobs = sweep_jobs(config, one_line_error)
        dirs = _subdirs(config, jobs)
    except Exception as exc:  # the jobs still run; the summary then counts job directories
        log.warning("the job list of this launch is not recorded: %s", " ".join(str(exc).split())[:300])
        return None
    return [{"num": n, "dir": d, "overrides": list(job)} for n, (job, d) in enumerate(zip(jobs, dirs))]


def _subdirs(config: DictConfig, jobs: list[list[str]]) -> list[str]:
    """Each job's hydra.sweep.subdir, resolved as Hydra resolves it for job number n."""
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if raw == NUM_SUBDIR:
        return [str(n) for n in range(len(jobs))]
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, names = OverridesParser.create(), []
    opts = config.hydra.job.config.override_dirname
    hydra = copy.deepcopy(OmegaConf.masked_copy(config, ["hydra"]))
    for n, job in enumerate(jobs):
        with open_dict(hydra):
            hydra.hydra.job.num = n
            hydra.hydra.job.override_dirname = get_overrides_dirname(
                overrides=parser.parse_overrides(job), kv_sep=opts.kv_sep, item_sep=opts.item_sep,
                exclude_keys=list(opts.exclude_keys))
        names.append(str(hydra.hydra.sweep.subdir))
    return names


def refuse_busy_directory(master: DictConfig) -> None:
    """Raise ConfigError (one line) when the sweep directory of this launch holds jobs that SLURM
    still runs, or will run (pending, requeued), or whose local launcher still runs."""
    try:
        sweep_dir = Path(str(OmegaConf.select(master, "hydra.sweep.dir")))
    except Exception:  # an interpolation that only the jobs resolve: nothing to compare with
        return
    if not (sweep_dir / "launch.json").is_file() and not (sweep_dir / "multirun.yaml").is_file():
        return
    busy = busy_jobs(sweep_dir)
    if busy:
        named = ", ".join(busy[:MAX_NAMED]) + (f" and {len(busy) - MAX_NAMED} more" if len(busy) > MAX_NAMED else "")
        raise ConfigError(f"hydra.sweep.dir={sweep_dir}: {len(busy)} job{'s' * (len(busy) != 1)} of an earlier "
                          f"launch into it {'are' if len(busy) != 1 else 'is'} still running or queued ({named}); "
                          "a second launch would write into the same job directories: wait until "
                          f"`python -m attnbench.sweep {sweep_dir}` says they ended, or scancel them, then launch "
                          "again (nothing was submitted)")


def busy_jobs(sweep_dir: Path) -> list[str]:
    """The jobs of `sweep_dir` that SLURM or their launcher still has, each as "job <n> (<SLURM id> <state>)"."""
    from .jobs import launch_jobs
    from .slurm_state import SlurmStates

    launch = launch_jobs(sweep_dir)
    out = []
    for job in launch.busy:
        name = f"job {job.num}" if job.num is not None else f"job {job.dir.name}"
        what = (f"SLURM {job.slurm_job_id} {job.slurm_state or 'state unknown'}" if job.slurm_job_id
                else "its launcher still runs")
        out.append(f"{name} ({what})")
    # Jobs of launches before the latest one that SLURM still runs (their launcher died before this
    # guard existed, or the latest launch left them out of its grid) write here too.
    older = {str(r.res["slurm_job_id"]): r for r in launch.earlier if r.res.get("slurm_job_id") and not r.ok}
    states = (SlurmStates().query(sorted(older)) or {}) if older else {}
    out += [f"job {older[j].dir.name} of an earlier launch (SLURM {j} {s.label})" for j, s in states.items() if s.active]
    return out


__all__ = ["busy_jobs", "planned_jobs", "refuse_busy_directory"]
