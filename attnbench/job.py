"""One job: validate → build → stages (bench, train) → results.json + sinks.

Knows nothing of Hydra: the CLI hands it a composed config and a run directory.
Every outcome, including a bad config, OOM or an exception, ends in a
results.json with a status and a one-line error, so a sweep never loses a job.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from .config import ConfigError, config_hash, validate, variant_name
from .track.results import SCHEMA_VERSION, read_results, write_results
from .train.interrupt import RaiseOnStop, StopRequested

log = logging.getLogger(__name__)


def new_results(cfg: Any) -> dict:
    return {
        "schema": SCHEMA_VERSION, "status": "running", "error": None,
        "variant": variant_name(cfg), "config_hash": config_hash(cfg),
        "launch_id": cfg.get("launch_id"),  # the launch that wrote this result (track/launch.py)
        "config": OmegaConf.to_container(cfg, resolve=True),
        "env": {}, "model": {}, "bench": [],
    }


def already_done(cfg: Any, run_dir: Path) -> dict | None:
    """With `resume=true`: the existing ok result for this exact config, if any."""
    old = read_results(Path(run_dir) / "results.json")
    if old and old.get("status") == "ok" and old.get("config_hash") == config_hash(cfg):
        return old
    return None


def earlier_attempt(cfg: Any, run_dir: Path) -> dict | None:
    """When this process continues a SLURM job that was preempted or reached its time limit
    (sweep/continuation.py): the earlier attempt's results (an empty dict if it left none). The job
    then resumes training from its checkpoint, with no flag; its finished bench is kept if the
    results are this config's. None for a fresh job."""
    from .sweep.continuation import is_continuation

    if not is_continuation(run_dir):
        return None
    old = read_results(Path(run_dir) / "results.json")
    log.info("continuing SLURM job in %s from its checkpoint", run_dir)
    return old if isinstance(old, dict) and old.get("config_hash") == config_hash(cfg) else {}


def set_aside_finished_run(run_dir: Path) -> Optional[int]:
    """A job that starts afresh where an ok result of another run lies (a re-run without resume, a new
    launch into the same directory) first moves that run's files aside, so it keeps its curves and
    weights: results.json -> results.<n>.json, metrics.jsonl -> metrics.<n>.jsonl, checkpoint.pt ->
    checkpoint.<n>.pt (the first free n). Returns n, or None when there was nothing to keep."""
    run_dir = Path(run_dir)
    old = read_results(run_dir / "results.json")
    if not (isinstance(old, dict) and old.get("status") == "ok"):
        return None
    n = 1
    while (run_dir / f"results.{n}.json").exists():
        n += 1
    for name in ("metrics.jsonl", "checkpoint.pt", "results.json"):  # results.json last: the marker
        if (run_dir / name).exists():
            stem, dot, ext = name.partition(".")
            os.replace(run_dir / name, run_dir / f"{stem}.{n}{dot}{ext}")
    log.warning("kept the earlier ok run of %s as results.%d.json, metrics.%d.jsonl, checkpoint.%d.pt", run_dir, n, n, n)
    return n


def run_job(cfg: Any, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if cfg.resume and (done := already_done(cfg, run_dir)):
        log.info("resume: %s already has an ok result for this config; skipping", run_dir)
        done["skipped"] = True
        return done
    from .sweep.continuation import slurm_job_id

    res = new_results(cfg)
    if slurm_job_id():  # lets `python -m attnbench.sweep` ask SLURM about a job that never finished
        res["slurm_job_id"] = slurm_job_id()
    prev = earlier_attempt(cfg, run_dir)
    if prev and prev.get("continuations"):
        res["continuations"] = prev["continuations"]
    resume = bool(cfg.train.resume) or prev is not None
    if not resume:
        set_aside_finished_run(run_dir)
    sinks = None
    try:
        validate(cfg)
        from .track.sinks import make_sinks

        # Opened here, not inside the stages, so that a crash in a stage still closes them (W&B exit code).
        sinks = make_sinks(cfg, run_dir, append=resume)
        res.update(sinks.identity())  # wandb_run_id: the report's dashboard selects this job's W&B run by it
        with RaiseOnStop():
            _run_stages(cfg, run_dir, res, sinks, resume=resume, prev=prev)
        if res["status"] == "running":
            res["status"] = "ok"
    except StopRequested as exc:  # a signal before or after training; during it the trainer checkpoints
        res["status"], res["error"] = "interrupted", f"stopped by {exc} before the job finished; run it again"
        res["stopped_by"] = str(exc)
        log.warning("%s received: job stopped", exc)
    except ConfigError as exc:
        res["status"], res["error"] = "failed", str(exc)
        log.error("invalid config: %s", exc)  # so the job's log says why (a sweep prints no traceback)
    except Exception as exc:
        from .device import is_oom

        res["status"] = "oom" if is_oom(exc) else "failed"
        res["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        log.exception("job failed")
    except KeyboardInterrupt:
        res["status"], res["error"] = "interrupted", "KeyboardInterrupt"
        raise
    finally:
        write_results(run_dir, res)
        res = _decide_continuation(run_dir, res)
        if sinks is not None:
            sinks.summary(res)
            sinks.close(res["status"])
    return res


def _decide_continuation(run_dir: Path, res: dict) -> dict:
    """Under attnbench's SLURM launcher: decide now whether SLURM runs the job again (and requeue it
    after a time limit), before W&B's close; the decision rewrites results.json's error."""
    from .sweep.continuation import decide_now

    if decide_now(run_dir) is None:
        return res
    decided = read_results(run_dir / "results.json")
    return decided if isinstance(decided, dict) else res


def _run_stages(cfg: Any, run_dir: Path, res: dict, sinks: Any, resume: bool = False,
                prev: dict | None = None) -> None:
    import torch

    from . import device as dev
    from .model import build_model
    from .bench.figures import model_figures
    from .config.size import check_fits
    from .config.spec import resolve_spec

    device = dev.setup(cfg.device)
    dtype = dev.resolve_dtype(cfg.device)
    data = None
    if "train" in cfg.stages:  # the data fixes the vocabulary, so it is loaded before the spec is resolved
        from .train.data import prepare_data

        data = prepare_data(cfg)
    spec = resolve_spec(cfg, vocab_size=data.vocab_size if data is not None else None)  # once per job
    res["config"]["model"]["vocab_size"] = spec.vocab_size
    check_fits(spec, device)  # again with the data's vocabulary, and on the node the job runs on
    model = build_model(spec)
    res["env"] = dev.describe(device, dtype)
    res["model"] = model_figures(spec, model)
    write_results(run_dir, res)  # a crash from here on still leaves the config and model figures
    if "bench" in cfg.stages and prev and prev.get("bench"):  # finished in an earlier attempt of this job
        res["bench"], res["env"] = prev["bench"], {**prev.get("env", {}), **res["env"]}
        log.info("continuing: keeping the %d bench rows of the earlier attempt", len(res["bench"]))
    elif "bench" in cfg.stages:
        from .bench.suite import run_bench

        res["bench"], env_extra = run_bench(spec, model, device, dtype)
        res["env"].update(env_extra)
        write_results(run_dir, res)
    if "train" in cfg.stages:
        from .train.loop import run_train

        torch.manual_seed(int(cfg.seed))
        from .sweep.continuation import slurm_job_id

        # A continued SLURM job (prev) resumes only its own checkpoint; train.resume=true any of this config.
        res["train"] = run_train(cfg, model, device, dtype, run_dir, sinks, data=data, resume=resume,
                                 job_id=slurm_job_id(), own_only=prev is not None)
        if res["train"].get("status", "ok") != "ok":
            res["status"] = res["train"]["status"]
            res["error"] = res["train"].get("error")
            res["stopped_by"] = res["train"].get("stopped_by")
