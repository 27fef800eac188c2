"""The dashboard's reading of W&B runs: key names only (track/wandb_keys.py), cached per job, equal to read_run's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnbench.report.dashboard_panels import Logged
from attnbench.track import wandb_keys
from attnbench.track.wandb_keys import CACHE_FILE, read_keys
from attnbench.track.wandb_reader import frame, read_run


def _item(msg, key: str, value: object) -> None:
    it = msg.add()
    it.nested_key.extend(key.split("/") if key.startswith("bench/") else [key])
    it.value_json = json.dumps(value)


def _records(run_id: str, steps: int, exit_code: int | None = 0) -> list[bytes]:
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    rec = pb.Record()
    rec.run.run_id, rec.run.project, rec.run.run_group, rec.run.display_name = run_id, "p", "g", "job"
    _item(rec.run.config.update, "attn.name", "mha")
    _item(rec.run.config.update, "_wandb", {"x": 1})
    out.append(rec.SerializeToString())
    for s in range(1, steps + 1):
        rec = pb.Record()
        _item(rec.history.item, "_step", s)
        _item(rec.history.item, "train_loss", 3.0 / s)
        if s % 5 == 0:
            _item(rec.history.item, "val_loss", 2.0)
        out.append(rec.SerializeToString())
        rec = pb.Record()
        _item(rec.summary.update, "train_loss", 3.0 / s)
        out.append(rec.SerializeToString())
    rec = pb.Record()
    _item(rec.summary.update, "bench/forward/T64/median_ms", 1.5)
    _item(rec.summary.update, "scratch", 1)
    out.append(rec.SerializeToString())
    rec = pb.Record()
    rec.summary.remove.add().nested_key.append("scratch")
    out.append(rec.SerializeToString())
    if exit_code is not None:
        rec = pb.Record()
        rec.exit.exit_code = exit_code
        out.append(rec.SerializeToString())
    return out


def _run(job: Path, run_id: str, stamp: str = "20261201_000000", steps: int = 12, **kw) -> Path:
    d = job / "wandb" / f"offline-run-{stamp}-{run_id}"
    d.mkdir(parents=True)
    f = d / f"run-{run_id}.wandb"
    f.write_bytes(frame(_records(run_id, steps, **kw)))
    return f


def test_keys_equal_what_read_run_finds(tmp_path):
    f = _run(tmp_path, "abc123", steps=40)  # 80+ records: several 32 KiB blocks are not needed, FULL chunks
    got, = read_keys(tmp_path)
    full = read_run(f)
    assert got.run_id == full.run_id == "abc123" and got.group == full.group == "g" and got.exit_code == 0
    assert got.history_keys == full.history_keys == {"_step", "train_loss", "val_loss"}
    assert got.summary == set(full.summary) == {"train_loss", "bench"}  # "scratch" was removed
    assert got.config == set(full.config) == {"attn.name"}
    a, b = Logged(), Logged()
    a.add(got)
    b.add(full)
    assert a == b


def test_second_read_comes_from_the_cache_until_the_file_changes(tmp_path, monkeypatch):
    f = _run(tmp_path, "abc123")
    first = read_keys(tmp_path)
    assert (tmp_path / "wandb" / CACHE_FILE).is_file()

    def no_scan(path):
        raise AssertionError(f"{path} parsed again although unchanged")

    monkeypatch.setattr(wandb_keys, "scan", no_scan)
    assert read_keys(tmp_path) == first
    monkeypatch.undo()
    f.write_bytes(frame(_records("abc123", 12, exit_code=None)))  # rewritten: another size
    assert read_keys(tmp_path)[0].exit_code is None


def test_bad_cache_or_foreign_file_never_stops_it(tmp_path, caplog):
    _run(tmp_path, "old1", stamp="20261201_000000")
    bad = _run(tmp_path, "new2", stamp="20261202_000000")
    (tmp_path / "wandb" / CACHE_FILE).write_text('{"version": 1, "runs": {"x": {"stamp": 1, "keys": []}}')  # torn
    assert [k.run_id for k in read_keys(tmp_path)] == ["old1", "new2"]  # oldest first
    cache = json.loads((tmp_path / "wandb" / CACHE_FILE).read_text())
    entry = next(v for k, v in cache["runs"].items() if "old1" in k)
    entry["keys"] = {"run_id": "old1"}  # malformed entry with the right stamp: read the file again
    (tmp_path / "wandb" / CACHE_FILE).write_text(json.dumps(cache))
    assert read_keys(tmp_path)[0].history_keys == {"_step", "train_loss", "val_loss"}
    bad.write_bytes(b"not a transaction log")
    assert [k.run_id for k in read_keys(tmp_path)] == ["old1"]
    assert "cannot read this W&B run" in caplog.text


@pytest.mark.parametrize("steps", [1, 3000])
def test_frame_round_trips_through_the_reader(tmp_path, steps):
    f = _run(tmp_path, "r1", steps=steps)  # 3000 steps: records cross 32 KiB block boundaries
    assert read_run(f).column("_step") == list(range(1, steps + 1))
