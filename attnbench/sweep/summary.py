"""The multirun summary: every job of a sweep's latest launch as one row, as a table, CSV and Markdown.

The jobs and their statuses come from sweep/jobs.py: the launch's own record of its jobs
(launch.json, launch_jobs.json), each job's files where they are this launch's, and SLURM for jobs it may still
have (`pending`, `missing`, `running`). The figures come from the files the jobs left
(results.json) through the report's job discovery (report/runs.py), so it works for any launcher, can be rebuilt later
(`python -m attnbench.sweep SWEEP_DIR`) and never stops on a torn results.json (that job
is a row with status `unreadable` and the reason). When the sweep has replicates (several
jobs of one variant, e.g. seed=0,1,2), the table is one row per variant with n and
mean ± 95% CI, grouped as the report groups them (report/variants.py); summary.csv keeps
every job.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from ..report.format import fmt, markdown_table, text_table
from ..report.runs import JobSet, Run, differing_overrides, largest_ok
from ..track import catalogue
from .jobs import LaunchJob, LaunchJobs, launch_jobs

# The summary's own figures first (forward_ms/forward_T: the forward bench at its largest T), then its
# bookkeeping, then every other figure of the catalogue (track/catalogue.py), so that a new one reaches summary.csv.
OTHER_FIGURES = catalogue.summary_others()
COLUMNS = ("job", "variant", "overrides", "status", *catalogue.SUMMARY_FIRST, "reused", "error", "all_overrides", "dir",
           "compare_variant", "num", "started", "trusted", "final", "slurm_job_id", "slurm_state",
           *(f.summary_column for f in OTHER_FIGURES))


# ----------------------------------------------------------------------------- collecting
def job_row(run: Run, sweep_dir: Path, job: LaunchJob) -> dict:
    """One summary row: the job's status as the launch states it (jobs.py), key figures from its results.json."""
    res = run.res if job.trusted else {}
    train = res.get("train") or {}
    fwd = largest_ok(res.get("bench"), "forward") or {}
    try:
        name = str(job.dir.relative_to(Path(sweep_dir).resolve()))
    except ValueError:
        name = str(job.dir)
    return {
        "job": name, "variant": res.get("variant") or ("?" if job.trusted else "-"), "status": job.status,
        "params": (res.get("model") or {}).get("params"),
        "forward_ms": fwd.get("median_ms"), "forward_T": fwd.get("seq_len"),
        "train_tokens_per_s": train.get("tokens_per_s"), "val_loss": train.get("val_loss"),
        "metric_name": train.get("metric_name"), "metric": train.get("metric"),
        "reused": job.reused, "error": job.error, "all_overrides": " ".join(job.overrides), "dir": str(job.dir),
        "num": job.num, "started": job.started, "trusted": job.trusted, "final": job.final,
        "slurm_job_id": job.slurm_job_id, "slurm_state": job.slurm_state,
        **{f.summary_column: catalogue.value(res, f) for f in OTHER_FIGURES},
    }


def collect_job_set(sweep_dir: Path, all_launches: bool = False, ended: bool = False) -> tuple[LaunchJobs, list[dict]]:
    """The jobs of `sweep_dir` the summary counts (jobs.py: every job of the latest launch, from its
    record; every job directory with `all_launches`) and their summary rows (same order). `ended`:
    the launcher asks, after every job returned (nothing is asked of SLURM)."""
    sweep_dir = Path(sweep_dir)
    launch = launch_jobs(sweep_dir, all_launches=all_launches, ended=ended)
    rows = [job_row(r, sweep_dir, j) for r, j in zip(launch.runs, launch.jobs)]
    for row, swept in zip(rows, differing_overrides([j.overrides for j in launch.jobs])):
        row["overrides"] = swept  # only what the sweep varies
    for row, run in zip(rows, launch.runs):  # the statistics only count ok jobs: keep the summary's verdict
        if row["status"] != run.res.get("status"):
            run.res = {**run.res, "status": row["status"], "error": row["error"]}
    return launch, rows


def collect_jobs(sweep_dir: Path) -> tuple[list[Run], list[dict]]:
    """The latest launch's jobs of `sweep_dir` as Runs and as summary rows (same order)."""
    launch, rows = collect_job_set(sweep_dir)
    return list(launch.runs), rows


def collect(sweep_dir: Path) -> list[dict]:
    return collect_jobs(sweep_dir)[1]


def launch_notes(launch: LaunchJobs, flag: str) -> list[str]:
    """What the count leaves out or cannot tell, one line each."""
    started = [r for r, j in zip(launch.runs, launch.jobs) if j.started]
    notes = JobSet(started, list(launch.earlier)).notes(flag=flag)
    if not launch.planned and launch.launch_id:
        notes.append("the launch record lists no jobs (a launch from before job lists were recorded, or a sweeper "
                     "that picks its jobs as it goes): jobs that never started are not counted")
    if launch.slurm_error:
        notes.append(launch.slurm_error)
    return notes


# ----------------------------------------------------------------------------- variants
def variant_table(runs: list[Run], rows: list[dict]) -> Optional[tuple[list[str], list[list[str]]]]:
    """(columns, cells) of the one-row-per-variant table, or None when no variant has replicates.
    Also sets each row's `compare_variant`."""
    from ..report.markdown import variant_columns
    from ..report.variants import group, run_variant

    pairs = [(r, w) for r, w in zip(runs, rows) if w.get("trusted", True)]  # no result of its own: no config
    runs, rows = [r for r, _ in pairs], [w for _, w in pairs]
    if not runs:
        return None
    comp = group(runs)
    of = run_variant(comp)
    for row, run in zip(rows, runs):
        row["compare_variant"] = of[id(run)][0]
    if all(len(v.runs) < 2 for v in comp.variants):
        return None
    cols = variant_columns(comp)
    return [h for h, _ in cols], [[c[i] for _, c in cols] for i in range(len(comp.variants))]


# ----------------------------------------------------------------------------- rendering
def _shared(rows: list[dict], key: str) -> Any:
    """The value of `key` when every row that has one agrees, else None."""
    values = {r[key] for r in rows if r[key] is not None}
    return values.pop() if len(values) == 1 else None


def display_rows(rows: list[dict], error_width: Optional[int] = 80) -> tuple[list[str], list[dict]]:
    """Columns and formatted cells of the per-job table (the CSV keeps every raw field). A sequence
    length or metric name that all jobs share goes into the column header instead of each cell."""
    T, metric = _shared(rows, "forward_T"), _shared(rows, "metric_name")
    fwd_col = f"fwd ms (T={T})" if T else "fwd ms"
    metric_col = metric or "metric"
    out = []
    for r in rows:
        err = fmt(r["error"])
        if error_width and len(err) > error_width:
            err = err[: error_width - 3] + "..."
        fwd = fmt(r["forward_ms"]) + (f" @T={r['forward_T']}" if r["forward_T"] and not T else "")
        met = fmt(r["metric"]) if metric or not r["metric_name"] else f"{r['metric_name']} {fmt(r['metric'])}"
        out.append({
            "job": r["job"], "variant": r["variant"], "overrides": fmt(r["overrides"]),
            "status": r["status"] + (" (reused)" if r["reused"] else ""), "params": fmt(r["params"]),
            fwd_col: fwd, "train tok/s": fmt(r["train_tokens_per_s"]), "val loss": fmt(r["val_loss"]),
            metric_col: met, "error": err,
        })
    cols = list(out[0]) if out else []
    if "overrides" in cols and not any(r["overrides"] for r in rows):
        cols.remove("overrides")
    return cols, out


TEXT = {"job", "variant", "overrides", "status", "error"}


def format_table(rows: list[dict]) -> str:
    """Plain-text per-job table: numbers right-aligned, text left-aligned."""
    cols, cells = display_rows(rows)
    return text_table(cells, cols, left=TEXT)


def format_markdown(rows: list[dict]) -> str:
    cols, cells = display_rows(rows, error_width=None)
    return markdown_table(cols, [[c[k] for k in cols] for c in cells]) if cols else "(no job directories found)"


def _variant_text(table: tuple[list[str], list[list[str]]]) -> str:
    cols, cells = table
    return text_table([dict(zip(cols, row)) for row in cells], cols, left={"variant"})


NOTE = ("One row per variant (the jobs' config minus `seed`): mean ± half-width of the 95% confidence "
        "interval of the mean over its ok jobs (Student t); n counts ok jobs, jobs not ok are counted after it.")


def write_summary(sweep_dir: Path, rows: list[dict], resume_cmd: Optional[str] = None,
                  runs: Optional[list[Run]] = None, notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """summary.csv (every job, raw values) and summary.md (the variant table when the sweep has
    replicates, then every job) in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    if runs is None:
        runs = collect_jobs(sweep_dir)[0]
    table = variant_table(runs, rows) if len(runs) == len(rows) else None
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    n_bad = sum(r["status"] != "ok" for r in rows)
    md = [f"# Sweep {sweep_dir}", "", f"{len(rows)} jobs: {len(rows) - n_bad} ok, {n_bad} not ok{breakdown(rows)}.", ""]
    md += [f"{n[0].upper()}{n[1:]}." for n in notes] + ([""] if notes else [])
    if table:
        md += ["## Variants", "", markdown_table(*table), "", NOTE, "", "## Jobs", ""]
    md += [format_markdown(rows), ""]
    if resume_cmd:
        md += ["Re-run the jobs that are not ok (ok jobs are skipped):", "", "```bash", resume_cmd, "```", ""]
    md_path.write_text("\n".join(md))
    return csv_path, md_path


def breakdown(rows: list[dict]) -> str:
    """": 2 missing, 1 pending" — the statuses of the jobs that are not ok, most frequent first."""
    counts = Counter(r["status"] for r in rows if r["status"] != "ok")
    return (": " + ", ".join(f"{n} {s}" for s, n in counts.most_common())) if counts else ""


def render(sweep_dir: Path, rows: list[dict], resume_cmd: Optional[str], runs: Optional[list[Run]] = None,
           notes: Sequence[str] = ()) -> str:
    """The text printed at the end of a sweep: the variant table when the sweep has replicates (then only
    the jobs that are not ok), else every job."""
    if runs is None:
        runs = collect_jobs(sweep_dir)[0]
    bad = [r for r in rows if r["status"] != "ok"]
    reused = sum(r["reused"] for r in rows)
    head = f"sweep {sweep_dir}: {len(rows)} jobs, {len(rows) - len(bad)} ok" + (f" ({reused} reused)" if reused else "")
    out = ["", head + (f", {len(bad)} NOT OK{breakdown(rows)}" if bad else ""), *[f"  ({n})" for n in notes], ""]
    table = variant_table(runs, rows) if rows and len(runs) == len(rows) else None
    if table:
        out += [_variant_text(table), "", "(mean ± 95% CI over seeds; n = ok jobs)"]
        if bad:
            out += ["", "jobs not ok:", format_table(bad)]
    else:
        out += [format_table(rows)] if rows else ["(no job directories found)"]
    out += ["", f"summary: {sweep_dir / 'summary.md'}, {sweep_dir / 'summary.csv'}"]
    if resume_cmd:
        out += ["re-run the jobs that are not ok (ok jobs are skipped):", "  " + resume_cmd]
    return "\n".join(out)
