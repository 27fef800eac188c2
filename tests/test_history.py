"""Columnar histories (track/history.py) and the report's vectorised curve means (report/curves.py)."""
from __future__ import annotations

import json
import os
import math

import numpy as np
import pyarrow as pa
import pytest

from attnbench.report import curves
from attnbench.report.stats import mean_ci
from attnbench.track import history
from attnbench.track.history import FORMAT_VERSION, HISTORY_FILE, History, read_history
from attnbench.track.sinks import JsonlSink


def _rows(n: int = 5, loss0: float = 3.0) -> list[dict]:
    rows = [{"step": s, "train_loss": loss0 - 0.1 * s, "lr": 1e-3, "tokens_per_s": 1e4, "grad_norm": 0.5}
            for s in range(1, n + 1)]
    rows[-1].update(val_loss=loss0, val_recall_acc=0.25)
    return rows


def _write(path, lines) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _meta(path) -> dict:
    with pa.memory_map(str(path)) as f:
        return pa.ipc.open_file(f).schema.metadata


def test_job_writes_columnar_history_with_version_and_units(tmp_path):
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    for r in _rows():
        sink.log({k: v for k, v in r.items() if k != "step"}, r["step"])
    sink.close("ok")
    meta = _meta(tmp_path / HISTORY_FILE)
    assert meta[b"attnbench.history.version"] == str(FORMAT_VERSION).encode()
    units = json.loads(meta[b"attnbench.history.units"])
    assert units["train_loss"] == "nats/token" and units["step"] == "optimizer steps"
    h = read_history(tmp_path, want=["val_loss"])
    assert list(h.columns) == ["step", "val_loss"]  # only what was asked (and the step)
    assert h.columns["step"].tolist() == [1, 2, 3, 4, 5]
    assert np.isnan(h.columns["val_loss"][:4]).all() and h.columns["val_loss"][4] == 3.0
    assert h.units["val_loss"] == "nats/token"


def test_older_job_is_converted_once_and_cached_by_size_and_mtime(tmp_path, monkeypatch):
    src = tmp_path / "metrics.jsonl"
    _write(src, [json.dumps(r) for r in _rows()])
    first = read_history(tmp_path)  # no metrics.arrow yet: converts and caches
    assert (tmp_path / HISTORY_FILE).is_file()

    def no_json(path):
        raise AssertionError("parsed metrics.jsonl again although the cache matches")

    monkeypatch.setattr(history, "parse_jsonl", no_json)
    again = read_history(tmp_path)
    assert again.columns.keys() == first.columns.keys()
    assert all(np.array_equal(again.columns[k], first.columns[k], equal_nan=True) for k in first.columns)
    monkeypatch.undo()
    with open(src, "a") as f:  # a resumed job logs more: size and mtime change, the cache is stale
        f.write(json.dumps({"step": 6, "train_loss": 1.0}) + "\n")
    assert read_history(tmp_path).columns["step"].tolist() == [1, 2, 3, 4, 5, 6]


def test_same_size_rewrite_is_seen_through_mtime(tmp_path):
    src = tmp_path / "metrics.jsonl"
    _write(src, [json.dumps({"step": 1, "train_loss": 2.0})])
    read_history(tmp_path)
    _write(src, [json.dumps({"step": 1, "train_loss": 3.0})])  # same size, other content
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert read_history(tmp_path).columns["train_loss"].tolist() == [3.0]


@pytest.mark.parametrize("bad", ['{"step": 2, "train_lo', "[1, 2]", '"text"', "not json", '{"train_loss": 9}',
                                 '{"step": "3", "train_loss": 9}', '{"step": 3, "train_loss": NaN}'])
def test_torn_or_foreign_line_never_stops_it(tmp_path, bad):
    _write(tmp_path / "metrics.jsonl", [json.dumps({"step": 1, "train_loss": 2.0}), bad,
                                        json.dumps({"step": 4, "train_loss": 1.0, "note": "text", "ok": True})])
    h = read_history(tmp_path)
    steps, loss = h.points("train_loss")  # NaN (Python's json writes it) is a missing value
    assert steps.tolist() == [1, 4] and loss.tolist() == [2.0, 1.0]
    assert set(h.columns) == {"step", "train_loss"}  # text and booleans are not curves


def test_foreign_or_other_version_file_is_not_trusted(tmp_path):
    _write(tmp_path / "metrics.jsonl", [json.dumps({"step": 1, "train_loss": 2.0})])
    (tmp_path / HISTORY_FILE).write_bytes(b"garbage, not Arrow")
    assert read_history(tmp_path).columns["train_loss"].tolist() == [2.0]
    assert _meta(tmp_path / HISTORY_FILE)[b"attnbench.history.version"] == str(FORMAT_VERSION).encode()
    other = History({"step": np.array([1]), "train_loss": np.array([99.0])}, {})
    history.write_arrow(other, tmp_path / HISTORY_FILE, "1:1")  # made from another metrics.jsonl
    assert read_history(tmp_path).columns["train_loss"].tolist() == [2.0]


def test_unwritable_job_dir_reads_the_json(tmp_path, monkeypatch):
    _write(tmp_path / "metrics.jsonl", [json.dumps({"step": 1, "train_loss": 2.0})])

    def refuse(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(history, "write_arrow", refuse)
    assert read_history(tmp_path).columns["train_loss"].tolist() == [2.0]
    assert not (tmp_path / HISTORY_FILE).exists()


def test_no_history_is_empty(tmp_path):
    h = read_history(tmp_path)
    assert len(h) == 0 and list(h.columns) == ["step"]


def _reference(rows_per_rep: list[list[dict]], key: str) -> dict:
    """The report's curve mean before numpy: per step, stats.mean_ci over the replicates that have it."""
    per: dict = {}
    for rows in rows_per_rep:
        for r in rows:
            if isinstance(r.get(key), float):
                per.setdefault(r["step"], []).append(r[key])
    return {s: mean_ci(v) for s, v in sorted(per.items())}


def test_mean_curve_matches_mean_ci_per_step(tmp_path):
    rng = np.random.default_rng(0)
    reps = []
    for i in range(4):  # uneven grids: replicate 3 stops early, so the late steps have fewer replicates
        n = 7 if i < 3 else 4
        reps.append([{"step": s, "val_loss": float(rng.normal(2.0, 0.1))} for s in range(1, n + 1)])
    c = curves.mean_curve([History.from_rows(r) for r in reps], "val_loss")
    ref = _reference(reps, "val_loss")
    assert c.x.tolist() == list(ref)
    for x, y, lo, hi in zip(c.x, c.y, c.lo, c.hi):
        e = ref[int(x)]
        assert math.isclose(y, e.mean, rel_tol=1e-12)
        assert math.isclose(hi - y, e.ci95, rel_tol=1e-9) and math.isclose(y - lo, e.ci95, rel_tol=1e-9)
    single = curves.mean_curve([History.from_rows(reps[0])], "val_loss")
    assert np.array_equal(single.lo, single.y) and np.array_equal(single.hi, single.y)  # one replicate: no band


def test_smoothing_is_the_running_mean():
    y = np.arange(10, dtype=float)
    want = [np.mean(y[max(0, i - 2):i + 1]) for i in range(10)]
    assert np.allclose(curves.smooth(y, 3), want)


def test_variant_curves_read_job_dirs_lazily(tmp_path):
    dirs = []
    for i in range(3):
        d = tmp_path / str(i)
        d.mkdir()
        _write(d / "metrics.jsonl", [json.dumps(r) for r in _rows(loss0=3.0 + i)])
        dirs.append(d)
    got = curves.variant_curves(dirs)
    assert set(got) == {"train_loss", "val_loss", "val_recall_acc"}  # lr, grad_norm, tokens/s are not drawn
    assert got["val_loss"].x.tolist() == [5.0] and math.isclose(got["val_loss"].y[0], 4.0)
