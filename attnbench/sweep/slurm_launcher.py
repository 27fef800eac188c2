"""hydra/launcher=slurm_gpu: hydra-submitit-launcher's SLURM launcher, made to survive the scheduler.

hydra-submitit-launcher 1.2 submits the sweep as one job array and waits for submitit's result
pickle of each job. Three things go wrong on a real SLURM (docs/sweeps.md), fixed here:
- a job preempted or at its time limit checkpoints and *returns*: its result pickle tells the
  launcher it ended (`interrupted`, exit 1) while SLURM runs it again, from step 0. Here the job
  (`__call__`, on the compute node) asks sweep/continuation.py whether it continues; if so it exits
  without a result pickle, SLURM starts it again (requeued by SLURM, or by the job itself after
  the pre-timeout signal), and the next attempt resumes from checkpoint.pt (job.py);
- submitit learns job states from `sacct` only; without accounting a cancelled job is waited for
  forever. Here the launcher polls squeue (slurm_state.py) and the result pickles itself;
- a job that SLURM ended without a result (scancel, node failure, out of memory, SIGKILL) raised
  in the launcher and took the summary down. Here it becomes a row with SLURM's state.
The bounds are `hydra.launcher.max_num_timeout` (time limits, default 3) and `max_num_requeue`
(preemptions and requeues, default 3). The wait itself (slurm_wait.py) looks every `poll_s`, says
where it stands every `progress_min`, and ends after `max_wait_h` or `squeue_fail_min` of failing
squeue. A job's own final status (diverged, oom, interrupted, ...) is never overwritten.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from ..track.results import FINAL_STATUSES, read_results, write_results
from ..train.interrupt import AttemptScope
from . import continuation
from .slurm_state import row_status
from .slurm_wait import WaitBounds, Waited, own_final_status, wait_for_jobs

log = logging.getLogger(__name__)


@dataclass
class AttnbenchSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's SlurmQueueConf plus the continuation bounds and the poll interval."""

    _target_: str = "hydra_plugins.attnbench_slurm_launcher.launcher.AttnbenchSlurmLauncher"
    max_num_timeout: int = 3  # continuations after the time limit (submitit's name; its default is 0 in Hydra)
    max_num_requeue: int = 3  # continuations after a preemption or `scontrol requeue`
    poll_s: float = 10.0  # seconds between two looks at squeue and the result files
    end_grace_s: float = 120.0  # a job SLURM says ended gets this long for its files to appear (NFS caching)
    max_wait_h: Optional[float] = 72.0  # the launcher stops waiting after this long (null: never); jobs keep running
    squeue_fail_min: float = 30.0  # ... or once squeue has failed this long in a row
    progress_min: float = 10.0  # minutes between two "waiting for N of M jobs" lines


def register(target: str) -> None:
    """Store hydra/launcher=attnbench_slurm. Called by hydra_plugins/attnbench_slurm_launcher, because
    Hydra instantiates only launcher classes defined under `hydra_plugins` (and imports that package
    when it starts, which is what makes the config known before composing)."""
    ConfigStore.instance().store(group="hydra/launcher", name="attnbench_slurm",
                                 node=AttnbenchSlurmConf(_target_=target), provider="attnbench")


class SlurmLauncher(_SubmititSlurmLauncher):
    def __init__(self, **params: Any) -> None:
        self.limits = continuation.Limits(max_num_timeout=int(params.get("max_num_timeout", 3)),
                                          max_num_requeue=int(params.pop("max_num_requeue", 3)))
        self.bounds = WaitBounds.pop_from(params)
        super().__init__(**params)

    # ------------------------------------------------------------------------- on the compute node
    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:
        """Run one attempt of the job; exit without a result when SLURM will run it again."""
        # SIGTERM/SIGUSR1 outside the job's scopes are attnbench's, not submitit's, until the process ends
        # (after a requeue SLURM's SIGTERM comes while it exits, or while submitit writes the result).
        with AttemptScope(restore=False):
            return self._attempt(sweep_overrides, job_dir_key, job_num, singleton_state)

    def _attempt(self, sweep_overrides: list[str], job_dir_key: str, job_num: int,
                 singleton_state: dict) -> JobReturn:
        import submitit

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        run_dir = Path(str(OmegaConf.select(sweep_config, job_dir_key))) / str(sweep_config.hydra.sweep.subdir)
        final = continuation.begin_attempt(run_dir)
        if final is not None:  # past its bound, and SLURM started it again anyway
            return _job_return(sweep_overrides, str(final.get("status")), run_dir)
        continuation.open_attempt(self.limits)  # the job decides before closing W&B (job.py)
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                      job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
        if continuation.decide_now(run_dir) == continuation.CONTINUE:
            logging.shutdown()
            # SystemExit passes submitit's `except Exception`: no result pickle, so the launcher keeps
            # waiting, and SLURM starts this job again.
            sys.exit(0)
        return ret

    # ------------------------------------------------------------------------- on the login node
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the job array (as hydra-submitit-launcher does), then wait until every job has really ended."""
        import submitit

        assert self.config is not None
        init_params = {"folder": self.params["submitit_folder"],
                       "slurm_max_num_timeout": self.params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        _record_submitted(sweep_dir, self.config, {idx: job.job_id for idx, job in enumerate(jobs, initial_job_idx)})
        index = {job.job_id: (list(ov), idx) for idx, (job, ov) in enumerate(zip(jobs, job_overrides),
                                                                               start=initial_job_idx)}
        run_dir_of = functools.cache(lambda jid: self._job_dir(*index[jid], jid)[0])  # composed once per job
        waited = wait_for_jobs(jobs, self.bounds, run_dir_of, sweep_dir)
        return [self._job_return(job, *index[job.job_id], waited.ended.get(job.job_id))
                if job.job_id in waited.ended else self._unfinished(job, *index[job.job_id], waited)
                for job in jobs]

    def _unfinished(self, job: Any, overrides: list[str], idx: int, waited: Waited) -> JobReturn:
        """A job the launcher stopped waiting for: SLURM still has it, so its files are left to it."""
        state = waited.unfinished[job.job_id]
        return _job_return(overrides, "held" if state.held else "running", self._job_dir(overrides, idx, job.job_id)[0])

    def _job_return(self, job: Any, overrides: list[str], idx: int, state: Optional[str]) -> JobReturn:
        """The job's own JobReturn, or one for a job that SLURM ended without a result."""
        if state is None:
            try:
                return job.results()[0]
            except Exception as exc:  # the job raised outside Hydra's run_job (submitit's own error)
                from .callback import record_failure

                run_dir, config = self._job_dir(overrides, idx, job.job_id)
                record_failure(run_dir, config, exc)
                return _job_return(overrides, "failed", run_dir)
        run_dir, config = self._job_dir(overrides, idx, job.job_id)
        return _job_return(overrides, record_slurm_end(run_dir, config, overrides, job.job_id, state), run_dir)

    def _job_dir(self, overrides: list[str], idx: int, job_id: str) -> tuple[Path, DictConfig]:
        """The job's run directory and config, composed as the job composes them."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num, cfg.hydra.job.id = idx, job_id
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir), cfg


def _record_submitted(sweep_dir: Path, config: DictConfig, ids: dict[int, str]) -> None:
    """The SLURM id of each job into the launch record: `python -m attnbench.sweep` asks SLURM about jobs
    that have not started yet (pending, or missing once SLURM no longer has them)."""
    from ..track.launch import record_submitted

    launch_id = OmegaConf.select(config, "launch_id")
    try:
        if launch_id:
            record_submitted(sweep_dir, str(launch_id), ids)
    except OSError:  # the jobs run anyway; a summary before they start calls them missing
        log.exception("could not record the SLURM job ids in %s", sweep_dir)


def _job_return(overrides: Sequence[str], status: str, run_dir: Path) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), working_dir=str(run_dir), status=JobStatus.COMPLETED)
    ret.return_value = status
    return ret


def record_slurm_end(run_dir: Path, config: DictConfig, overrides: Sequence[str], job_id: str, state: str) -> str:
    """Give a job that SLURM ended without a result (scancel, node failure, OOM kill) a non-ok results.json
    with SLURM's state, keeping whatever this launch's job wrote; returns the status. The record carries
    this launch's id, also in a directory an earlier launch left (whose files are not this job's)."""
    from .callback import _blank_results

    status = row_status(state)
    launch_id, blank = OmegaConf.select(config, "launch_id"), _blank_results(config)
    res = read_results(run_dir / "results.json")
    if (own := own_final_status(run_dir, job_id)) is not None:  # its own word (diverged, oom, ...) stands
        return own
    if isinstance(res, dict) and launch_id and res.get("launch_id") != launch_id and not (
            res.get("status") == "ok" and OmegaConf.select(config, "resume")
            and res.get("config_hash") == blank.get("config_hash")):  # reusable: this launch's job would skip it
        res = None  # an earlier launch's, not this job's: write_results keeps an ok one as results.<n>.json
    if isinstance(res, dict) and res.get("status") == "ok":  # it finished (or is reused), then was killed
        _record_job(run_dir, config, overrides, blank)
        return "ok"
    res = res if isinstance(res, dict) else blank
    _record_job(run_dir, config, overrides, blank)
    step = (res.get("train") or {}).get("steps") or _last_step(run_dir)
    was = res.get("error") if res.get("status") in FINAL_STATUSES else None
    res["status"] = status
    res["error"] = (f"SLURM ended job {job_id} as {state} without a result" + (f" (after step {step})" if step else "")
                    + (f"; before that: {was}" if was else ""))
    res["slurm_state"] = state
    write_results(run_dir, res)
    log.error("%s: %s", run_dir, res["error"])
    return status


def _record_job(run_dir: Path, config: DictConfig, overrides: Sequence[str], blank: dict) -> None:
    """What the job records when it starts (its overrides and this launch's record), for a job SLURM
    ended before it could, also in a directory an earlier launch left."""
    from ..track.launch import write_job_launch

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
    if OmegaConf.select(config, "launch_id"):
        write_job_launch(run_dir, str(OmegaConf.select(config, "launch_id")), config_hash=blank.get("config_hash"),
                         resume=bool(OmegaConf.select(config, "resume")))


def _last_step(run_dir: Path) -> Optional[int]:
    """The last step in metrics.jsonl (a job killed mid-training has no train section yet)."""
    from ..track.history import read_history

    steps = read_history(run_dir, want=()).columns["step"]
    return int(steps[-1]) if len(steps) else None
