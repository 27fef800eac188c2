"""Confidence intervals of a mean and of a difference of means (Student t, exact quantiles).

    mean_ci(x)        n, mean, sample std (n-1), half-width t(0.975, n-1) * s / sqrt(n)
    paired_diff(x, b) the mean of x_i - b_i over replicates present in both, its t interval (n-1 dof)
    welch_diff(x, b)  mean(x) - mean(b), half-width t(0.975, nu) * sqrt(s_x^2/n_x + s_b^2/n_b),
                      nu from Welch-Satterthwaite

A half-width is None where it is undefined (fewer than 2 values on a side). The t quantile
comes from scipy.stats.t.ppf: a normal approximation (1.96) would be 2.2x too narrow at n = 3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

LEVEL = 0.95


@lru_cache(maxsize=4096)  # one scipy call costs ~0.1-1 ms; a report asks for the same few dofs thousands of times
def t_quantile(dof: float, level: float = LEVEL) -> float:
    """Two-sided Student t quantile, e.g. t_quantile(2) = 4.302652729911275."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: Optional[float]
    std: Optional[float] = None  # sample std (n - 1); None for n < 2
    ci95: Optional[float] = None  # half-width; None for n < 2


def mean_ci(values: Sequence[float]) -> Estimate:
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Estimate(0, None)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(1, mean)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Estimate(n, mean, std, t_quantile(n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Difference:
    diff: Optional[float]
    ci95: Optional[float]
    method: str  # "paired" | "welch"
    dof: Optional[float] = None


def paired_diff(x: dict, base: dict) -> Difference:
    """x, base: replicate -> value. Pairs the replicates present in both (same seed, same data order)."""
    keys = [k for k in x if k in base]
    est = mean_ci([x[k] - base[k] for k in keys])
    return Difference(est.mean, est.ci95, "paired", est.n - 1 if est.n > 1 else None)


def welch_diff(x: Sequence[float], base: Sequence[float]) -> Difference:
    a, b = mean_ci(x), mean_ci(base)
    if a.mean is None or b.mean is None:
        return Difference(None, None, "welch")
    diff = a.mean - b.mean
    if a.std is None or b.std is None:
        return Difference(diff, None, "welch")
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:  # both sides constant: the difference is exact
        return Difference(diff, 0.0, "welch", float(a.n + b.n - 2))
    dof = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    return Difference(diff, t_quantile(dof) * se, "welch", dof)


def difference(x: dict, base: dict, paired: bool) -> Difference:
    """x, base: replicate -> value (the jobs' figure at each replicate)."""
    return paired_diff(x, base) if paired else welch_diff(list(x.values()), list(base.values()))


def verdict(d: Difference, lower_is_better: bool) -> str:
    """better / worse when the CI of the difference excludes 0, else within noise; "" without a CI."""
    if d.diff is None or d.ci95 is None:
        return ""
    if abs(d.diff) <= d.ci95:
        return "within noise"
    return "better" if (d.diff < 0) == lower_is_better else "worse"
