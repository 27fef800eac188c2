"""The one set of cell formatters and table renderers of the report, the sweep summary and the CLI."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence


def num(x: Any) -> bool:
    """A real number (not None, bool or NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def fmt(x: Any, digits: int = 4) -> str:
    """A table cell: '-' for nothing, thousands separators for large numbers, 4 significant digits."""
    if x is None or x == "":
        return "-"
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        if x != x:
            return "-"
        return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.{digits}g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def fmt_num(x: Any, digits: int = 3) -> str:
    """Report figures: integers above 100 with separators, else `digits` significant digits."""
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


def fmt_pm(mean: Any, ci: Any, digits: int = 3, cell: Any = fmt_num) -> str:
    """'2.31 ± 0.05' (mean ± 95% CI half-width); just the mean when there is no CI (n = 1)."""
    if not num(mean):
        return "-"
    if not num(ci):
        return cell(mean)
    if cell is fmt_num and abs(mean) < 100:  # the CI decides how many decimals are worth printing
        from math import floor, log10

        dec = max(0, min(6, digits - 1 - floor(log10(ci)))) if ci > 0 else digits
        return f"{mean:.{dec}f} ± {ci:.{dec}f}"
    return f"{cell(mean)} ± {cell(ci)}"


def text_table(rows: Sequence[dict], cols: Sequence[str], left: Iterable[str] = (),
               cell: Any = fmt) -> str:
    """Plain-text table: numbers right-aligned, the `left` columns left-aligned; cells go through `cell`
    unless already strings."""
    left = set(left)
    cells = [[v if isinstance(v := r.get(c), str) else cell(v) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    just = lambda i, v: v.ljust(widths[i]) if cols[i] in left else v.rjust(widths[i])  # noqa: E731
    lines = ["  ".join(just(i, c) for i, c in enumerate(cols)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(just(i, v) for i, v in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(cols: Sequence[str], rows: Sequence[Sequence[Any]], note: Optional[str] = None) -> str:
    """A GitHub-flavoured Markdown table; `rows` hold one already formatted cell per column."""
    lines = ["| " + " | ".join(md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    if note:
        lines += ["", note]
    return "\n".join(lines)


def peak_mem(row: dict) -> Optional[int]:
    """A bench row's peak memory, or None where it is not a measurement: not measured, or below the
    instrument's resolution (`peak_mem_below_bytes`; a 0 in results written before that key existed)."""
    x = row.get("peak_mem_bytes")
    return x if num(x) and x > 0 and not row.get("peak_mem_below_bytes") else None


def peak_mem_cell(row: dict, cell: Any = fmt) -> str:
    """'<64 KiB' for a reading below the resolution, '<res' for an older 0, else the number."""
    if (x := peak_mem(row)) is not None:
        return cell(x)
    if num(below := row.get("peak_mem_below_bytes")):
        return "<" + fmt_bytes(below).replace(".0 ", " ")
    return "<res" if row.get("peak_mem_bytes") == 0 else "-"
