"""The report's and the sweep summary's input: the jobs under some directories, read and named.

A `Run` is one job: its results.json plus what Hydra (.hydra/overrides.yaml) and the
trainer (metrics.jsonl) left next to it. `collect` is the one job discovery of the
package (the report and `python -m attnbench.sweep` both use it): a job directory is one
with a results.json or a .hydra/overrides.yaml. A results.json that cannot be read (torn,
not a JSON object, sections of the wrong type) becomes a run with status `unreadable` and
the reason, never an exception. Runs that share a variant name (a kernel sweep, an lr
sweep) are told apart by the overrides in which they differ.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..track.wandb_sink import flatten
from .format import num

log = logging.getLogger(__name__)

SKIP_DIRS = {"wandb", ".hydra", "__pycache__", ".submitit", "report"}  # never job directories
MISSING = "no readable results.json (the job died before writing it?)"
SECTIONS = {"config": dict, "env": dict, "model": dict, "train": dict, "bench": list}
# Bookkeeping keys of the resolved config: they never make two jobs different variants
# (the same keys config.naming.config_hash leaves out).
BOOKKEEPING = ("hydra", "resume", "train.resume", "logger")


@dataclass
class Run:
    """One job: its results.json plus what Hydra and the trainer left next to it."""

    dir: Path
    res: dict
    overrides: list = field(default_factory=list)  # <run dir>/.hydra/overrides.yaml
    curve: list = field(default_factory=list)  # <run dir>/metrics.jsonl rows
    distinct: str = ""  # the overrides that tell it apart from runs with the same variant name
    label: str = ""  # unique name in the table
    short: str = ""  # legend name: the variant without the parts that every run shares
    stamp: Optional[float] = None  # mtime of .hydra/overrides.yaml (when Hydra started the job)

    @property
    def variant(self) -> str:
        return str(self.res.get("variant") or self.dir.name)

    @property
    def status(self) -> str:
        return str(self.res.get("status"))

    @property
    def ok(self) -> bool:
        return self.res.get("status") == "ok"

    @property
    def train(self) -> dict:
        return self.res.get("train") or {}

    @property
    def config(self) -> dict:
        return self.res.get("config") or {}


# ----------------------------------------------------------------------------- collecting
def _natural(path: Path) -> list:
    """Sort key so that sweep job 10 comes after job 9."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(path)) if p]


def _mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def find_jobs(paths: Sequence[Path], latest_launch: bool = False) -> list[Path]:
    """Every job directory under the paths (recursively), each once, in natural path order.

    With `latest_launch`, a job directory whose .hydra/overrides.yaml is older than the
    multirun.yaml above it is left out: Hydra rewrites that file for every job it starts,
    after writing multirun.yaml, so such a job belongs to an earlier sweep into the same
    directory. Both times come from one filesystem, so node clocks do not matter."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found[p.parent.resolve()] = None
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such directory")
        launched: dict[Path, Optional[float]] = {}
        for root, dirs, files in os.walk(p):
            here = Path(root)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            launched[here] = _mtime(here / "multirun.yaml") if "multirun.yaml" in files else launched.get(here.parent)
            has_hydra = (here / ".hydra" / "overrides.yaml").is_file()
            if "results.json" not in files and not has_hydra:
                continue
            since = launched[here]
            if latest_launch and has_hydra and since is not None \
                    and (_mtime(here / ".hydra" / "overrides.yaml") or 0.0) < since:
                continue
            found[here.resolve()] = None
    return sorted(found, key=_natural)


def find_results(paths: Sequence[Path]) -> list[Path]:
    """Every results.json under the paths, each once, in natural path order."""
    return [d / "results.json" for d in find_jobs(paths) if (d / "results.json").is_file()]


def read_overrides(run_dir: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


def read_curve(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows; a torn or foreign line is skipped, not fatal."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_job_results(path: Path) -> tuple[dict, Optional[str]]:
    """(results, None), or ({}, why it cannot be used). A missing file is MISSING."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}, MISSING
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"results.json cannot be read: {type(exc).__name__}: {exc}"
    try:
        res = json.loads(text)
    except ValueError as exc:
        return {}, f"results.json is truncated or not JSON ({exc})"
    if not isinstance(res, dict):
        return {}, f"results.json holds a JSON {type(res).__name__}, not an object"
    for key, kind in SECTIONS.items():
        if res.get(key) is not None and not isinstance(res[key], kind):
            return {}, f"results.json: '{key}' is a {type(res[key]).__name__}, not a{'n object' if kind is dict else ' list'}"
    if any(not isinstance(row, dict) for row in res.get("bench") or []):
        return {}, "results.json: 'bench' holds a row that is not an object"
    return res, None


def load_run(job_dir: Path) -> Run:
    job_dir = Path(job_dir)
    res, why = read_job_results(job_dir / "results.json")
    if why == MISSING:
        res = {"status": "failed", "error": MISSING}
    elif why:
        log.warning("%s: %s; listed as unreadable", job_dir, why)
        res = {"status": "unreadable", "error": why}
    return Run(dir=job_dir, res=res, overrides=read_overrides(job_dir), curve=read_curve(job_dir),
               stamp=_mtime(job_dir / ".hydra" / "overrides.yaml"))


def collect(paths: Sequence[Path], latest_launch: bool = False, require: bool = True) -> list[Run]:
    """Every job under the paths as a Run (see find_jobs). Without any, FileNotFoundError if `require`."""
    runs = [load_run(d) for d in find_jobs(paths, latest_launch)]
    if not runs and require:
        raise FileNotFoundError(f"no results.json under {', '.join(map(str, paths))}")
    return runs


# ----------------------------------------------------------------------------- configs and overrides
def _value(v: Any) -> Any:
    """A hashable config value: lists (and dicts inside lists) become their JSON text."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def flat_config(config: dict, drop: Sequence[str] = BOOKKEEPING) -> dict[str, Any]:
    """The resolved config with dotted keys and hashable values, minus the `drop` keys (and what is under them)."""
    out = {k: _value(v) for k, v in flatten(config or {}).items()}
    return {k: v for k, v in out.items() if not any(k == d or k.startswith(d + ".") for d in drop)}


def differing(dicts: Sequence[dict]) -> list[str]:
    """The keys whose values are not the same in every dict, in first-seen order."""
    keys = dict.fromkeys(k for d in dicts for k in d)
    return [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    return dict(o.lstrip("+~").partition("=")[::2] for o in overrides)


def differing_overrides(override_lists: Sequence[Sequence[str]]) -> list[str]:
    """For each job, its overrides whose values differ between the jobs ("attn=mha train.lr=1e-3")."""
    parsed = [parse_overrides(o) for o in override_lists]
    keys = differing(parsed)
    return [" ".join(f"{k}={p[k]}" for k in keys if k in p) for p in parsed]


def distinguish(group: list[Run]) -> None:
    """Set `distinct` for runs sharing a variant name: the overrides whose values differ between them,
    else (no overrides.yaml, or runs from separate commands) the first differing resolved-config keys."""
    distinct = differing_overrides([r.overrides for r in group])
    if any(distinct):
        for r, d in zip(group, distinct):
            r.distinct = d
        return
    flat = [flat_config(r.config, drop=()) for r in group]
    keys = sorted(differing(flat))[:3]
    for r, f in zip(group, flat):
        r.distinct = " ".join(f"{k}={_show(f.get(k, '-'))}" for k in keys)


def _show(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def name_runs(runs: list[Run]) -> str:
    """Unique table labels and short legend labels; returns the variant parts every run shares
    ("*-*-layernorm-gelu-L2-D64"), which go into the plot titles."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[r.variant].append(r)
    for group in groups.values():
        if len(group) > 1:
            distinguish(group)
    for r in runs:
        r.label = r.variant + (f" [{r.distinct}]" if r.distinct else "")
    for label, n in Counter(r.label for r in runs).items():
        if n > 1:  # the same config run twice: the directory tells them apart
            for r in (r for r in runs if r.label == label):
                r.label += f" ({'/'.join(r.dir.parts[-2:])})"
    shorts, common = shorten([r.variant for r in runs], [r.label for r in runs])
    for r, s in zip(runs, shorts):
        r.short = s
    return common


def shorten(names: Sequence[str], labels: Sequence[str]) -> tuple[list[str], str]:
    """Labels without the dash-separated parts of `names` that all share; and those parts ("*-rope-...")."""
    tokens = [n.split("-") for n in names]
    common, short = "", [""] * len(names)
    if len(names) > 1 and len({len(t) for t in tokens}) == 1:
        same = [len({t[i] for t in tokens}) == 1 for i in range(len(tokens[0]))]
        if not all(same):
            common = "-".join(tok if s else "*" for tok, s in zip(tokens[0], same))
            short = ["-".join(tok for tok, s in zip(t, same) if not s) for t in tokens]
    return [lab.replace(n, s or n, 1) for n, lab, s in zip(names, labels, short)], common


# ----------------------------------------------------------------------------- bench rows
def largest_ok(bench: Optional[list], mode: str, key: str = "median_ms") -> Optional[dict]:
    """The ok bench row of `mode` at the largest sequence length that has `key`."""
    rows = [r for r in bench or [] if isinstance(r, dict) and r.get("mode") == mode and r.get("status") == "ok"
            and num(r.get(key))]
    return max(rows, key=lambda r: r.get("seq_len") or 0) if rows else None


__all__ = ["BOOKKEEPING", "MISSING", "Run", "collect", "differing", "differing_overrides", "distinguish",
           "find_jobs", "find_results", "flat_config", "largest_ok", "load_run", "name_runs", "num",
           "parse_overrides", "read_curve", "read_job_results", "read_overrides", "shorten"]
