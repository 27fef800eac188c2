"""The one sequence length at which the variant table compares each bench mode.

A run's bench figures in results.csv are those at its own largest successful length. Compared
across variants that is unfair: when MHA runs out of memory at T=8192 and MQA does not, MQA's
8192 figure would face MHA's 4096 one, and a variant faster at every length could get the verdict
`worse`. So the variant table takes every variant's figures of a mode at the *common length*: the
largest T at which every ok reported job of every compared variant has an ok point (with a
median). A variant that did not benchmark the mode at all is not compared on it. When there is
no such T (the completed lengths share none), the mode's figures keep each job's own largest T,
get no difference and no verdict, and the report says so in a note.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..bench.modes import BENCH_MODES
from .format import num
from .runs import Run
from .tables import BENCH_FIGURES, point_figures


def completed(run: Run, mode: str) -> Optional[set[int]]:
    """The lengths at which the run has an ok `mode` point with a median; None when it has no point of the mode."""
    rows = [r for r in run.res.get("bench") or [] if isinstance(r, dict) and r.get("mode") == mode]
    if not rows:
        return None
    return {int(r["seq_len"]) for r in rows if r.get("status") == "ok" and num(r.get("median_ms"))
            and num(r.get("seq_len"))}


def common_lengths(variants: Sequence[Any]) -> dict[str, Optional[int]]:
    """mode -> the largest length every compared variant's reported ok jobs completed, or None when they
    share none; a mode no job benchmarked is absent."""
    out: dict[str, Optional[int]] = {}
    for mode in BENCH_MODES:
        sets = [s for v in variants for r in v.ok_runs if (s := completed(r, mode)) is not None]
        if sets:
            out[mode] = max(set.intersection(*sets), default=None)
    return out


def spans(variants: Sequence[Any], mode: str) -> str:
    """'mha: 256-4096; mqa: 8192' — the lengths each variant completed (for the no-common-length note)."""
    parts = []
    for v in variants:
        sets = [s for r in v.ok_runs if (s := completed(r, mode)) is not None]
        if sets:
            done = sorted(set.intersection(*sets))
            parts.append(f"{v.label}: " + (", ".join(map(str, done)) if done else "none"))
    return "; ".join(parts)


def at_length(row: dict, run: Run, lengths: dict[str, Optional[int]]) -> dict:
    """The csv_row of a run with each mode's bench figures taken at the common length (where there is one)."""
    for mode, T in lengths.items():
        if T is None:
            continue
        pt = next((r for r in run.res.get("bench") or [] if isinstance(r, dict) and r.get("mode") == mode
                   and r.get("status") == "ok" and r.get("seq_len") == T), {})
        row.update(point_figures(mode, pt))
    return row


def mode_of(fig: str) -> Optional[str]:
    """The bench mode a results.csv figure belongs to ('forward_median_ms' -> 'forward'), else None."""
    for mode in sorted(BENCH_MODES, key=len, reverse=True):  # train_step before a mode named 'train'
        if fig.startswith(mode + "_") and fig[len(mode) + 1:] in BENCH_FIGURES:
            return mode
    return None


def length_notes(variants: Sequence[Any], lengths: dict[str, Optional[int]]) -> list[str]:
    """One line per mode compared at no common length."""
    return [f"{mode}: the variants completed no sequence length in common ({spans(variants, mode)}); its "
            "figures are each variant's own largest length (T in the cell), with no difference and no verdict"
            for mode, T in lengths.items() if T is None]
