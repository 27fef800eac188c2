"""The keys a W&B run logged (its identity and the names of its history, summary and config keys), read from
its `.wandb` file once and cached beside the job.

`--wandb-dashboard` needs only which keys each job's W&B run logged, never the values; a full
`wandb_reader.read_run` decodes every value of every history and summary record (about 0.6 s for a
run of 2,000 steps here, 2 records per step), and keeps each history row as a dict. `read_keys`
parses the records without decoding a value and keeps sets of names, and writes what it found to
<job>/wandb/attnbench-keys.json, keyed by each `.wandb` file's name, size and mtime (ns): a report
over an unchanged sweep reads that JSON instead of the transaction logs. The cache is plain JSON
(never code); one that cannot be read or written is ignored (the `.wandb` file is read again).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .wandb_reader import RunIdentity, find_run_files, iter_records

log = logging.getLogger(__name__)

CACHE_FILE = "attnbench-keys.json"  # in <job>/wandb/, beside the run folders (W&B's sync ignores files there)
CACHE_VERSION = 1


@dataclass
class RunKeys(RunIdentity):
    """A W&B run's identity and the top-level keys it logged (history, summary, config), without values."""

    history_keys: frozenset = frozenset()
    summary: frozenset = frozenset()  # summary keys (as `.summary` so that dashboard code reads either kind)
    config: frozenset = frozenset()


def _top(item: Any) -> str:
    return item.nested_key[0] if item.nested_key else item.key


def scan(path: Path) -> RunKeys:
    """Read one `.wandb` file's identity and key names (no value is decoded)."""
    ident: dict = {}
    history: set[str] = set()
    summary: set[str] = set()
    config: set[str] = set()
    exit_code = None
    for rec in iter_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.update(_top(i) for i in rec.history.item)
        elif kind == "summary":
            summary.update(_top(i) for i in rec.summary.update)
            summary.difference_update(_top(i) for i in rec.summary.remove if len(i.nested_key) <= 1)
        elif kind == "run":
            r = rec.run
            ident = dict(run_id=r.run_id, project=r.project, name=r.display_name, group=r.run_group,
                         job_type=r.job_type)
            config.update(_top(i) for i in r.config.update)
        elif kind == "config":
            config.update(_top(i) for i in rec.config.update)
            config.difference_update(_top(i) for i in rec.config.remove if len(i.nested_key) <= 1)
        elif kind == "exit":
            exit_code = rec.exit.exit_code
    config.discard("_wandb")
    return RunKeys(path=Path(path), exit_code=exit_code, history_keys=frozenset(history),
                   summary=frozenset(summary), config=frozenset(config), **ident)


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _to_json(k: RunKeys) -> dict:
    return {"run_id": k.run_id, "project": k.project, "name": k.name, "group": k.group, "job_type": k.job_type,
            "exit_code": k.exit_code, "history_keys": sorted(k.history_keys), "summary": sorted(k.summary),
            "config": sorted(k.config)}


def _from_json(path: Path, d: dict) -> RunKeys:
    sets = {f: frozenset(map(str, d[f])) for f in ("history_keys", "summary", "config")}
    ident = {f: str(d[f]) for f in ("run_id", "project", "name", "group", "job_type")}
    code = d["exit_code"]
    return RunKeys(path=path, exit_code=code if isinstance(code, int) else None, **ident, **sets)


def _load_cache(wandb_dir: Path) -> dict:
    try:
        data = json.loads((wandb_dir / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("runs"), dict)
    return data["runs"] if ok else {}


def _save_cache(wandb_dir: Path, runs: dict) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=wandb_dir, prefix=f".{CACHE_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CACHE_VERSION, "runs": runs}, f)
        os.replace(tmp, wandb_dir / CACHE_FILE)
    except OSError as exc:  # a read-only sweep: read the .wandb files each time
        log.info("%s: cannot cache the W&B run keys (%s)", wandb_dir, exc)


def _cached(path: Path, hit: object, stamp: str) -> Optional[RunKeys]:
    """The cache entry's keys if it was made from this very file; None if stale or malformed."""
    if not isinstance(hit, dict) or hit.get("stamp") != stamp:
        return None
    try:
        return _from_json(path, hit["keys"])
    except (KeyError, TypeError):
        return None


def read_keys(run_dir: Path) -> list[RunKeys]:
    """The keys of every W&B run under <run_dir>/wandb, oldest first (as find_run_files), from the cache
    where a file is unchanged; a file that cannot be read is left out with a warning."""
    files = find_run_files(run_dir)
    if not files:
        return []
    wandb_dir = files[0].parent.parent
    cache, fresh, out = _load_cache(wandb_dir), {}, []
    for f in files:
        name = f"{f.parent.name}/{f.name}"
        try:
            stamp = _stamp(f)
            keys = _cached(f, cache.get(name), stamp) or scan(f)
        except Exception as exc:  # a torn or foreign file leaves that run out, not the dashboard
            log.warning("%s: cannot read this W&B run (%s); left out of the dashboard", f, exc)
            continue
        fresh[name] = {"stamp": stamp, "keys": _to_json(keys)}
        out.append(keys)
    if fresh != cache:
        _save_cache(wandb_dir, fresh)
    return out


__all__ = ["CACHE_FILE", "RunKeys", "read_keys", "scan"]
