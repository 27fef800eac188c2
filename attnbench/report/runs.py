"""The report's and the sweep summary's input: the jobs under some directories, read and named.

A `Run` is one job: its results.json plus what Hydra (.hydra/overrides.yaml) left next to it;
its logged history (metrics.jsonl) is read only where it is drawn, as columns (track/history.py). `collect` is the one job discovery of the
package (the report and `python -m attnbench.sweep` both use it): a job directory is one
with a results.json or a .hydra/overrides.yaml. A results.json that cannot be read (torn,
not a JSON object, sections of the wrong type) becomes a run with status `unreadable` and
the reason, never an exception. Runs that share a variant name (a kernel sweep, an lr
sweep) are told apart by the overrides in which they differ.

`job_set` is the one rule for which jobs count: by default the latest launch of each sweep
directory (a sweep re-launched into its directory with fewer jobs leaves the earlier jobs
behind), told by the launch ids of track/launch.py, never by file times; a job whose launch
cannot be told is counted (and listed as such).
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

from ..track.launch import EARLIER, UNKNOWN, Membership, is_sweep_dir, job_launch, sweep_launch
from ..track.wandb_sink import flatten
from .format import num

log = logging.getLogger(__name__)

SKIP_DIRS = {"wandb", ".hydra", "__pycache__", ".submitit", "report"}  # never job directories
MISSING = "no readable results.json (the job died before writing it?)"
SECTIONS = {"config": dict, "env": dict, "model": dict, "train": dict, "bench": list}
# Bookkeeping keys of the resolved config: they never make two jobs different variants
# (the same keys config.naming.config_hash leaves out).
BOOKKEEPING = ("hydra", "resume", "train.resume", "logger", "launch_id")


@dataclass
class Run:
    """One job: its results.json plus what Hydra and the trainer left next to it."""

    dir: Path
    res: dict
    overrides: list = field(default_factory=list)  # <run dir>/.hydra/overrides.yaml
    distinct: str = ""  # the overrides that tell it apart from runs with the same variant name
    label: str = ""  # unique name in the table
    short: str = ""  # legend name: the variant without the parts that every run shares
    launch: Optional[Membership] = None  # its place among its sweep directory's launches (track/launch.py)

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


def _walk(paths: Sequence[Path]) -> dict[Path, Optional[Path]]:
    """Every job directory under the paths (recursively) → the sweep directory it sits in (the
    nearest one above it with multirun.yaml or launch.json inside the walk), or None."""
    found: dict[Path, Optional[Path]] = {}
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found.setdefault(p.parent.resolve(), None)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such directory")
        sweeps: dict[Path, Optional[Path]] = {}
        for root, dirs, files in os.walk(p):
            here = Path(root)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            sweeps[here] = here.resolve() if is_sweep_dir(here) else sweeps.get(here.parent)
            if "results.json" in files or (here / ".hydra" / "overrides.yaml").is_file():
                found[here.resolve()] = sweeps[here]
    return found


def find_jobs(paths: Sequence[Path], latest_launch: bool = False) -> list[Path]:
    """Every job directory under the paths (recursively), each once, in natural path order.

    With `latest_launch`, a job that an earlier launch into the same sweep directory started is
    left out: the launch ids of track/launch.py tell (never file times, which a copy changes).
    A job whose launch cannot be told is kept."""
    if not latest_launch:
        return sorted(_walk(paths), key=_natural)
    return [r.dir for r in job_set(paths, require=False).runs]


def find_results(paths: Sequence[Path]) -> list[Path]:
    """Every results.json under the paths, each once, in natural path order."""
    return [d / "results.json" for d in find_jobs(paths) if (d / "results.json").is_file()]


def read_overrides(run_dir: Path) -> list[str]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    try:  # libyaml's loader where PyYAML has it: 10x the pure-Python one, once per job
        data = yaml.load((run_dir / ".hydra" / "overrides.yaml").read_text(), Loader=loader)
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


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


def load_run(job_dir: Path, sweep_dir: Optional[Path] = None) -> Run:
    job_dir = Path(job_dir)
    res, why = read_job_results(job_dir / "results.json")
    if why == MISSING:
        res = {"status": "failed", "error": MISSING}
    elif why:
        log.warning("%s: %s; listed as unreadable", job_dir, why)
        res = {"status": "unreadable", "error": why}
    launch = Membership(sweep_dir, sweep_launch(sweep_dir) if sweep_dir else None, job_launch(job_dir, res))
    return Run(dir=job_dir, res=res, overrides=read_overrides(job_dir), launch=launch)


@dataclass
class JobSet:
    """The jobs a report or a sweep summary counts, and those it leaves out."""

    runs: list[Run]  # counted: the latest launch of each sweep directory, jobs outside sweeps, unknowns
    earlier: list[Run] = field(default_factory=list)  # of an earlier launch into the same directory: left out

    @property
    def unknown(self) -> list[Run]:
        """Counted, though their launch cannot be told (a sweep from before launch ids, a job that died early)."""
        return [r for r in self.runs if r.launch is not None and r.launch.state == UNKNOWN]

    def notes(self, flag: str) -> list[str]:
        """What the count leaves out or cannot tell, one line each (the summary and the report print them);
        `flag` is the option that counts every launch."""
        out = []
        if n := len(self.earlier):
            out.append(f"{n} job{'s' * (n != 1)} of earlier launches into the same directory left out; "
                       f"{flag} counts them")
        if n := len(self.unknown):
            out.append(f"{n} job{'s' * (n != 1)} counted whose launch cannot be told (no launch record: "
                       "a sweep from before launch ids, or a job that died before writing one)")
        return out


def job_set(paths: Sequence[Path], all_launches: bool = False, require: bool = True) -> JobSet:
    """The jobs under the paths, by the one rule that the report and the sweep summary share: by
    default only the latest launch of each sweep directory; `all_launches` counts every job.
    Without any job, FileNotFoundError if `require`."""
    runs = [load_run(d, sweep) for d, sweep in sorted(_walk(paths).items(), key=lambda kv: _natural(kv[0]))]
    if not runs and require:
        raise FileNotFoundError(f"no results.json under {', '.join(map(str, paths))}")
    if all_launches:
        return JobSet(runs)
    is_earlier = [r.launch is not None and r.launch.state == EARLIER for r in runs]
    return JobSet([r for r, e in zip(runs, is_earlier) if not e], [r for r, e in zip(runs, is_earlier) if e])


def collect(paths: Sequence[Path], latest_launch: bool = False, require: bool = True) -> list[Run]:
    """Every job under the paths as a Run (only the latest launches with `latest_launch`, see job_set).
    Without any, FileNotFoundError if `require`."""
    return job_set(paths, all_launches=not latest_launch, require=require).runs


# ----------------------------------------------------------------------------- configs and overrides
def _value(v: Any) -> Any:
    """A hashable config value: lists (and dicts inside lists) become their JSON text."""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def flat_config(config: dict, drop: Sequence[str] = BOOKKEEPING) -> dict[str, Any]:
    """The resolved config with dotted keys and hashable values, minus the `drop` keys (and what is under them)."""
    out = {k: _value(v) for k, v in flatten(config or {}).items()}
    under = tuple(d + "." for d in drop)
    return {k: v for k, v in out.items() if k not in drop and not k.startswith(under)}


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
    flat = [flat_config(r.config, drop=("launch_id",)) for r in group]  # a launch is not a difference
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


__all__ = ["BOOKKEEPING", "MISSING", "JobSet", "Run", "collect", "differing", "differing_overrides", "distinguish",
           "find_jobs", "find_results", "flat_config", "job_set", "largest_ok", "load_run", "name_runs", "num",
           "parse_overrides", "read_job_results", "read_overrides", "shorten"]
