"""Per-job rows of the report: `results.csv` (one row per job, every figure) and `bench.csv`."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..bench.modes import BENCH_MODES
from .format import peak_mem
from .runs import Run, largest_ok

BENCH_FIGURES = ("seq_len", "median_ms", "p10_ms", "p90_ms", "tokens_per_s", "peak_mem_bytes", "mfu")  # <mode>_<figure>

def csv_row(run: Run) -> dict[str, Any]:
    """Every figure of a run as flat CSV columns (units in the names)."""
    res, m, env, tr = run.res, run.res.get("model") or {}, run.res.get("env") or {}, run.train
    row: dict[str, Any] = {"label": run.label, "variant": run.variant, "distinguishing_overrides": run.distinct,
                           "status": res.get("status"), "error": res.get("error"),
                           "overrides": " ".join(run.overrides), "run_dir": str(run.dir)}
    row.update({k: m.get(k) for k in ("params", "non_embedding_params", "flops_per_token_fwd",
                                      "flops_per_token_train", "kv_cache_bytes_per_token", "recurrent_state_bytes")})
    for mode in BENCH_MODES:
        row.update(point_figures(mode, largest_ok(res.get("bench"), mode) or {}))
    row["bench_points_not_ok"] = sum(1 for r in res.get("bench") or [] if r.get("status") != "ok")
    for k in ("status", "steps", "tokens", "wall_s", "tokens_per_s", "train_loss", "val_loss", "metric_name", "metric"):
        row[f"train_{k}" if k in ("status", "steps", "tokens", "wall_s", "tokens_per_s") else k] = tr.get(k)
    # probes of the trained model (Findings 10, 11): the report gives each a mean ± CI per variant
    row.update({k: tr.get(k) for k in ("max_attn_logit", "first_token_attn", "first_token_attn_max", "max_activation",
                                       "mean_gate")})
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
