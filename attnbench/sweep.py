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
import csv
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .report_runs import largest_ok, read_overrides
from .results import read_results, write_results

log = logging.getLogger(__name__)

FINAL_STATUSES = ("ok", "failed", "oom", "diverged", "interrupted")
COLUMNS = ("job", "variant", "overrides", "status", "params", "forward_ms", "forward_T",
           "train_tokens_per_s", "val_loss", "metric_name", "metric", "reused", "error", "all_overrides", "dir")
SKIP_DIRS = {".hydra", ".submitit", "wandb", "report", "__pycache__"}
_EXIT = {"code": 0}  # set by on_multirun_end in the launching process


def exit_code() -> int:
    """1 if the last multirun of this process had a job that did not end `ok`, else 0."""
    return _EXIT["code"]


# ----------------------------------------------------------------------------- collecting
def _mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job directories of the latest launch into `sweep_dir`, in job order.

    A job directory is one with `.hydra/overrides.yaml`. Hydra rewrites that file for every
    job it starts, after writing `<sweep dir>/multirun.yaml`, so a job directory older than
    multirun.yaml belongs to an earlier, different sweep into the same directory. Both times
    come from the same filesystem, so login-node and compute-node clocks do not matter."""
    since = _mtime(sweep_dir / "multirun.yaml")
    jobs = []
    for root, dirs, _files in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS or d == ".hydra")
        if ".hydra" in dirs:
            dirs.remove(".hydra")
            stamp = _mtime(Path(root) / ".hydra" / "overrides.yaml")
            if stamp is not None and (since is None or stamp >= since) and Path(root) != sweep_dir:
                jobs.append(Path(root))
    return sorted(jobs, key=lambda p: [int(t) if t.isdigit() else t for t in p.relative_to(sweep_dir).parts])


def job_row(job_dir: Path, sweep_dir: Path) -> dict:
    """One summary row: the job's status, key figures and error from its results.json."""
    res = read_results(job_dir / "results.json")
    if not isinstance(res, dict):
        res = {"status": "failed", "error": "no readable results.json (the job died before writing it?)"}
    elif res.get("status") not in FINAL_STATUSES:  # "running": killed mid-job
        res = {**res, "status": "failed", "error": res.get("error") or f"job ended with status {res.get('status')}"}
    train = res.get("train") or {}
    fwd = largest_ok(res.get("bench"), "forward") or {}
    since = _mtime(sweep_dir / "multirun.yaml")
    stamp = _mtime(job_dir / "results.json")
    overrides = read_overrides(job_dir)
    return {
        "job": str(job_dir.relative_to(sweep_dir)), "variant": res.get("variant") or "?", "status": res["status"],
        "params": (res.get("model") or {}).get("params"),
        "forward_ms": fwd.get("median_ms"), "forward_T": fwd.get("seq_len"),
        "train_tokens_per_s": train.get("tokens_per_s"), "val_loss": train.get("val_loss"),
        "metric_name": train.get("metric_name"), "metric": train.get("metric"),
        "reused": bool(since and stamp and stamp < since and res["status"] == "ok"),  # skipped by resume=true
        "error": res.get("error"), "all_overrides": " ".join(overrides), "_overrides": overrides, "dir": str(job_dir),
    }


def _swept(rows: list[dict]) -> None:
    """Set `overrides` to the overrides whose values differ between jobs (what the sweep varies)."""
    parsed = [dict(o.lstrip("+~").partition("=")[::2] for o in r.pop("_overrides")) for r in rows]
    keys = [k for k in dict.fromkeys(k for p in parsed for k in p) if len({p.get(k) for p in parsed}) > 1]
    for r, p in zip(rows, parsed):
        r["overrides"] = " ".join(f"{k}={p[k]}" for k in keys if k in p)


def collect(sweep_dir: Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    rows = [job_row(j, sweep_dir) for j in find_jobs(sweep_dir)]
    _swept(rows)
    return rows


# ----------------------------------------------------------------------------- rendering
def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.{digits}g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def display_rows(rows: list[dict], error_width: Optional[int] = 80) -> tuple[list[str], list[dict]]:
    """Columns and formatted cells of the summary table (CSV keeps every raw field)."""
    out = []
    for r in rows:
        err = _fmt(r["error"])
        if error_width and len(err) > error_width:
            err = err[: error_width - 3] + "..."
        cell = {
            "job": r["job"], "variant": r["variant"], "overrides": _fmt(r["overrides"]),
            "status": r["status"] + (" (reused)" if r["reused"] else ""), "params": _fmt(r["params"]),
            "fwd ms": _fmt(r["forward_ms"]) + (f" @T={r['forward_T']}" if r["forward_T"] else ""),
            "train tok/s": _fmt(r["train_tokens_per_s"]), "val loss": _fmt(r["val_loss"]),
            "metric": f"{r['metric_name']} {_fmt(r['metric'])}" if r["metric_name"] else "-", "error": err,
        }
        out.append(cell)
    cols = list(out[0]) if out else []
    if not any(r["overrides"] for r in rows):
        cols.remove("overrides")
    return cols, out


NUMERIC = {"job", "params", "fwd ms", "train tok/s", "val loss"}


def format_table(rows: list[dict]) -> str:
    """Plain-text table: numbers right-aligned, text left-aligned."""
    cols, cells = display_rows(rows)
    widths = {c: max([len(c)] + [len(x[c]) for x in cells]) for c in cols}
    just = lambda c, v: v.rjust(widths[c]) if c in NUMERIC else v.ljust(widths[c])  # noqa: E731
    lines = ["  ".join(just(c, c) for c in cols).rstrip(), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(just(c, x[c]) for c in cols).rstrip() for x in cells]
    return "\n".join(lines)


def format_markdown(rows: list[dict]) -> str:
    cols, cells = display_rows(rows, error_width=None)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(esc(c[k]) for k in cols) + " |" for c in cells]
    return "\n".join(lines)


def write_summary(sweep_dir: Path, rows: list[dict], resume_cmd: Optional[str] = None) -> tuple[Path, Path]:
    """summary.csv (every field, raw values) and summary.md (the table) in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    n_bad = sum(r["status"] != "ok" for r in rows)
    md = [f"# Sweep {sweep_dir}", "", f"{len(rows)} jobs: {len(rows) - n_bad} ok, {n_bad} not ok.", "",
          format_markdown(rows), ""]
    if resume_cmd:
        md += ["Re-run the jobs that are not ok (ok jobs are skipped):", "", "```bash", resume_cmd, "```", ""]
    md_path.write_text("\n".join(md))
    return csv_path, md_path


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


# ----------------------------------------------------------------------------- before the sweep
def check_sweep_overrides(overrides: Sequence[str]) -> None:
    """Compose every value of every swept key once, without validating, so a value of the wrong
    type or an unknown key stops the sweep before any job starts with one ConfigError line.
    (Hydra's sweeper would also stop, with a multi-line message.) Values that compose but are
    invalid, such as attn.n_kv_heads=3 with 4 heads, are left to the jobs: they become failed rows."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import ConfigError, check_group_overrides, conf_dir, one_line_error

    check_group_overrides(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:
        raise ConfigError(one_line_error(exc)) from exc
    axes = {o.get_key_element(): list(o.sweep_string_iterator()) if o.is_discrete_sweep()
            else [o.get_value_element_as_str()] for o in parsed if not o.is_sweep_override() or o.is_discrete_sweep()}
    first = {k: v[0] for k, v in axes.items() if v}
    probes = [first] + [{**first, k: v} for k, vals in axes.items() for v in vals[1:]]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        for probe in probes:
            try:
                compose(config_name="config", overrides=[f"{k}={v}" for k, v in probe.items()])
            except Exception as exc:
                raise ConfigError(one_line_error(exc)) from exc
    GlobalHydra.instance().clear()


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
    from .job import new_results

    task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    try:
        return new_results(task_cfg)
    except Exception:  # a config that cannot even be resolved
        from .results import SCHEMA_VERSION

        return {"schema": SCHEMA_VERSION, "variant": None, "config": {}, "env": {}, "model": {}, "bench": []}


class SweepCallback(Callback):
    """Records jobs that raised and summarizes a multirun (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _EXIT["code"] = 0

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        exc = job_return._return_value
        log.error("job raised %s; recorded as failed", type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__))
        record_failure(Path(config.hydra.runtime.output_dir), config, exc)
        # A COMPLETED return keeps the sweeper from re-raising, so the summary still runs.
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = "failed"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect(sweep_dir)
        bad = [r for r in rows if r["status"] != "ok"]
        _EXIT["code"] = 1 if bad or not rows else 0
        cmd = resume_command(config, sweep_dir, rows) if bad else None
        write_summary(sweep_dir, rows, cmd)
        print(render(sweep_dir, rows, cmd), flush=True)


def render(sweep_dir: Path, rows: list[dict], resume_cmd: Optional[str]) -> str:
    bad = sum(r["status"] != "ok" for r in rows)
    reused = sum(r["reused"] for r in rows)
    head = f"sweep {sweep_dir}: {len(rows)} jobs, {len(rows) - bad} ok" + (f" ({reused} reused)" if reused else "")
    out = ["", head + (f", {bad} NOT OK" if bad else ""), ""]
    out += [format_table(rows)] if rows else ["(no job directories found)"]
    out += ["", f"summary: {sweep_dir / 'summary.md'}, {sweep_dir / 'summary.csv'}"]
    if resume_cmd:
        out += ["re-run the jobs that are not ok (ok jobs are skipped):", "  " + resume_cmd]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m attnbench.sweep SWEEP_DIR`: (re)write and print the summary of a sweep."""
    p = argparse.ArgumentParser(prog="python -m attnbench.sweep", description=main.__doc__)
    p.add_argument("sweep_dir", type=Path)
    args = p.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"attnbench.sweep: error: {args.sweep_dir}: no such directory", file=sys.stderr)
        return 2
    rows = collect(args.sweep_dir)
    cmd = None
    if any(r["status"] != "ok" for r in rows) and (args.sweep_dir / "multirun.yaml").is_file():
        cmd = resume_command(OmegaConf.load(args.sweep_dir / "multirun.yaml"), args.sweep_dir, rows)
    write_summary(args.sweep_dir, rows, cmd)
    print(render(args.sweep_dir, rows, cmd))
    return 1 if not rows or any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
