"""The `--tune` grid's own step, and the value one step past either edge (issue 27's Extend stage).

A grid is *log* when its values are positive and each is the same ratio above the last (within
REL_TOL on the logarithm: 1e-3, 3e-3, 1e-2, 3e-2 steps ×3, ×3.3, ×3 and is one log grid), *linear* when
the differences are equal. A positive two-value grid is read as log: two learning rates, widths or
sequence lengths are almost always a ratio apart. A log grid laid on decades (k values per decade,
as 1e-3, 3e-3, 1e-2 with k = 2) steps on by the decade: the value above the top is the one k steps
below it times 10 (3e-3 → 3e-2, then 1e-2 → 1e-1), so the extension lands on the grid's own
"1, 3, 10" pattern rather than on 3.16e-2. Any other grid has no step of its own; the study refuses
it unless `--max-extensions 0`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

LOG, LINEAR = "log", "linear"
LOWEST, HIGHEST = "lowest", "highest"  # the report's tuned_at_edge values
REL_TOL = 0.15  # log grids: step ratios whose logarithms differ by at most this fraction of their mean
DECADE_TOL = 0.1  # values per decade within this of an integer: the grid is laid on decades


@dataclass(frozen=True)
class Step:
    """How a grid steps: `kind` LOG (size = the mean ratio) or LINEAR (size = the difference)."""

    kind: str
    size: float
    per_decade: int = 0  # LOG grids laid on decades: values per decade, else 0
    integer: bool = False  # every value an integer (widths, lengths): extensions are integers too

    def rule(self) -> str:
        """The step in words, for --dry-run and the report."""
        if self.kind == LINEAR:
            return f"linear: ± {fmt_value(self.size)}"
        if self.per_decade:
            return f"log, {self.per_decade} per decade: the value {self.per_decade} steps inward × 10 (or ÷ 10)"
        return f"log: × or ÷ {self.size:.4g}"


def parse_value(text: str) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt_value(x: float) -> str:
    """An override value: 12 significant digits, so 3e-3 × 10 is written 0.03, not 0.030000000000000002."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.12g}"


def _equal(xs: Sequence[float], rel: float) -> bool:
    mean = sum(xs) / len(xs)
    return all(abs(x - mean) <= rel * abs(mean) for x in xs)


def grid_step(values: Sequence[str]) -> Optional[Step]:
    """The grid's own step, or None (fewer than two numeric values, or neither log nor linear)."""
    nums = [parse_value(v) for v in values]
    if len(nums) < 2 or any(x is None for x in nums):
        return None
    vals = sorted(set(x for x in nums if x is not None))
    if len(vals) < 2:
        return None
    integer = all(str(v).strip().lstrip("+-").isdigit() for v in values)
    if vals[0] > 0:
        logs = [math.log(b / a) for a, b in zip(vals, vals[1:])]
        if _equal(logs, REL_TOL):
            mean = sum(logs) / len(logs)
            per = math.log(10) / mean
            per_decade = round(per) if round(per) >= 1 and abs(per - round(per)) < DECADE_TOL else 0
            return Step(LOG, math.exp(mean), per_decade, integer)
    diffs = [b - a for a, b in zip(vals, vals[1:])]
    if _equal(diffs, 1e-6):
        return Step(LINEAR, sum(diffs) / len(diffs), 0, integer)
    return None


def next_value(step: Step, tried: Sequence[float], edge: str) -> Optional[float]:
    """The value one step past `edge` (LOWEST or HIGHEST) of the values tried so far, or None when there
    is none (an integer grid that would step below 1 or onto a value already tried)."""
    vals = sorted(set(tried))
    up = edge == HIGHEST
    if step.kind == LINEAR:
        x = vals[-1] + step.size if up else vals[0] - step.size
    elif step.per_decade and len(vals) >= step.per_decade:
        x = vals[-step.per_decade] * 10 if up else vals[step.per_decade - 1] / 10
    else:
        x = vals[-1] * step.size if up else vals[0] / step.size
    x = float(f"{x:.12g}")
    if step.integer:
        x = float(round(x))
        if (step.kind == LOG and x < 1) or any(math.isclose(x, v) for v in vals):
            return None
    return x


__all__ = ["HIGHEST", "LINEAR", "LOG", "LOWEST", "Step", "fmt_value", "grid_step", "next_value", "parse_value"]
