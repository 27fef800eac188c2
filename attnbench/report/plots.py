"""The report's PNG plots, drawn with matplotlib's object API (no pyplot).

`Figure` + the Agg canvas keep the report free of global pyplot state: it never
changes the backend of a notebook that imports it, and figures are freed with
their last reference instead of piling up in pyplot's registry.

Every function takes a list of `Series` (one per run, already filtered to
runs that finished far enough to have the figure) and returns the PNG path, or
None when there is nothing to draw.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

log = logging.getLogger(__name__)

DPI = 120
MODE_TITLES = {"forward": "forward", "train_step": "train step (fwd + bwd + AdamW)",
               "prefill": "prefill", "decode": "decode (per new token)"}
MARKERS = "osD^v<>pPX*h"


@dataclass
class Series:
    """What the plots need from one run."""

    label: str
    color: object = None
    bench: list = field(default_factory=list)  # results.json "bench" rows
    curve: list = field(default_factory=list)  # metrics.jsonl rows
    train: dict = field(default_factory=dict)  # results.json "train" section
    train_len: Optional[int] = None  # train.seq_len of the config


def assign_colors(series: Sequence[Series]) -> None:
    """One colour and marker per run, the same in every plot."""
    from matplotlib import colormaps

    n = len(series)
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    for i, s in enumerate(series):
        s.color = cmap(i % cmap.N) if n <= 20 else colormaps["viridis"](i / max(1, n - 1))


def _marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def _new_figure(n_panels: int = 1, width: float = 6.0, height: float = 4.2) -> tuple[Figure, list]:
    cols = min(n_panels, 2)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Figure, path: Path, n_series: int) -> Path:
    handles, labels = [], []
    for ax in fig.axes:  # one legend for the figure, below the panels, without duplicates
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        longest = max(len(lab) for lab in labels)  # long labels (variant + overrides) get fewer columns
        ncol = 3 if longest <= 40 else 2 if longest <= 60 else 1
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(labels)),
                   fontsize="small", frameon=False)
    fig.savefig(path, bbox_inches="tight")  # never crop a legend wider than the panels
    log.info("wrote %s (%d runs)", path, n_series)
    return path


def _plain_numbers(ax, axis: str = "x") -> None:
    """Log axes labelled 64, 128, 256 (or 1, 2, 5, 10) instead of 2^6 or 6x10^1."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    if axis == "y":  # decimal log axis: 1-2-5 ticks stay readable over one decade or many
        target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _bench_points(s: Series, mode: str, key: str) -> list[dict]:
    rows = [r for r in s.bench if r.get("mode") == mode and r.get("status") == "ok"
            and isinstance(r.get(key), (int, float)) and r[key] > 0 and r.get("seq_len")]
    return sorted(rows, key=lambda r: r["seq_len"])


def _modes(series: Sequence[Series], key: str) -> list[str]:
    seen = {r.get("mode") for s in series for r in s.bench if _bench_points(s, r.get("mode"), key)}
    order = list(MODE_TITLES)
    return sorted(seen, key=lambda m: order.index(m) if m in order else len(order))


def bench_vs_seq_len(series: Sequence[Series], path: Path, key: str, title: str) -> Optional[Path]:
    """One log-log panel per bench mode: `key` against sequence length, one line per run.

    For latency the band is p10..p90 of the repeats."""
    modes = _modes(series, key)
    if not modes:
        return None
    fig, axes = _new_figure(len(modes))
    scale, unit = (1.0, "ms") if key == "median_ms" else (2.0 ** -20, "MiB")
    for ax, mode in zip(axes, modes):
        for i, s in enumerate(series):
            pts = _bench_points(s, mode, key)
            if not pts:
                continue
            t = [r["seq_len"] for r in pts]
            y = [r[key] * scale for r in pts]
            ax.plot(t, y, marker=_marker(i), color=s.color, label=s.label, lw=1.5, ms=4)
            if key == "median_ms" and all(isinstance(r.get("p10_ms"), (int, float)) for r in pts):
                ax.fill_between(t, [r["p10_ms"] for r in pts], [r["p90_ms"] for r in pts], color=s.color,
                                alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_numbers(ax)
        _plain_numbers(ax, "y")
        ax.set_title(MODE_TITLES.get(mode, mode))
        ax.set_xlabel("sequence length T (tokens)")
        what = "median latency" if key == "median_ms" else "peak memory"
        ax.set_ylabel(f"{what} ({unit}{' / token' if mode == 'decode' and key == 'median_ms' else ''})")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(series))


def _smooth(y: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(y):
        acc += v
        if i >= window:
            acc -= y[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _xy(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get("step"), (int, float))
           and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def training_curves(series: Sequence[Series], path: Path, title: str) -> Optional[Path]:
    """Train loss (line, smoothed when long) and val loss (markers) against step; val metric beside it."""
    series = [s for s in series if _xy(s.curve, "train_loss")[0] or _xy(s.curve, "val_loss")[0]]
    if not series:
        return None
    metric_keys = sorted({k for s in series for r in s.curve for k in r if k.startswith("val_") and k != "val_loss"})
    fig, axes = _new_figure(1 + bool(metric_keys))
    ax = axes[0]
    for i, s in enumerate(series):
        x, y = _xy(s.curve, "train_loss")
        if len(y) > 50:  # a raw per-step curve is mostly noise: draw it faint, a running mean on top
            ax.plot(x, y, color=s.color, alpha=0.2, lw=0.8)
            y = _smooth(y, max(5, len(y) // 25))
        if y:
            ax.plot(x, y, color=s.color, label=s.label, lw=1.5)
        vx, vy = _xy(s.curve, "val_loss")
        ax.plot(vx, vy, ls="none", marker=_marker(i), color=s.color, ms=6, mec="black", mew=0.5,
                **({} if y else {"label": s.label}))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title("train loss (line) and validation loss (markers)")
    ax.grid(True, alpha=0.3)
    if metric_keys:
        for i, s in enumerate(series):
            for key in metric_keys:
                mx, my = _xy(s.curve, key)
                axes[1].plot(mx, my, marker=_marker(i), color=s.color, label=s.label, lw=1.2, ms=5)
        axes[1].set_xlabel("step")
        axes[1].set_ylabel(", ".join(k.removeprefix("val_") for k in metric_keys))
        axes[1].set_title("validation metric")
        axes[1].grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(series))


def _by_len(s: Series) -> tuple[list[int], list[float], list[int]]:
    pairs, na = [], []
    for k, v in (s.train.get("val_loss_by_len") or {}).items():
        try:
            t = int(k)
        except (TypeError, ValueError):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            pairs.append((t, float(v)))
        else:
            na.append(t)  # null = not applicable (e.g. learned positions past the context)
    pairs.sort()
    return [p[0] for p in pairs], [p[1] for p in pairs], sorted(na)


def val_loss_by_len(series: Sequence[Series], path: Path, title: str) -> Optional[Path]:
    """Length extrapolation: validation loss at each evaluation length; the training length dashed."""
    series = [s for s in series if _by_len(s)[0]]
    if not series:
        return None
    fig, axes = _new_figure(1, width=7.0)
    ax = axes[0]
    for i, s in enumerate(series):
        t, y, na = _by_len(s)
        label = s.label + (f" (n/a at T={', '.join(map(str, na))})" if na else "")
        ax.plot(t, y, marker=_marker(i), color=s.color, label=label, lw=1.5, ms=5)
    train_lens = {s.train_len for s in series} - {None}
    for t in sorted(train_lens):
        ax.axvline(t, color="gray", ls="--", lw=1, zorder=1, label=f"training length T={t}")
    ax.set_xscale("log", base=2)
    _plain_numbers(ax)
    ax.set_xlabel("evaluation length T (tokens)")
    ax.set_ylabel("validation loss (nats / token)")
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(series))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both throughput (x, higher) and loss (y, lower),
    ordered by throughput."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def quality_vs_throughput(series: Sequence[Series], path: Path, title: str) -> Optional[Path]:
    """Pareto scatter: validation loss against training tokens/s, the front highlighted."""
    pts, kept = [], []
    for s in series:
        x, y = s.train.get("tokens_per_s"), s.train.get("val_loss")
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and math.isfinite(y):
            pts.append((float(x), float(y)))
            kept.append(s)
    if not pts:
        return None
    fig, axes = _new_figure(1, width=7.0)
    ax = axes[0]
    front = pareto_front(pts)
    for i, (s, (x, y)) in enumerate(zip(kept, pts)):
        on = i in front
        ax.scatter([x], [y], color=s.color, marker=_marker(i), s=70 if on else 40, label=s.label,
                   edgecolors="black" if on else "none", linewidths=1.2, zorder=3)
    fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
    ax.plot(fx, fy, color="black", lw=1, ls="--", zorder=2, label="Pareto front")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    _plain_numbers(ax)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
    ax.set_xlabel("training throughput (tokens / s, higher is better)")
    ax.set_ylabel("validation loss (nats / token, lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(kept))
