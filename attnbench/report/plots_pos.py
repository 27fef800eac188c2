"""val_loss_by_pos.png: validation loss against position, one panel per evaluation length.

Each job's `train.val_loss_by_pos` ({T: {first position of the bucket: mean loss}}, train/evaluate.py)
is drawn at the buckets' first positions, the mean over a variant's replicates with 95% CI bars; the
training length is dashed. Where the curve rises past it, a positional scheme stops generalising.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .plots import Series, _fin, _mean_band, _new_figure, _save

MAX_PANELS = 4  # the longest evaluation lengths, where the breaks are


def _by_pos(s: Series, T: str) -> tuple[list[int], list[float], list[float]]:
    per: dict[int, list[float]] = {}
    for tr in s.trains:
        buckets = (tr.get("val_loss_by_pos") or {}).get(T) or {}
        for start, v in buckets.items():
            if _fin(v):
                per.setdefault(int(start), []).append(float(v))
    xs = sorted(per)
    agg = [_mean_band(per[x]) for x in xs]
    return xs, [a[0] for a in agg], [a[1] or 0.0 for a in agg]


def val_loss_by_pos(series: Sequence[Series], path: Path, title: str,
                    legends: Optional[dict] = None) -> Optional[Path]:
    lengths = sorted({T for s in series for tr in s.trains for T in (tr.get("val_loss_by_pos") or {})}, key=int)
    lengths = lengths[-MAX_PANELS:]
    if not lengths:
        return None
    fig, axes = _new_figure(len(lengths))
    for ax, T in zip(axes, lengths):
        for s in series:
            x, y, ci = _by_pos(s, T)
            if x:
                ax.errorbar(x, y, yerr=ci if any(ci) else None, marker=s.marker, color=s.color, label=s.name,
                            lw=1.5 if s.in_legend else 0.6, ms=4 if s.in_legend else 2, capsize=2)
        for t in sorted({s.train_len for s in series} - {None}):
            if t < int(T):
                ax.axvline(t, color="gray", ls="--", lw=1, zorder=1, label=f"training length T={t}")
        ax.set_title(f"evaluation length T={T}")
        ax.set_xlabel("position (first of each bucket)")
        ax.set_ylabel("validation loss (nats / supervised token)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(series), legends)
