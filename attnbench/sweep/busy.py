"""The guard against two writers in one job directory: a launch into a directory whose jobs SLURM (or
their launcher) still runs is refused in one line naming them, before anything is submitted. Its own
module so that the precheck, which plan.py's job list uses, can call it without an import cycle.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError

MAX_NAMED = 5  # jobs named in the refusal line; the rest are counted


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


__all__ = ["busy_jobs", "refuse_busy_directory"]
