"""`python -m attnbench.report PATH [PATH ...]`: every results.json under the paths → a comparison report.

Writes into `--out` (default `<first PATH>/report/`): `report.md` (one table row per
run), `results.csv` (the same runs, machine-readable, every figure), `bench.csv` (every
bench row of every run) and PNG plots (see plots.py). Failed jobs are rows with their
status and error; plots skip what they lack. `--wandb` also logs the table and the
plots to one W&B "report" run in the sweep's group (offline unless told otherwise).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import plots
from .results import read_results

log = logging.getLogger(__name__)

SKIP_DIRS = {"wandb", ".hydra", "__pycache__"}  # never hold a job's results.json
BENCH_MODES = ("forward", "train_step", "prefill", "decode")
PLOTS = {"latency": "latency_vs_seq_len.png", "memory": "memory_vs_seq_len.png", "training": "training_curves.png",
         "extrapolation": "val_loss_vs_len.png", "pareto": "quality_vs_throughput.png"}


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


# ----------------------------------------------------------------------------- figures per run
def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def largest_ok(bench: Optional[list], mode: str, key: str = "median_ms") -> Optional[dict]:
    """The ok bench row of `mode` at the largest sequence length that has `key`."""
    rows = [r for r in bench or [] if r.get("mode") == mode and r.get("status") == "ok" and _num(r.get(key))]
    return max(rows, key=lambda r: r.get("seq_len") or 0) if rows else None


def csv_row(run: Run) -> dict[str, Any]:
    """Every figure of a run as flat CSV columns (units in the names)."""
    res, m, env, tr = run.res, run.res.get("model") or {}, run.res.get("env") or {}, run.train
    row: dict[str, Any] = {"label": run.label, "variant": run.variant, "distinguishing_overrides": run.distinct,
                           "status": res.get("status"), "error": res.get("error"),
                           "overrides": " ".join(run.overrides), "run_dir": str(run.dir)}
    row.update({k: m.get(k) for k in ("params", "non_embedding_params", "flops_per_token_fwd",
                                      "flops_per_token_train", "kv_cache_bytes_per_token")})
    for mode in BENCH_MODES:
        pt = largest_ok(res.get("bench"), mode) or {}
        for k in ("seq_len", "median_ms", "p10_ms", "p90_ms", "tokens_per_s", "peak_mem_bytes", "mfu"):
            row[f"{mode}_{k}"] = pt.get(k)
    row["bench_points_not_ok"] = sum(1 for r in res.get("bench") or [] if r.get("status") != "ok")
    for k in ("status", "steps", "tokens", "wall_s", "tokens_per_s", "train_loss", "val_loss", "metric_name", "metric"):
        row[f"train_{k}" if k in ("status", "steps", "tokens", "wall_s", "tokens_per_s") else k] = tr.get(k)
    for t, v in sorted((tr.get("val_loss_by_len") or {}).items(), key=lambda kv: int(kv[0])):
        row[f"val_loss_T{t}"] = v
    row.update({f"env_{k}": env.get(k) for k in ("device", "device_name", "torch", "threads", "dtype")})
    return row


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return path


def bench_rows(runs: list[Run]) -> list[dict]:
    return [{"label": r.label, "variant": r.variant, **row} for r in runs for row in r.res.get("bench") or []]


# ----------------------------------------------------------------------------- markdown
def fmt_num(x: Any, digits: int = 3) -> str:
    if not _num(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def fmt_bytes(n: Any) -> str:
    if not _num(n):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _bench_column(runs: list[Run], mode: str, key: str, name: str, fmt: Callable) -> Optional[tuple]:
    """(header, cells) for one bench figure at each run's largest T; T goes in the header when shared."""
    pts = [largest_ok(r.res.get("bench"), mode, key) for r in runs]
    lens = {p.get("seq_len") for p in pts if p}
    if not lens:
        return None
    shared = len(lens) == 1
    header = f"{name} (T={lens.pop()})" if shared else name
    cells = ["-" if p is None else fmt(p[key]) + ("" if shared else f" (T={p.get('seq_len')})") for p in pts]
    return header, cells


def _status(run: Run) -> str:
    bad = Counter(r.get("status") for r in run.res.get("bench") or [] if r.get("status") != "ok")
    extra = ", ".join(f"{n} bench {s}" for s, n in sorted(bad.items()))
    return str(run.res.get("status")) + (f" ({extra})" if extra else "")


def table_columns(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """The report table, column by column; columns nobody has are left out."""
    model = [r.res.get("model") or {} for r in runs]
    cols: list[Optional[tuple]] = [("variant", [r.variant for r in runs])]
    if any(r.distinct for r in runs):
        cols.append(("overrides", [r.distinct or "-" for r in runs]))
    cols.append(("params", [fmt_num(m.get("params")) for m in model]))
    cols.append(_bench_column(runs, "forward", "median_ms", "forward ms", fmt_num))
    cols.append(_bench_column(runs, "train_step", "median_ms", "train step ms", fmt_num))
    if any(_num(r.train.get("tokens_per_s")) for r in runs):
        cols.append(("train tok/s", [fmt_num(r.train.get("tokens_per_s")) for r in runs]))
    else:
        cols.append(_bench_column(runs, "forward", "tokens_per_s", "forward tok/s", fmt_num))
    mem_mode = "train_step" if any(largest_ok(r.res.get("bench"), "train_step", "peak_mem_bytes") for r in runs) \
        else "forward"
    cols.append(_bench_column(runs, mem_mode, "peak_mem_bytes", f"{mem_mode.replace('_', ' ')} peak mem", fmt_bytes))
    cols.append(("KV bytes/token", [fmt_num(m.get("kv_cache_bytes_per_token")) for m in model]))
    if any(r.train for r in runs):
        cols.append(("val loss", [f"{v:.3f}" if _num(v := r.train.get("val_loss")) else "-" for r in runs]))
        names = {r.train.get("metric_name") for r in runs if r.train.get("metric_name")}
        one = names.pop() if len(names) == 1 else None
        cols.append((one or "metric", [("" if one else f"{r.train.get('metric_name')} ") +
                                       fmt_num(r.train.get("metric")) if _num(r.train.get("metric")) else "-"
                                       for r in runs]))
    cols.append(("status", [_status(r) for r in runs]))
    if any(r.res.get("error") for r in runs):
        cols.append(("error", [(r.res.get("error") or "")[:160] for r in runs]))
    return [c for c in cols if c is not None]


def markdown_table(runs: list[Run]) -> str:
    cols = table_columns(runs)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(c[i]) for _, c in cols) + " |" for i in range(len(runs))]
    return "\n".join(lines)


def _env_line(runs: list[Run]) -> str:
    envs = Counter(f"{e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, {e.get('threads')} threads, "
                   f"{e.get('dtype')}" for r in runs if (e := r.res.get("env")))
    return "; ".join(f"{k} ({n} runs)" if len(envs) > 1 else k for k, n in envs.items()) or "-"


def write_markdown(path: Path, runs: list[Run], sources: Sequence[Path], images: dict[str, Path]) -> Path:
    status = Counter(str(r.res.get("status")) for r in runs)
    out = ["# attnbench report", "",
           f"{len(runs)} runs from {', '.join(f'`{s}`' for s in sources)} "
           f"({', '.join(f'{n} {s}' for s, n in status.items())}).", "",
           f"Measured on: {_env_line(runs)}.", "", markdown_table(runs), "",
           "Latency is the median over `bench.repeats` at each run's largest benchmarked sequence length T "
           "(batch `bench.batch_size`); peak memory is that measurement's own peak; train tok/s is training "
           "throughput excluding evaluation; val loss is in nats/token at `train.seq_len`. "
           "All figures are in `results.csv`; every bench point in `bench.csv`.", ""]
    titles = {"latency": "Latency vs sequence length", "memory": "Peak memory vs sequence length",
              "training": "Training curves", "extrapolation": "Validation loss vs evaluation length",
              "pareto": "Quality vs throughput"}
    for key, img in images.items():
        out += [f"## {titles[key]}", "", f"![{titles[key]}]({img.name})", ""]
    path.write_text("\n".join(out))
    return path


# ----------------------------------------------------------------------------- the report
@dataclass
class Report:
    runs: list
    files: dict  # name -> Path
    images: dict  # plot key -> Path


def make_plots(runs: list[Run], out: Path, common: str) -> dict[str, Path]:
    series = [plots.Series(label=r.short, bench=r.res.get("bench") or [], curve=r.curve, train=r.train,
                           train_len=((r.res.get("config") or {}).get("train") or {}).get("seq_len")) for r in runs]
    plots.assign_colors(series)
    envs = {f"{e.get('device')} {e.get('device_name')}, {e.get('dtype')}" for r in runs if (e := r.res.get("env"))}
    where = f" on {envs.pop()}" if len(envs) == 1 else ""
    suffix = f"\n{common}" if common else ""
    made = {
        "latency": plots.bench_vs_seq_len(series, out / PLOTS["latency"], "median_ms",
                                          f"latency vs sequence length{where}{suffix}"),
        "memory": plots.bench_vs_seq_len(series, out / PLOTS["memory"], "peak_mem_bytes",
                                         f"peak memory vs sequence length{where}{suffix}"),
        "training": plots.training_curves(series, out / PLOTS["training"], f"training{suffix}"),
        "extrapolation": plots.val_loss_by_len(series, out / PLOTS["extrapolation"],
                                               f"validation loss vs evaluation length{suffix}"),
        "pareto": plots.quality_vs_throughput(series, out / PLOTS["pareto"],
                                              f"quality vs throughput (outlined: Pareto front){where}{suffix}"),
    }
    return {k: v for k, v in made.items() if v is not None}


def build_report(paths: Sequence[Path], out: Optional[Path] = None) -> Report:
    """Collect the runs under `paths` and write the report files into `out` (default <paths[0]>/report)."""
    paths = [Path(p) for p in paths]
    runs = collect(paths)
    common = name_runs(runs)
    out = Path(out) if out is not None else paths[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = {"results.csv": write_csv(out / "results.csv", [csv_row(r) for r in runs])}
    if rows := bench_rows(runs):
        files["bench.csv"] = write_csv(out / "bench.csv", rows)
    images = make_plots(runs, out, common)
    files["report.md"] = write_markdown(out / "report.md", runs, paths, images)
    log.info("report: %d runs -> %s", len(runs), out)
    return Report(runs=runs, files=files, images=images)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.report",
                                     description="Compare attnbench runs: report.md, results.csv and PNG plots.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="run or sweep directories (searched recursively for results.json)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first PATH>/report)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to a W&B report run")
    parser.add_argument("--wandb-mode", choices=("offline", "online", "disabled"),
                        help="default: $WANDB_MODE, else offline")
    parser.add_argument("--wandb-project", help="default: the runs' logger.project")
    parser.add_argument("--wandb-entity", help="default: the runs' logger.entity")
    parser.add_argument("--wandb-timeout", type=float, default=30.0, help="bound on W&B init and finish (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="attnbench report: %(levelname)s: %(message)s")
    try:
        rep = build_report(args.paths, args.out)
    except FileNotFoundError as exc:
        print(f"attnbench report: error: {exc}", file=sys.stderr)
        return 2
    status = Counter(str(r.res.get("status")) for r in rep.runs)
    print(f"{len(rep.runs)} runs ({', '.join(f'{n} {s}' for s, n in status.items())})")
    for path in [*rep.files.values(), *rep.images.values()]:
        print(f"wrote {path}")
    if args.wandb:
        from .report_wandb import log_report

        where = log_report(rep, args.paths, args.out or Path(args.paths[0]) / "report", mode=args.wandb_mode,
                           project=args.wandb_project, entity=args.wandb_entity, timeout_s=args.wandb_timeout)
        print(f"W&B report run: {where}" if where else "W&B report run: not logged (see the warning above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
