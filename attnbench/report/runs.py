"""The report's input: the runs under some directories, read and named.

A `Run` is one job's results.json plus what Hydra (.hydra/overrides.yaml) and the
trainer (metrics.jsonl) left next to it. Runs that share a variant name (a kernel
sweep, an lr sweep) are told apart by the overrides in which they differ.
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

from ..track.results import read_results

log = logging.getLogger(__name__)

SKIP_DIRS = {"wandb", ".hydra", "__pycache__"}  # never hold a job's results.json


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

    @property
    def variant(self) -> str:
        return str(self.res.get("variant") or self.dir.name)

    @property
    def train(self) -> dict:
        return self.res.get("train") or {}


# ----------------------------------------------------------------------------- collecting
def _natural(path: Path) -> list:
    """Sort key so that sweep job 10 comes after job 9."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_results(paths: Sequence[Path]) -> list[Path]:
    """Every results.json under the paths (recursively), each once, in natural path order."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found[p.resolve()] = None
        elif not p.is_dir():
            raise FileNotFoundError(f"{p}: no such directory")
        for root, dirs, files in os.walk(p):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            if "results.json" in files:
                found[(Path(root) / "results.json").resolve()] = None
    return sorted(found, key=_natural)


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


def load_run(path: Path) -> Run:
    res = read_results(path)
    if not isinstance(res, dict):
        log.warning("%s: unreadable; listed as failed", path)
        res = {"status": "failed", "error": f"unreadable {path}", "variant": path.parent.name}
    return Run(dir=path.parent, res=res, overrides=read_overrides(path.parent), curve=read_curve(path.parent))


def collect(paths: Sequence[Path]) -> list[Run]:
    runs = [load_run(p) for p in find_results(paths)]
    if not runs:
        raise FileNotFoundError(f"no results.json under {', '.join(map(str, paths))}")
    return runs


# ----------------------------------------------------------------------------- naming
def _flat(obj: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(obj, dict):
        return {prefix: obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)}
    out: dict[str, str] = {}
    for k, v in obj.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _differing(dicts: list[dict]) -> list[str]:
    keys = dict.fromkeys(k for d in dicts for k in d)
    return [k for k in keys if len({d.get(k) for d in dicts}) > 1]


def distinguish(group: list[Run]) -> None:
    """Set `distinct` for runs sharing a variant name: the overrides whose values differ between them,
    else (no overrides.yaml, or runs from separate commands) the first differing resolved-config keys."""
    parsed = [dict(o.lstrip("+~").partition("=")[::2] for o in r.overrides) for r in group]
    keys = _differing(parsed)
    if keys:
        for r, p in zip(group, parsed):
            r.distinct = " ".join(f"{k}={p[k]}" for k in keys if k in p)
        return
    flat = [_flat(r.res.get("config") or {}) for r in group]
    keys = sorted(_differing(flat))[:3]
    for r, f in zip(group, flat):
        r.distinct = " ".join(f"{k}={f.get(k, '-')}" for k in keys)


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
    return _shorten(runs)


def _shorten(runs: list[Run]) -> str:
    tokens = [r.variant.split("-") for r in runs]
    common = ""
    for r in runs:
        r.short = ""
    if len(runs) > 1 and len({len(t) for t in tokens}) == 1:
        same = [len({t[i] for t in tokens}) == 1 for i in range(len(tokens[0]))]
        if not all(same):
            common = "-".join(tok if s else "*" for tok, s in zip(tokens[0], same))
            for r, t in zip(runs, tokens):
                r.short = "-".join(tok for tok, s in zip(t, same) if not s)
    for r in runs:
        base = r.short or r.variant
        r.short = r.label.replace(r.variant, base, 1)
    return common


# ----------------------------------------------------------------------------- bench rows
def num(x: Any) -> bool:
    """A real number (not None, bool or NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def largest_ok(bench: Optional[list], mode: str, key: str = "median_ms") -> Optional[dict]:
    """The ok bench row of `mode` at the largest sequence length that has `key`."""
    rows = [r for r in bench or [] if r.get("mode") == mode and r.get("status") == "ok" and num(r.get(key))]
    return max(rows, key=lambda r: r.get("seq_len") or 0) if rows else None
