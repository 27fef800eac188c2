"""Mean training curves over a variant's replicates, with 95% CI bands, in numpy.

Each replicate's history is read once, as the columns the plot needs (track/history.py: the
job's metrics.arrow, or metrics.jsonl converted once), and reduced to per-step means at once:
the steps of every replicate are joined (np.unique), the sums per step come from np.bincount,
and the t quantile is computed once per distinct replicate count. Only one variant's
histories are in memory at a time, so a report over 10,000 jobs holds a few MB of curves.

A band is the 95% CI of the mean over the replicates that logged the step (Student t,
stats.py); where one replicate has the step, the band is the mean itself.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..track.history import History, read_history
from .stats import LEVEL

SMOOTH_ABOVE = 50  # a raw per-step curve longer than this is mostly noise: a running mean first
CurveSource = Union[Path, History, Sequence[dict]]  # a job directory, a history, or metrics.jsonl rows


@dataclass(frozen=True)
class Curve:
    """Per step: the mean over replicates and the 95% CI band (lo == hi == mean with one replicate)."""

    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def wanted(name: str) -> bool:
    """The history columns the report draws: train loss and the validation figures."""
    return name == "train_loss" or name.startswith("val_")


def as_history(source: CurveSource) -> History:
    if isinstance(source, History):
        return source
    if isinstance(source, (str, Path)):
        return read_history(Path(source), want=wanted)
    return History.from_rows(source)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last `window` values (fewer at the start)."""
    c = np.cumsum(y, dtype=np.float64)
    out = c.copy()
    out[window:] = c[window:] - c[:-window]
    return out / np.minimum(np.arange(1, len(y) + 1), window)


def mean_curve(histories: Sequence[History], key: str, smoothed: bool = False) -> Curve:
    """`key` per step: the mean over the histories (each smoothed first when long and `smoothed`) and the
    95% CI band."""
    xs, ys = [], []
    for h in histories:
        x, y = h.points(key)
        if smoothed and len(y) > SMOOTH_ABOVE:
            y = smooth(y, max(5, len(y) // 25))
        xs.append(x)
        ys.append(y)
    if not xs or not sum(map(len, xs)):
        empty = np.empty(0)
        return Curve(empty, empty, empty, empty)
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    steps, at = np.unique(x_all, return_inverse=True)
    n = np.bincount(at, minlength=len(steps)).astype(np.float64)
    mean = np.bincount(at, weights=y_all, minlength=len(steps)) / n
    sq = np.bincount(at, weights=(y_all - mean[at]) ** 2, minlength=len(steps))  # two passes: no cancellation
    half = np.zeros_like(mean)
    many = n > 1
    if many.any():
        half[many] = _t(n[many] - 1) * np.sqrt(sq[many] / (n[many] - 1)) / np.sqrt(n[many])
    return Curve(steps.astype(np.float64), mean, mean - half, mean + half)


def _t(dof: np.ndarray) -> np.ndarray:
    """Student t quantiles, one scipy call per distinct degree of freedom."""
    from scipy.stats import t

    uniq, inv = np.unique(dof, return_inverse=True)
    return t.ppf(0.5 + LEVEL / 2, uniq)[inv]


def variant_curves(sources: Sequence[CurveSource]) -> dict[str, Curve]:
    """Every drawn key of one variant's replicates -> its mean curve (train loss smoothed)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Arrow parses and reads without the GIL
        histories = list(pool.map(as_history, sources))
    keys = sorted({k for h in histories for k in h.columns if wanted(k)})
    return {k: mean_curve(histories, k, smoothed=k == "train_loss") for k in keys}


__all__ = ["Curve", "CurveSource", "as_history", "mean_curve", "smooth", "variant_curves", "wanted"]
