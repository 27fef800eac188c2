"""results.json: construction, schema check and atomic writes.

Local files are the source of truth; W&B mirrors them. A file is written to a
temporary name and renamed, so a crash never leaves half a result behind, and a
finished ("ok") result is never overwritten by a later run (see `write_results`).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# "unreadable" is never written by a job: the report and the sweep summary give it to a torn results.json.
RUN_STATUSES = ("ok", "failed", "oom", "diverged", "interrupted", "running", "unreadable")
# A job that ended (not "running": killed mid-job; not "unreadable": a results.json that could not be read).
FINAL_STATUSES = tuple(s for s in RUN_STATUSES if s not in ("running", "unreadable"))
BENCH_STATUSES = ("ok", "oom", "skipped", "failed")
BENCH_KEYS = ("mode", "batch_size", "seq_len", "status", "median_ms", "p10_ms", "p90_ms", "repeats",
              "tokens_per_s", "peak_mem_bytes", "mfu")
MODEL_KEYS = ("params", "non_embedding_params", "flops_per_token_fwd", "flops_per_token_train",
              "kv_cache_bytes_per_token")
ENV_KEYS = ("device", "device_name", "torch", "threads", "dtype", "peak_flops")


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_results(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def check_results(res: dict) -> list[str]:
    """Schema problems of a results dict (empty list = valid)."""
    problems = []
    for key in ("schema", "status", "error", "variant", "config", "env", "model", "bench"):
        if key not in res:
            problems.append(f"missing key '{key}'")
    if res.get("status") not in RUN_STATUSES:
        problems.append(f"status={res.get('status')!r} not in {RUN_STATUSES}")
    if res.get("status") == "ok":
        problems += [f"model.{k} missing" for k in MODEL_KEYS if k not in res.get("model", {})]
        problems += [f"env.{k} missing" for k in ENV_KEYS if k not in res.get("env", {})]
    for i, row in enumerate(res.get("bench") or []):
        problems += [f"bench[{i}].{k} missing" for k in BENCH_KEYS if k not in row]
        if row.get("status") not in BENCH_STATUSES:
            problems.append(f"bench[{i}].status={row.get('status')!r}")
    return problems


def write_results(run_dir: Path, res: dict) -> Path:
    """Write run_dir/results.json atomically. An existing ok result of another run (a
    different config, or the same one re-run without resume=true) is kept, renamed
    results.<n>.json, never overwritten."""
    path = Path(run_dir) / "results.json"
    old = read_results(path)
    # A job replaces its own result only while that is unfinished, so an ok file here is another run's.
    if old and old.get("status") == "ok":
        n = 1
        while (path.parent / f"results.{n}.json").exists():
            n += 1
        os.replace(path, path.parent / f"results.{n}.json")
        log.warning("kept the earlier ok result as results.%d.json", n)
    write_json_atomic(path, res)
    return path
