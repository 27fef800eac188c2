"""A job's logged history as columns: metrics.jsonl read once, kept beside it as an Arrow IPC file.

metrics.jsonl (one JSON object per logged step, track/sinks.py) stays the file a job appends
to while it runs; at the end the job also writes `metrics.arrow` (HISTORY_FILE), the same rows
as columns: `step` (int64) and every numeric key as float64 (null where a row lacks it), with
the format version and each column's unit in the schema metadata. Readers ask for the columns
they need and never parse JSON again.

The file records the size and modification time (ns) of the metrics.jsonl it was made from.
`read_history` uses it only while those still match; otherwise (a job from before this file,
a job still running, a resumed job that appended rows) it converts metrics.jsonl once and
writes the result in its place, so the next reader finds it (a read-only job directory is
read from the JSON every time and logged once). A torn line (a job killed mid-write), a line
that is not a JSON object, a non-numeric value or a row without a numeric step is skipped,
never fatal. Arrow IPC holds plain buffers: reading one back never runs code.

Why Arrow IPC through pyarrow (not Parquet, not polars): docs/internals.md#columnar-histories
has the measurements.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

SOURCE_FILE = "metrics.jsonl"
HISTORY_FILE = "metrics.arrow"
FORMAT_VERSION = 1
META_VERSION, META_UNITS, META_SOURCE = b"attnbench.history.version", b"attnbench.history.units", \
    b"attnbench.history.source"
# The units of the keys the trainer logs (train/loop.py); a key not named here is written with unit "".
UNITS = {"step": "optimizer steps", "train_loss": "nats/token", "val_loss": "nats/token", "lr": "1",
         "tokens_per_s": "tokens/s", "grad_norm": "1", "val_recall_acc": "fraction", "val_bpc": "bits/char",
         "val_acc": "fraction"}

Want = Union[None, Sequence[str], Callable[[str], bool]]  # which columns: all, these names, or a test on the name


@dataclass(frozen=True)
class History:
    """A job's history as columns: name -> array over the logged rows (NaN where a row lacks the key),
    in the order the rows were logged; `step` is always there (int64)."""

    columns: dict = field(default_factory=dict)  # str -> np.ndarray
    units: dict = field(default_factory=dict)  # str -> str

    def __len__(self) -> int:
        return len(self.columns.get("step", ()))

    def points(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows where `key` is a finite number."""
        if key not in self.columns or key == "step":
            return np.empty(0, np.int64), np.empty(0)
        y = self.columns[key]
        ok = np.isfinite(y)
        return self.columns["step"][ok], y[ok]

    @classmethod
    def from_rows(cls, rows: Iterable[object]) -> "History":
        """Columns from parsed rows; rows without a numeric step, and non-numeric values, are skipped."""
        kept = [r for r in rows if isinstance(r, dict) and _number(r.get("step")) is not None]
        names = list(dict.fromkeys(k for r in kept for k, v in r.items() if k != "step" and _number(v) is not None))
        cols = {"step": np.array([int(_number(r["step"])) for r in kept], dtype=np.int64)}
        for k in names:
            cols[k] = np.array([_number(r.get(k), nan=True) for r in kept], dtype=np.float64)
        return cls(cols, {k: UNITS.get(k, "") for k in cols})


def _number(v: object, nan: bool = False) -> Optional[float]:
    """A JSON number as a float (bools and text are not numbers); NaN or None otherwise."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return math.nan if nan else None


def parse_jsonl(path: Path) -> History:
    """metrics.jsonl as columns, skipping torn or foreign lines (see the module docstring).

    Arrow's C++ NDJSON reader parses a whole clean file (about 10x json.loads per line); a file it
    refuses (a torn or non-object line, NaN, a key of two types) is read again line by line."""
    import pyarrow as pa
    import pyarrow.json as pj

    data = Path(path).read_bytes()
    try:
        return _from_table(pj.read_json(pa.BufferReader(data)))
    except (pa.ArrowException, ValueError):
        pass
    rows = []
    for line in data.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # torn by a crash, or not JSON
            continue
    return History.from_rows(rows)


def _from_table(table: "pa.Table") -> History:
    """Numeric columns of a parsed NDJSON table (others dropped); rows without a numeric step dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "step" not in table.column_names or not _numeric(table.schema.field("step").type):
        return History.from_rows([])
    step = table.column("step")
    if step.null_count:
        table = table.filter(pc.is_valid(step))
    cols = {"step": table.column("step").to_numpy().astype(np.int64)}
    for name in table.column_names:
        if name != "step" and _numeric(table.schema.field(name).type):
            col = table.column(name).cast(pa.float64())
            cols[name] = col.to_numpy(zero_copy_only=False)  # nulls -> NaN
    return History(cols, {k: UNITS.get(k, "") for k in cols})


def _numeric(t: "pa.DataType") -> bool:
    import pyarrow.types as pt

    return pt.is_integer(t) or pt.is_floating(t)


# ----------------------------------------------------------------------------- the columnar file
def _source_key(src: Path) -> Optional[str]:
    try:
        st = src.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _select(names: Sequence[str], want: Want) -> list[str]:
    if want is None:
        return list(names)
    if callable(want):
        return [n for n in names if n == "step" or want(n)]
    return [n for n in names if n == "step" or n in set(want)]


def _read_arrow(path: Path, key: Optional[str], want: Want) -> Optional[History]:
    """The history in `path` if it is ours, of this version and (with a source) made from it; else None."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            meta = reader.schema.metadata or {}
            if meta.get(META_VERSION) != str(FORMAT_VERSION).encode():
                return None
            if key is not None and meta.get(META_SOURCE) != key.encode():
                return None  # stale: metrics.jsonl changed since
            names = _select(reader.schema.names, want)
            table = reader.read_all().select(names)
            units = json.loads(meta.get(META_UNITS, b"{}"))
    except (OSError, pa.ArrowException, ValueError):
        return None
    cols = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}
    cols = {n: (c.astype(np.int64) if n == "step" else c.astype(np.float64, copy=False)) for n, c in cols.items()}
    return History(cols, {n: units.get(n, "") for n in names})


def write_arrow(history: History, path: Path, source_key: Optional[str] = None) -> Path:
    """Write `history` to `path` atomically (a temp file renamed), with version, units and source key."""
    import pyarrow as pa

    meta = {META_VERSION: str(FORMAT_VERSION), META_UNITS: json.dumps(history.units, sort_keys=True)}
    if source_key is not None:
        meta[META_SOURCE] = source_key
    arrays = {n: pa.array(c, mask=None if n == "step" else np.isnan(c)) for n, c in history.columns.items()}
    table = pa.table(arrays).replace_schema_metadata(meta)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def convert(run_dir: Path) -> Optional[Path]:
    """Write <run_dir>/metrics.arrow from its metrics.jsonl (the job does this at the end); None without one."""
    src = Path(run_dir) / SOURCE_FILE
    key = _source_key(src)
    if key is None:
        return None
    return write_arrow(parse_jsonl(src), Path(run_dir) / HISTORY_FILE, key)


def read_history(run_dir: Path, want: Want = None) -> History:
    """A job's history, only the columns `want` names (step always): from metrics.arrow while it matches
    metrics.jsonl, else from metrics.jsonl, converted once and cached as metrics.arrow. Empty without either."""
    run_dir = Path(run_dir)
    src, dst = run_dir / SOURCE_FILE, run_dir / HISTORY_FILE
    key = _source_key(src)
    if dst.is_file() and (hist := _read_arrow(dst, key, want)) is not None:
        return hist
    if key is None:
        return History({"step": np.empty(0, np.int64)}, {"step": UNITS["step"]})
    hist = parse_jsonl(src)
    try:
        write_arrow(hist, dst, key)
    except OSError as exc:  # a read-only sweep: report from the JSON, every time
        log.info("%s: cannot cache the history (%s); reading metrics.jsonl each time", run_dir, exc)
    names = _select(list(hist.columns), want)
    return History({n: hist.columns[n] for n in names}, {n: hist.units[n] for n in names})


__all__ = ["FORMAT_VERSION", "HISTORY_FILE", "History", "SOURCE_FILE", "UNITS", "convert", "parse_jsonl",
           "read_history", "write_arrow"]
