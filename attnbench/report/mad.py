"""The MAD table of a report: task x attention variant, mean accuracy with its 95% CI over seeds.

Added to report.md (and written as mad.csv) when the report holds data=mad jobs. A job's variant is
the value of its `+experiment/mad_attn` override (experiment=mad's sweep), else its attn.* overrides,
else attn.name; a cell is the mean over the ok jobs of that task and variant (its seeds), with a
Student-t 95% CI; the last row is each variant's mean over the tasks it has (unweighted).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from .format import fmt_pm
from .runs import Run, parse_overrides
from .stats import mean_ci
from .tables import write_csv

VARIANT_OVERRIDE = "experiment/mad_attn"  # parse_overrides drops the leading "+"


def attention_label(run: Run) -> str:
    over = parse_overrides(run.overrides)
    if VARIANT_OVERRIDE in over:
        return over[VARIANT_OVERRIDE]
    attn = [f"{k}={v}" for k, v in sorted(over.items()) if k == "attn" or k.startswith("attn.")]
    return " ".join(attn) or str((run.config.get("attn") or {}).get("name"))


def mad_cells(runs: Sequence[Run]) -> dict[tuple[str, str], list[float]]:
    """(task, variant) -> the metrics of its ok data=mad jobs."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in runs:
        data = r.config.get("data") or {}
        if data.get("name") == "mad" and r.ok and r.train.get("metric") is not None:
            cells[(str(data.get("task")), attention_label(r))].append(float(r.train["metric"]))
    return cells


def mad_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per (task, variant) and one `mean` row per variant: n, mean, ci95."""
    cells = mad_cells(runs)
    rows = []
    for (task, variant), xs in sorted(cells.items()):
        e = mean_ci(xs)
        rows.append({"task": task, "variant": variant, "n": e.n, "acc_mean": e.mean, "acc_ci95": e.ci95})
    for variant in sorted({v for _, v in cells}):
        means = [r["acc_mean"] for r in rows if r["variant"] == variant]
        rows.append({"task": "mean", "variant": variant, "n": len(means), "acc_mean": sum(means) / len(means),
                     "acc_ci95": None})
    return rows


def mad_markdown(rows: Sequence[dict]) -> list[str]:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    at = {(r["task"], r["variant"]): r for r in rows}
    out = ["## MAD tasks", "",
           "Accuracy on the probed positions, mean ± 95% CI over seeds (n); `mean`: the variant's mean over tasks.", "",
           "| task | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for t in tasks:
        cells = [at.get((t, v)) for v in variants]
        out.append(f"| {t} | " + " | ".join(
            "" if c is None else fmt_pm(c["acc_mean"], c["acc_ci95"]) + ("" if t == "mean" else f" ({c['n']})")
            for c in cells) + " |")
    return out + [""]


def write_mad(runs: Sequence[Run], out: Path, report_md: Path) -> Optional[Path]:
    """mad.csv and the table appended to report.md, when there are data=mad jobs; else nothing."""
    rows = mad_rows(runs)
    if not rows:
        return None
    with open(report_md, "a") as f:
        f.write("\n" + "\n".join(mad_markdown(rows)))
    return write_csv(out / "mad.csv", rows)
