"""The report's PNG plots, drawn with matplotlib's object API (no pyplot).

`Figure` + the Agg canvas keep the report free of global pyplot state: it never
changes the backend of a notebook that imports it, and figures are freed with
their last reference instead of piling up in pyplot's registry.

Every function takes a list of `Series`, one per variant (the data of its ok
replicates), draws the mean over replicates with a 95% confidence band or error
bars (never one line per seed), and returns the PNG path, or None when there is
nothing to draw. Series beyond the legend limit are drawn thin and grey without a
legend entry, so a report over many variants keeps a readable legend.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..bench.modes import BENCH_MODES, MODE_TITLES
from ..track import catalogue
from .curves import Curve, variant_curves

log = logging.getLogger(__name__)

DPI = 120
MARKERS = "osD^v<>pPX*h"


@dataclass
class Series:
    """What the plots need from one variant: the data of each of its ok replicates."""

    label: str
    color: object = None
    marker: str = "o"  # set with the colour by assign_colors, from the variant's place in the full list
    benches: list = field(default_factory=list)  # per replicate: results.json "bench" rows
    curves: list = field(default_factory=list)  # per replicate: its job directory (read lazily), a
    # track.history.History, or metrics.jsonl rows (curves.CurveSource)
    trains: list = field(default_factory=list)  # per replicate: results.json "train" section
    train_len: Optional[int] = None  # train.seq_len of the config
    in_legend: bool = True  # False: drawn grey and thin, left out of the legend (beyond the best k)

    @property
    def name(self) -> str:
        return self.label if self.in_legend else "_nolegend_"


def assign_colors(series: Sequence[Series]) -> None:
    """One colour and marker per variant, the same in every plot; series left out of the legend are grey.

    Both come from the series' place in the full list, never from a plot's own filtered list (a variant
    that lacks one plot's data must not shift the markers of the others there)."""
    from matplotlib import colormaps

    shown = [s for s in series if s.in_legend]
    n = len(shown)
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    for i, s in enumerate(shown):
        s.color = cmap(i % cmap.N) if n <= 20 else colormaps["viridis"](i / max(1, n - 1))
    for i, s in enumerate(series):
        s.marker = MARKERS[i % len(MARKERS)]
        if not s.in_legend:
            s.color = (0.6, 0.6, 0.6, 0.6)


def _mean_band(values: Sequence[float]) -> tuple[float, Optional[float]]:
    """Mean and 95% CI half-width (None for a single value)."""
    from .stats import mean_ci

    e = mean_ci(values)
    return e.mean, e.ci95


def _new_figure(n_panels: int = 1, width: float = 6.0, height: float = 4.2) -> tuple[Figure, list]:
    cols = min(n_panels, 2)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Figure, path: Path, n_series: int, legends: Optional[dict] = None) -> Path:
    """Save with one legend for the figure, below the panels, without duplicates; record its entry count
    in `legends[path.name]`."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    if handles:
        longest = max(len(lab) for lab in labels)  # long labels (variant + overrides) get fewer columns
        ncol = 3 if longest <= 40 else 2 if longest <= 60 else 1
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(labels)),
                   fontsize="small", frameon=False)
    fig.savefig(path, bbox_inches="tight")  # never crop a legend wider than the panels
    if legends is not None:
        legends[path.name] = len(labels)
    log.info("wrote %s (%d variants, %d legend entries)", path, n_series, len(labels))
    return path


def _plain_numbers(ax, axis: str = "x") -> None:
    """Log axes labelled 64, 128, 256 (or 1, 2, 5, 10) instead of 2^6 or 6x10^1."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    if axis == "y":  # decimal log axis: 1-2-5 ticks stay readable over one decade or many
        target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _fin(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _bench_points(bench: list, mode: str, key: str) -> list[dict]:
    rows = [r for r in bench if r.get("mode") == mode and r.get("status") == "ok"
            and _fin(r.get(key)) and r[key] > 0 and r.get("seq_len")]
    return sorted(rows, key=lambda r: r["seq_len"])


def _modes(series: Sequence[Series], key: str) -> list[str]:
    seen = {r.get("mode") for s in series for b in s.benches for r in b if _bench_points(b, r.get("mode"), key)}
    order = list(BENCH_MODES)
    return sorted(seen, key=lambda m: order.index(m) if m in order else len(order))


def _bench_curve(s: Series, mode: str, key: str) -> tuple[list, list, list, list]:
    """Per sequence length: mean over replicates and the band (95% CI of the mean; with one replicate,
    p10..p90 of its repeats for latency)."""
    per_t: dict[int, list[dict]] = {}
    for b in s.benches:
        for r in _bench_points(b, mode, key):
            per_t.setdefault(r["seq_len"], []).append(r)
    t, y, lo, hi = [], [], [], []
    for seq_len in sorted(per_t):
        rows = per_t[seq_len]
        mean, ci = _mean_band([r[key] for r in rows])
        if ci is not None:
            low, high = mean - ci, mean + ci
        elif key == "median_ms" and _fin(rows[0].get("p10_ms")) and _fin(rows[0].get("p90_ms")):
            low, high = rows[0]["p10_ms"], rows[0]["p90_ms"]
        else:
            low = high = mean
        t.append(seq_len)
        y.append(mean)
        lo.append(low)
        hi.append(high)
    return t, y, lo, hi


def bench_vs_seq_len(series: Sequence[Series], path: Path, key: str, title: str,
                     legends: Optional[dict] = None) -> Optional[Path]:
    """One log-log panel per bench mode: `key` against sequence length, one line per variant (the mean
    over its replicates) with a band: the 95% CI of the mean, or p10..p90 of the repeats for a single job."""
    modes = _modes(series, key)
    if not modes:
        return None
    fig, axes = _new_figure(len(modes))
    scale, unit = (1.0, "ms") if key == "median_ms" else (2.0 ** -20, "MiB")
    for ax, mode in zip(axes, modes):
        for s in series:
            t, y, lo, hi = _bench_curve(s, mode, key)
            if not t:
                continue
            ax.plot(t, [v * scale for v in y], marker=s.marker, color=s.color, label=s.name,
                    lw=1.5 if s.in_legend else 0.8, ms=4 if s.in_legend else 2, zorder=3 if s.in_legend else 2)
            if any(a != b for a, b in zip(lo, hi)) and s.in_legend:
                ax.fill_between(t, [v * scale for v in lo], [v * scale for v in hi], color=s.color, alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_numbers(ax)
        _plain_numbers(ax, "y")
        ax.set_title(MODE_TITLES.get(mode, mode))
        ax.set_xlabel("sequence length T (tokens)")
        what = next(f.title for f in catalogue.BENCH if f.name == key)
        ax.set_ylabel(f"{what} ({unit}{' / token' if mode == 'decode' and key == 'median_ms' else ''})")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(series), legends)


def training_curves(series: Sequence[Series], path: Path, title: str,
                    legends: Optional[dict] = None) -> Optional[Path]:
    """Train loss (line, smoothed when long) and val loss (markers with 95% CI bars) against step, each the
    mean over the variant's replicates (train loss with a 95% CI band); the val metric beside it.
    One variant's histories are read at a time (curves.variant_curves)."""
    none = Curve(*(np.empty(0),) * 4)
    drawn = [(s, c) for s in series if (c := variant_curves(s.curves))
             and (len(c.get("train_loss", none)) or len(c.get("val_loss", none)))]
    if not drawn:
        return None
    metric_keys = sorted({k for _, c in drawn for k, cv in c.items() if k.startswith("val_") and k != "val_loss"
                          and len(cv)})
    fig, axes = _new_figure(1 + bool(metric_keys))
    ax = axes[0]
    for s, c in drawn:
        tr, va = c.get("train_loss", none), c.get("val_loss", none)
        lw = 1.5 if s.in_legend else 0.6
        if len(tr):
            ax.plot(tr.x, tr.y, color=s.color, label=s.name, lw=lw, zorder=3 if s.in_legend else 2)
            if s.in_legend and len(s.curves) > 1:
                ax.fill_between(tr.x, tr.lo, tr.hi, color=s.color, alpha=0.2, lw=0)
        if len(va):
            ax.errorbar(va.x, va.y, yerr=[va.y - va.lo, va.hi - va.y], ls="none", marker=s.marker, color=s.color,
                        ms=6 if s.in_legend else 3, mec="black", mew=0.5, capsize=2,
                        **({} if len(tr) else {"label": s.name}))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title("train loss (line) and validation loss (markers)")
    ax.grid(True, alpha=0.3)
    if metric_keys:
        for s, c in drawn:
            for key in metric_keys:
                m = c.get(key, none)
                if not len(m):
                    continue
                yerr = [m.y - m.lo, m.hi - m.y] if s.in_legend and len(s.curves) > 1 else None  # bars, not a band
                axes[1].errorbar(m.x, m.y, yerr=yerr, marker=s.marker, color=s.color, label=s.name,
                                 lw=1.2 if s.in_legend else 0.6, ms=5 if s.in_legend else 2, capsize=3)
        axes[1].set_xlabel("step")
        axes[1].set_ylabel(", ".join(k.removeprefix("val_") for k in metric_keys))
        axes[1].set_title("validation metric")
        axes[1].grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(drawn), legends)


def _by_len(s: Series) -> tuple[list[int], list[float], list[float], list[int]]:
    """Evaluation lengths, mean val loss and 95% CI over replicates, and the lengths that are n/a."""
    per_t: dict[int, list[float]] = {}
    na: set[int] = set()
    for tr in s.trains:
        by_len = tr.get("val_loss_by_len") if isinstance(tr.get("val_loss_by_len"), dict) else {}
        for k, v in by_len.items():
            try:
                t = int(k)
            except (TypeError, ValueError):
                continue
            if _fin(v):
                per_t.setdefault(t, []).append(float(v))
            else:
                na.add(t)  # null = not applicable (e.g. learned positions past the context)
    ts = sorted(per_t)
    agg = [_mean_band(per_t[t]) for t in ts]
    return ts, [a[0] for a in agg], [a[1] or 0.0 for a in agg], sorted(na - set(ts))


def val_loss_by_len(series: Sequence[Series], path: Path, title: str,
                    legends: Optional[dict] = None) -> Optional[Path]:
    """Length extrapolation: mean validation loss (95% CI bars) at each evaluation length; training length dashed."""
    series = [s for s in series if _by_len(s)[0]]
    if not series:
        return None
    fig, axes = _new_figure(1, width=7.0)
    ax = axes[0]
    for s in series:
        t, y, ci, na = _by_len(s)
        label = s.name + (f" (n/a at T={', '.join(map(str, na))})" if na and s.in_legend else "")
        ax.errorbar(t, y, yerr=ci if any(ci) else None, marker=s.marker, color=s.color, label=label,
                    lw=1.5 if s.in_legend else 0.6, ms=5 if s.in_legend else 2, capsize=3)
    train_lens = {s.train_len for s in series} - {None}
    for t in sorted(train_lens):
        ax.axvline(t, color="gray", ls="--", lw=1, zorder=1, label=f"training length T={t}")
    ax.set_xscale("log", base=2)
    _plain_numbers(ax)
    ax.set_xlabel("evaluation length T (tokens)")
    ax.set_ylabel("validation loss (nats / token)")
    ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(series), legends)


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


def quality_vs_throughput(series: Sequence[Series], path: Path, title: str,
                          legends: Optional[dict] = None) -> Optional[Path]:
    """Pareto scatter of the variant means: validation loss against training tokens/s, with 95% CI bars on
    both axes; the front (computed on the means) outlined."""
    pts, errs, kept = [], [], []
    for s in series:
        xs = [tr["tokens_per_s"] for tr in s.trains if _fin(tr.get("tokens_per_s")) and tr["tokens_per_s"] > 0]
        ys = [tr["val_loss"] for tr in s.trains if _fin(tr.get("val_loss"))]
        if xs and ys:
            (mx, cx), (my, cy) = _mean_band(xs), _mean_band(ys)
            pts.append((float(mx), float(my)))
            errs.append((cx or 0.0, cy or 0.0))
            kept.append(s)
    if not pts:
        return None
    fig, axes = _new_figure(1, width=7.0)
    ax = axes[0]
    front = pareto_front(pts)
    for i, (s, (x, y), (ex, ey)) in enumerate(zip(kept, pts, errs)):
        on = i in front
        if ex or ey:
            ax.errorbar([x], [y], xerr=[ex] if ex else None, yerr=[ey] if ey else None, color=s.color, ls="none",
                        lw=1, capsize=3, zorder=2)
        ax.scatter([x], [y], color=s.color, marker=s.marker, s=(70 if on else 40) if s.in_legend else 12,
                   label=s.name, edgecolors="black" if on else "none", linewidths=1.2, zorder=3)
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
    return _save(fig, path, len(kept), legends)
