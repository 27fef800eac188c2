"""Per-job rows of the report: `results.csv` (one row per job, every figure) and `bench.csv`."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..bench.modes import BENCH_MODES
from ..track import catalogue
from .format import peak_mem
from .runs import Run, largest_ok

BENCH_FIGURES = tuple(f.name for f in catalogue.BENCH)  # <mode>_<figure> columns, from the catalogue


def csv_row(run: Run) -> dict[str, Any]:
    """Every figure of a run as flat CSV columns (units in the names), in the catalogue's order."""
    res, env, tr = run.res, run.res.get("env") or {}, run.train
    row: dict[str, Any] = {"label": run.label, "variant": run.variant, "distinguishing_overrides": run.distinct,
                           "status": res.get("status"), "error": res.get("error"),
                           "overrides": " ".join(run.overrides), "run_dir": str(run.dir)}
    row.update({f.column: catalogue.value(res, f) for f in catalogue.MODEL})
    for mode in BENCH_MODES:
        row.update(point_figures(mode, largest_ok(res.get("bench"), mode) or {}))
    row["bench_points_not_ok"] = sum(1 for r in res.get("bench") or [] if r.get("status") != "ok")
    # the train figures, then the probes of the trained model (Findings 10, 11): each gets a mean ± CI per variant
    row.update({f.column: catalogue.value(res, f) for f in (*catalogue.TRAIN, *catalogue.PROBES)})
    by_len = tr.get("val_loss_by_len") if isinstance(tr.get("val_loss_by_len"), dict) else {}
    for t, v in sorted(by_len.items(), key=lambda kv: (not str(kv[0]).isdigit(), int(kv[0]) if str(kv[0]).isdigit()
                                                       else 0, str(kv[0]))):
        row[f"val_loss_T{t}"] = v
    row.update({f"env_{k}": env.get(k) for k in ("device", "device_name", "torch", "threads", "dtype")})
    return row


def point_figures(mode: str, pt: dict) -> dict[str, Any]:
    """One bench point as `<mode>_<figure>` columns; peak memory None below the instrument's resolution."""
    return {**{f"{mode}_{k}": pt.get(k) for k in BENCH_FIGURES}, f"{mode}_peak_mem_bytes": peak_mem(pt)}


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return path


def bench_rows(runs: list[Run]) -> list[dict]:
    return [{"label": r.label, "variant": r.variant, **row} for r in runs for row in r.res.get("bench") or []
            if isinstance(row, dict)]
