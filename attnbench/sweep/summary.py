"""The multirun summary: every job of a sweep directory as one row, as a table, CSV and Markdown.

Read from the files the jobs left (results.json, .hydra/overrides.yaml), so it works for
any launcher and can be rebuilt later (`python -m attnbench.sweep SWEEP_DIR`).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Optional

from ..report.runs import largest_ok, read_overrides
from ..track.results import read_results

FINAL_STATUSES = ("ok", "failed", "oom", "diverged", "interrupted")
COLUMNS = ("job", "variant", "overrides", "status", "params", "forward_ms", "forward_T",
           "train_tokens_per_s", "val_loss", "metric_name", "metric", "reused", "error", "all_overrides", "dir")
SKIP_DIRS = {".submitit", "wandb", "report", "__pycache__"}


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


def _shared(rows: list[dict], key: str) -> Any:
    """The value of `key` when every row that has one agrees, else None."""
    values = {r[key] for r in rows if r[key] is not None}
    return values.pop() if len(values) == 1 else None


def display_rows(rows: list[dict], error_width: Optional[int] = 80) -> tuple[list[str], list[dict]]:
    """Columns and formatted cells of the summary table (the CSV keeps every raw field). A sequence
    length or metric name that all jobs share goes into the column header instead of each cell."""
    T, metric = _shared(rows, "forward_T"), _shared(rows, "metric_name")
    fwd_col = f"fwd ms (T={T})" if T else "fwd ms"
    metric_col = metric or "metric"
    out = []
    for r in rows:
        err = _fmt(r["error"])
        if error_width and len(err) > error_width:
            err = err[: error_width - 3] + "..."
        fwd = _fmt(r["forward_ms"]) + (f" @T={r['forward_T']}" if r["forward_T"] and not T else "")
        met = _fmt(r["metric"]) if metric or not r["metric_name"] else f"{r['metric_name']} {_fmt(r['metric'])}"
        out.append({
            "job": r["job"], "variant": r["variant"], "overrides": _fmt(r["overrides"]),
            "status": r["status"] + (" (reused)" if r["reused"] else ""), "params": _fmt(r["params"]),
            fwd_col: fwd, "train tok/s": _fmt(r["train_tokens_per_s"]), "val loss": _fmt(r["val_loss"]),
            metric_col: met, "error": err,
        })
    cols = list(out[0]) if out else []
    if not any(r["overrides"] for r in rows):
        cols.remove("overrides")
    return cols, out


TEXT = {"variant", "overrides", "status", "error"}


def format_table(rows: list[dict]) -> str:
    """Plain-text table: numbers right-aligned, text left-aligned."""
    cols, cells = display_rows(rows)
    widths = {c: max([len(c)] + [len(x[c]) for x in cells]) for c in cols}
    just = lambda c, v: v.ljust(widths[c]) if c in TEXT else v.rjust(widths[c])  # noqa: E731
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
