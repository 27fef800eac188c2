"""Sweeps: the Hydra callback that ends a multirun with a summary table and an exit status.

Registered in conf/config.yaml as `hydra.callbacks.sweep`. Hydra calls `on_job_end` in the
job's own process (a joblib or submitit worker too) and `on_multirun_end` in the launching
process once every job has returned, whatever the launcher. Two Hydra 1.3.8 behaviours
shape this module:
- an exception raised by a callback only becomes a warning (hydra/_internal/callbacks.py),
  so a callback cannot fail the process: `on_multirun_end` stores the exit status and
  `attnbench.__main__` exits with `exit_code()` after the Hydra app returns;
- a job whose task raises is re-raised by the basic sweeper after all jobs ran, which
  skips `on_multirun_end` and leaves that job's log empty: `on_job_end` logs the traceback
  into the job's log, records the job as failed in its results.json and hands Hydra a
  normal return.

This module is CLI glue (like cli.py): `on_multirun_end` prints the table.
`python -m attnbench.sweep SWEEP_DIR` rebuilds the summary of a sweep directory, e.g.
when the launcher on a SLURM login node was killed before the jobs finished.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..track.launch import this_process, write_job_launch, write_sweep_launch
from ..track.results import FINAL_STATUSES, read_results, write_results
from .summary import collect_job_set, launch_notes, render, write_summary

log = logging.getLogger(__name__)

_EXIT = {"code": 0}  # set by on_multirun_end in the launching process
NOT_ENDED = 3  # `python -m attnbench.sweep DIR`: some job is still pending or running; ask again later


def exit_code() -> int:
    """1 if the last multirun of this process had a job that did not end `ok`, else 0."""
    return _EXIT["code"]


def rows_exit_code(rows: Sequence[dict]) -> int:
    """0: every job ok; 3: some job still pending or running (SLURM or its launcher has it); 1: every
    job has a final status, and some is not ok (failed, missing, ...) or there is no job at all."""
    if not rows:
        return 1
    if not all(r.get("final", True) for r in rows):
        return NOT_ENDED
    return 0 if all(r["status"] == "ok" for r in rows) else 1


# ----------------------------------------------------------------------------- resume
def resume_command(config: DictConfig, sweep_dir: Path, rows: Sequence[dict] = ()) -> str:
    """The command that re-runs this sweep into the same directory, skipping jobs that are ok.
    `config` is the launching process's config (or the sweep's multirun.yaml)."""
    ov = config.hydra.overrides
    drop = ("hydra.sweep.dir=", "hydra.mode=", "resume=")
    args = [str(o) for o in list(ov.hydra) + list(ov.task) if not str(o).startswith(drop)]
    args += ["resume=true", f"hydra.sweep.dir={sweep_dir}"]
    if any(r["status"] == "interrupted" for r in rows) and not any(a.startswith("train.resume=") for a in args):
        args.append("train.resume=true")  # continue interrupted trainings from their checkpoints
    return "python -m attnbench -m " + " ".join(shlex.quote(a) for a in args)


# ----------------------------------------------------------------------------- the callback
def record_failure(run_dir: Path, config: DictConfig, exc: BaseException) -> None:
    """Give a job whose task raised outside the harness a failed results.json (keeping a final one)."""
    old = read_results(run_dir / "results.json")
    if isinstance(old, dict) and old.get("status") in FINAL_STATUSES:
        return
    error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    res = old if isinstance(old, dict) else _blank_results(config)
    res.update(status="failed", error=error)
    try:
        write_results(run_dir, res)
    except Exception:  # an unwritable run dir: the summary reports the job as failed anyway
        log.exception("could not write %s/results.json", run_dir)


def _blank_results(config: DictConfig) -> dict:
    from ..job import new_results

    task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    OmegaConf.copy_cache(from_config=config, to_config=task_cfg)  # else `${launch_id:}` resolves a new id
    try:
        return new_results(task_cfg)
    except Exception:  # a config that cannot even be resolved
        from ..track.results import SCHEMA_VERSION

        return {"schema": SCHEMA_VERSION, "variant": None, "config": {}, "env": {}, "model": {}, "bench": []}


# ----------------------------------------------------------------------------- launch records
def record_sweep_launch(config: DictConfig) -> Optional[str]:
    """In the launching process, before any job: resolve this launch's id (the cached `${launch_id:}`
    resolver; Hydra copies the cache into every job's config) and record it as the sweep directory's
    latest launch (track/launch.py)."""
    from .plan import planned_jobs

    launch_id = OmegaConf.select(config, "launch_id")
    if not launch_id:
        return None
    try:
        write_sweep_launch(Path(str(config.hydra.sweep.dir)), str(launch_id), jobs=planned_jobs(config),
                           launcher=this_process())
    except OSError:  # the jobs still run; the summary then counts every job, saying so
        log.exception("could not write the launch record of %s", config.hydra.sweep.dir)
    return str(launch_id)


def record_job_launch(config: DictConfig) -> None:
    """In the job's process, when it starts (also when resume=true will reuse its result): the launch
    that started it, the job's config hash and its `resume` flag, which tell the summary whether an
    earlier launch's ok result is this job's to reuse. Written next to Hydra's own record of the job
    (.hydra/overrides.yaml)."""
    from ..config import config_hash

    launch_id = OmegaConf.select(config, "launch_id")
    if config.hydra.mode != RunMode.MULTIRUN or not launch_id or config.hydra.output_subdir is None:
        return
    try:
        write_job_launch(Path(config.hydra.runtime.output_dir), str(launch_id), config_hash=config_hash(config),
                         resume=bool(OmegaConf.select(config, "resume")))
    except OSError:  # results.json still names the launch
        log.exception("could not write the launch record of %s", config.hydra.runtime.output_dir)


def summarize(config: Optional[DictConfig], sweep_dir: Path, all_launches: bool = False,
              ended: bool = False) -> tuple[list[dict], str]:
    """Write summary.csv/summary.md of `sweep_dir` and return (rows, the text to print). `config` is the
    launching config (or the sweep's multirun.yaml; None without one): it gives the resume command.
    `ended`: the launcher itself asks, after every job returned."""
    launch, rows = collect_job_set(sweep_dir, all_launches, ended=ended)
    notes = launch_notes(launch, flag="`python -m attnbench.sweep DIR --all-launches`")
    cmd = None
    busy = [r for r in rows if not r["final"]]
    if busy:  # the resume command would start a second writer in their directories
        notes.append(f"no resume command while {len(busy)} job{'s' * (len(busy) != 1)} "
                     f"{'are' if len(busy) != 1 else 'is'} still pending or running (SLURM or the launcher has "
                     f"{'them' if len(busy) != 1 else 'it'}): run `python -m attnbench.sweep {sweep_dir}` again "
                     "once they end")
    elif any(r["status"] != "ok" for r in rows) and config is not None \
            and OmegaConf.select(config, "hydra.overrides") is not None:
        cmd = resume_command(config, sweep_dir, rows)
    runs = list(launch.runs)
    write_summary(sweep_dir, rows, cmd, runs, notes)
    return rows, render(sweep_dir, rows, cmd, runs, notes)


class SweepCallback(Callback):
    """Records jobs that raised and summarizes a multirun (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _EXIT["code"] = 0
        record_sweep_launch(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        record_job_launch(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        exc = job_return._return_value  # the `return_value` property would re-raise it
        log.error("job raised %s; recorded as failed", type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__))
        record_failure(Path(config.hydra.runtime.output_dir), config, exc)
        # A COMPLETED return keeps the sweeper from re-raising, so the summary still runs.
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = "failed"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _EXIT["code"] = 1  # stays 1 if the summary itself fails (Hydra only warns about it)
        rows, text = summarize(config, Path(str(config.hydra.sweep.dir)), ended=True)
        _EXIT["code"] = 1 if not rows or any(r["status"] != "ok" for r in rows) else 0
        print(text, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m attnbench.sweep SWEEP_DIR`: (re)write and print the summary of a sweep. Exit status:
    0 every job ok; 1 every job ended and some is not ok (or missing); 3 some job is still pending or running."""
    p = argparse.ArgumentParser(prog="python -m attnbench.sweep", description=main.__doc__)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--all-launches", action="store_true",
                   help="count the jobs of earlier launches into the same directory too (default: the latest launch)")
    args = p.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"attnbench.sweep: error: {args.sweep_dir}: no such directory", file=sys.stderr)
        return 2
    launched = _launching_config(args.sweep_dir)
    rows, text = summarize(launched, args.sweep_dir, args.all_launches)
    print(text)
    if launched is None and rows:
        print(f"(no multirun.yaml in {args.sweep_dir}: job directories, not a whole sweep; no resume command)")
    return rows_exit_code(rows)


def _launching_config(sweep_dir: Path) -> Optional[DictConfig]:
    """The sweep's multirun.yaml (the launching config, saved by Hydra's sweeper), or None without a readable one."""
    saved = sweep_dir / "multirun.yaml"
    try:
        cfg = OmegaConf.load(saved) if saved.is_file() else None
    except Exception as exc:  # a torn or foreign file: the summary still comes, without a resume command
        log.warning("%s cannot be read (%s); no resume command", saved, " ".join(str(exc).split())[:200])
        return None
    return cfg if isinstance(cfg, DictConfig) else None
