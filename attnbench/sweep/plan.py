"""A launch's own record of its jobs, written before any job starts, and the launch guard.

`planned_jobs` is the job list the precheck composes (precheck.sweep_jobs: Hydra's basic sweeper's
order, so a job's number is its `hydra.job.num`) with each job's directory; SweepCallback writes it
into `<sweep dir>/launch_jobs.json` in `on_multirun_start`, before the sweeper starts or submits any job.
`refuse_busy_directory` (busy.py) is the precheck's guard: a launch into a directory whose jobs SLURM still
runs (or whose launcher still runs) would put two writers into one job directory, so it is refused
in one line naming them, before anything is submitted.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict


log = logging.getLogger(__name__)

NUM_SUBDIR = "${hydra.job.num}"  # conf/config.yaml's hydra.sweep.subdir: job n's directory is <sweep dir>/n


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


__all__ = ["planned_jobs"]
