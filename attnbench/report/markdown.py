"""report.md: the comparison table (one row per run) and the plots below it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .runs import Run, largest_ok, num

TITLES = {"latency": "Latency vs sequence length", "memory": "Peak memory vs sequence length",
          "training": "Training curves", "extrapolation": "Validation loss vs evaluation length",
          "pareto": "Quality vs throughput"}


def fmt_num(x: Any, digits: int = 3) -> str:
    if not num(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def fmt_bytes(n: Any) -> str:
    if not num(n):
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
    if any(num(r.train.get("tokens_per_s")) for r in runs):
        cols.append(("train tok/s", [fmt_num(r.train.get("tokens_per_s")) for r in runs]))
    else:
        cols.append(_bench_column(runs, "forward", "tokens_per_s", "forward tok/s", fmt_num))
    mem_mode = "train_step" if any(largest_ok(r.res.get("bench"), "train_step", "peak_mem_bytes") for r in runs) \
        else "forward"
    cols.append(_bench_column(runs, mem_mode, "peak_mem_bytes", f"{mem_mode.replace('_', ' ')} peak mem", fmt_bytes))
    cols.append(("KV bytes/token", [fmt_num(m.get("kv_cache_bytes_per_token")) for m in model]))
    if any(r.train for r in runs):
        cols.append(("val loss", [f"{v:.3f}" if num(v := r.train.get("val_loss")) else "-" for r in runs]))
        names = {r.train.get("metric_name") for r in runs if r.train.get("metric_name")}
        one = names.pop() if len(names) == 1 else None
        cols.append((one or "metric", [("" if one else f"{r.train.get('metric_name')} ") +
                                       fmt_num(r.train.get("metric")) if num(r.train.get("metric")) else "-"
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
    envs = Counter(f"{e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, threads={e.get('threads')}, "
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
    for key, img in images.items():
        out += [f"## {TITLES[key]}", "", f"![{TITLES[key]}]({img.name})", ""]
    path.write_text("\n".join(out))
    return path
