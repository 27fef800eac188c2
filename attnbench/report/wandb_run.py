"""`python -m attnbench.report --wandb`: the report's table and plots as one W&B "report" run.

The run joins the sweep's group, so it sits next to the jobs' runs in W&B. The
jobs' offline runs cannot be reopened to attach the plots to them (wandb resumes
only online runs), hence a run of its own. Like the job sink it never hangs and
never fails the report: offline by default, online without credentials falls back
to offline, init and finish are bounded, every W&B error is one warning.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from ..track import wandb_rules

log = logging.getLogger(__name__)


def sweep_group(runs: list, paths: Sequence[Path]) -> Optional[str]:
    """The group the jobs' W&B runs used; else what the sink would use for this directory."""
    from ..track.wandb_reader import find_run_files, read_run

    for r in runs:  # the first readable job run decides: all jobs of a sweep share the group
        files = find_run_files(r.dir) if (r.dir / "wandb").is_dir() else []
        try:
            if files and (group := read_run(files[-1]).group):
                return group
        except Exception as exc:  # a torn file must not stop the report
            log.debug("cannot read %s: %s", files[-1], exc)
    first = Path(paths[0]).resolve()
    if (first / "multirun.yaml").is_file():  # a Hydra sweep directory: the group its jobs' sink would use
        exp = ((runs[0].res.get("config") or {}).get("experiment")) if runs else None
        return wandb_rules.sweep_group(first, exp)
    return None


def _logger_cfg(runs: list) -> dict:
    for r in runs:
        lc = (r.res.get("config") or {}).get("logger")
        if isinstance(lc, dict):
            return lc
    return {}


def resolve_mode(mode: Optional[str]) -> str:
    """The job sink's rules (track/wandb_rules.py): explicit, $WANDB_MODE, offline; online needs a key."""
    return wandb_rules.usable_mode(wandb_rules.resolve_mode(mode), "--wandb-mode online",
                                   "upload the report run later with `wandb sync <out>/wandb/offline-run-*`")


def _init(mode: str, out: Path, group: Optional[str], project: str, entity: Optional[str], timeout_s: float,
          config: dict) -> Any:
    import wandb

    settings = wandb.Settings(init_timeout=timeout_s, finish_timeout=timeout_s, quiet=True, console="off",
                              x_disable_stats=True, disable_git=True)
    try:
        return wandb.init(project=project, entity=entity, name=f"report {group or out.parent.name}", group=group,
                          job_type="report", dir=str(out), mode=mode, reinit="finish_previous",
                          settings=settings, config=config, tags=["report"])
    except Exception as exc:  # includes init timeouts and "no API key"
        log.warning("W&B %s init failed: %s", mode, " ".join(str(exc).split())[:300])
        return None


def log_report(rep: Any, paths: Sequence[Path], out: Path, mode: Optional[str] = None,
               project: Optional[str] = None, entity: Optional[str] = None, timeout_s: float = 30.0) -> Optional[Path]:
    """Log the report to W&B; the run's local folder, or None when nothing was logged."""
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; no W&B report run")
        return None
    from .tables import csv_row
    from ..track.wandb_sink import wait_for_exit_record

    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    lc = _logger_cfg(rep.runs)
    group = sweep_group(rep.runs, paths)
    config = {"paths": [str(p) for p in paths], "n_runs": len(rep.runs)}
    if rep.comparison is not None:
        config.update(n_variants=len(rep.comparison.variants), objective=rep.comparison.objective,
                      replicates=list(rep.comparison.replicates), tune=rep.comparison.tune,
                      baseline=rep.comparison.baseline.label if rep.comparison.baseline else None)
    args = (out, group, project or lc.get("project") or "attnbench", entity or lc.get("entity"), timeout_s, config)
    run = _init(mode, *args)
    if run is None and mode == "online":
        run = _init("offline", *args)
    if run is None:
        return None
    rows = [csv_row(r) for r in rep.runs]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    exit_code = 0
    try:
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows], allow_mixed_types=True)
        logged = {"report/table": table}
        if rep.comparison is not None:  # one row per variant: what W&B's "group by variant" shows natively
            from .variants import variant_rows

            vrows = variant_rows(rep.comparison)
            vcols = list(dict.fromkeys(k for r in vrows for k in r))
            logged["report/variants"] = wandb.Table(columns=vcols, data=[[r.get(c) for c in vcols] for r in vrows],
                                                    allow_mixed_types=True)
        run.log({**logged, **{f"report/{k}": wandb.Image(str(p)) for k, p in rep.images.items()}})
        run.summary.update({"n_runs": len(rep.runs),
                            **{f"n_{s}": n for s, n in Counter(str(r.res.get("status")) for r in rep.runs).items()}})
    except Exception as exc:
        exit_code = 1
        log.warning("W&B logging of the report failed: %s", " ".join(str(exc).split())[:300])
    try:
        run.finish(exit_code=exit_code)
    except Exception as exc:
        log.warning("W&B finish failed: %s", exc)
    sync_file = Path(run.settings.sync_file)
    if not wait_for_exit_record(sync_file, timeout_s):
        log.warning("W&B report run file %s is incomplete after %.0f s", sync_file, timeout_s)
    return sync_file.parent
