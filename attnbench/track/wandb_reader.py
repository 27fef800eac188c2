"""Read a W&B run back from its local `.wandb` file, offline (wandb 0.31 has no public reader).

The file is wandb-core's append-only transaction log: a 7-byte header (b":W&B",
magic 0xBEE1 little-endian, version 0), then LevelDB-log framing in 32 KiB blocks.
Each chunk is crc32 (4 bytes LE, over the type byte and the data), length (2 bytes
LE), type (1 full, 2 first, 3 middle, 4 last) and data; a block tail shorter than a
chunk header is zero padding. A record is one `wandb_internal_pb2.Record` protobuf.
A truncated or corrupt tail ends the read, as in LevelDB.

Why a decoder of our own (checked for wandb 0.31 and PyPI, 2026-12): wandb has no Python reader of
this file any more; the old one (`wandb.sdk.internal.datastore`) went with the legacy Python backend,
and `wandb.sdk.internal` now holds three unrelated modules. The maintained decoder is wandb-core's
(Go), reachable only as the CLI `wandb leet inspect --json FILE`: one subprocess per file, 1.5-1.8 s
wall (0.45 s CPU) per job file here against ~30 ms for `read_run`, too slow for the sink's polling of
the exit record and for a 400-job report; and its JSON joins nested keys with dots
(`_wandb.runtime`), which cannot be told apart from attnbench's flat dotted config keys (`attn.name`).
No maintained package on PyPI reads the format either (wandb-osh and wandb-offline-sync only trigger
`wandb sync`; wandb-export and wandb-tui read the online API). So this module decodes the file, with
the record types from wandb's own protobufs (`wandb.proto`), and a test
(tests/test_dashboard.py::test_reader_agrees_with_wandbs_own_decoder) checks it against
`wandb leet inspect --json` on real runs: identity, exit code, config, history and summary.
"""
from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(data: bytes) -> Iterator[bytes]:
    """The serialized records in a transaction log, reassembled from their chunks."""
    if not data.startswith(HEADER):
        raise ValueError("not a W&B transaction log (bad header)")
    pos, parts = len(HEADER), []
    while pos + CHUNK.size <= len(data):
        if BLOCK - pos % BLOCK < CHUNK.size:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        body = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if kind == 0 or len(body) < length or zlib.crc32(bytes([kind]) + body) != crc:
            return  # unwritten, truncated or corrupt tail
        pos += CHUNK.size + length
        parts = [body] if kind in (FULL, FIRST) else parts + [body]
        if kind in (FULL, LAST):
            yield b"".join(parts)
            parts = []


def frame(payloads: Iterable[bytes]) -> bytes:
    """A transaction log holding `payloads` (the inverse of iter_payloads; tests and benchmarks write runs)."""
    out = bytearray(HEADER)
    for payload in payloads:
        first, rest = True, payload
        while True:
            space = BLOCK - len(out) % BLOCK
            if space < CHUNK.size:
                out += bytes(space)
                continue
            part, rest = rest[:space - CHUNK.size], rest[space - CHUNK.size:]
            kind = (FULL if not rest else FIRST) if first else (LAST if not rest else MIDDLE)
            out += CHUNK.pack(zlib.crc32(bytes([kind]) + part), len(part), kind) + part
            first = False
            if not rest:
                break
    return bytes(out)


def iter_records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in iter_payloads(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        yield rec


def has_exit_record(path: Path) -> bool:
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in iter_records(path))
    except (OSError, ValueError):
        return False


@dataclass
class RunIdentity:
    """Which W&B run a `.wandb` file holds, and how it ended."""

    path: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    exit_code: Optional[int] = None  # None: the run never finished


@dataclass
class WandbRun(RunIdentity):
    """What a run logged: identity, config (dotted keys as logged), history rows, summary."""

    tags: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def history_keys(self) -> set:
        """Every key of the history rows (what wandb_keys.RunKeys holds without the rows)."""
        return {k for row in self.history for k in row}

    def column(self, key: str) -> list:
        """One history key over the rows that have it."""
        return [row[key] for row in self.history if key in row]


def _put(target: dict, item: Any) -> None:
    """Apply one key/nested_key + value_json item; a multi-part nested_key is a nested dict."""
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = json.loads(item.value_json)


def _drop(target: dict, item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.get(k, {})
    target.pop(keys[-1], None)


def read_run(path: Path) -> WandbRun:
    """Read one `.wandb` file, or the latest run under a directory (see `find_run_files`)."""
    path = Path(path)
    if path.is_dir():
        files = find_run_files(path)
        if not files:
            raise FileNotFoundError(f"no W&B run file under {path}")
        path = files[-1]
    run = WandbRun(path=path)
    for rec in iter_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.name = r.run_id, r.project, r.display_name
            run.group, run.job_type, run.tags = r.run_group, r.job_type, list(r.tags)
            for item in r.config.update:
                _put(run.config, item)
        elif kind == "config":
            _update(run.config, rec.config)
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                _put(row, item)
            run.history.append(row)
        elif kind == "summary":
            _update(run.summary, rec.summary)
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def _update(target: dict, rec: Any) -> None:
    """A config or summary record: its `update` items set keys, its `remove` items drop them."""
    for item in rec.update:
        _put(target, item)
    for item in rec.remove:
        _drop(target, item)


def find_run_files(run_dir: Path) -> list[Path]:
    """`.wandb` files of the runs under run_dir/wandb (offline-run-* and run-*), oldest first."""
    root = Path(run_dir)
    root = root if root.name == "wandb" else root / "wandb"
    return sorted(root.glob("*run-*/run-*.wandb"), key=_start_order)


# (offline-)run-<yyyymmdd_hhmmss>-<run id>[-<n>]: W&B adds -1, -2, ... when an attempt of the same run id
# starts within the same second. Run ids may start with a digit, so the stamp is found by its shape,
# not by its position among the dashes.
_FOLDER = re.compile(r"run-(\d{8}_\d{6})-[^-]+(?:-(\d+))?$")


def _start_order(path: Path) -> tuple[str, int, float]:
    m = _FOLDER.search(path.parent.name)
    stamp, attempt = (m.group(1), int(m.group(2) or 0)) if m else ("", 0)
    return (stamp, attempt, path.stat().st_mtime)
