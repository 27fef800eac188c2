"""Result sinks: where metrics go besides results.json.

A sink has `log(metrics, step)`, `summary(results)` and `close(status)`. The
trainer logs through a sink and never knows whether W&B is on; local files are
the source of truth and W&B mirrors them.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Sink(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def summary(self, results: dict[str, Any]) -> None: ...
    def close(self, status: str) -> None: ...
    # Optional: `rewind(step)` forgets history after `step` (train.resume restarts from a checkpoint there).
    # Optional: `identity()` -> results.json keys that name the sink's run (W&B: {"wandb_run_id": ...}).


class JsonlSink:
    """Appends one JSON object per logged step to <run dir>/metrics.jsonl."""

    def __init__(self, path: Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")
        self._f.flush()

    def rewind(self, step: int) -> int:
        """Keep only the rows with step <= `step`; returns how many rows were dropped.

        A run killed after its last checkpoint logged steps that the resumed run logs again:
        without this, metrics.jsonl holds them twice and the curves zig-zag. The file is
        rewritten to a temporary file and renamed, so a kill here leaves the old file whole."""
        self._f.close()
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines() if self.path.is_file() else []:
            try:
                row_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):  # a line torn by the crash
                dropped += 1
                continue
            if isinstance(row_step, int) and row_step <= step:
                kept.append(line)
            else:
                dropped += 1
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(line + "\n" for line in kept))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._f = open(self.path, "a")
        if dropped:
            log.info("%s: dropped %d rows logged after step %d (resuming from there)", self.path, dropped, step)
        return dropped

    def summary(self, results: dict[str, Any]) -> None:
        pass

    def close(self, status: str) -> None:
        """Close metrics.jsonl and write its columnar copy (track/history.py), which the report reads."""
        self._f.close()
        from .history import convert

        try:
            convert(self.path.parent)
        except Exception as exc:  # the copy is a cache: the report rebuilds it from metrics.jsonl
            log.warning("%s: columnar history not written: %s", self.path.parent, exc)


class MultiSink:
    """Fans out to several sinks; a failing mirror (W&B) never loses local results."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def _each(self, method: str, *args: Any) -> None:
        for s in self.sinks:
            try:
                getattr(s, method)(*args)
            except Exception as exc:  # a mirror must not take the run down
                log.warning("%s.%s failed: %s", type(s).__name__, method, exc)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._each("log", metrics, step)

    def summary(self, results: dict[str, Any]) -> None:
        self._each("summary", results)

    def close(self, status: str) -> None:
        self._each("close", status)

    def identity(self) -> dict[str, Any]:
        """What names this job's runs in the sinks (results.json records it, so that a reader of the
        mirror, e.g. the report's W&B dashboard, takes this job's run and no earlier one)."""
        out: dict[str, Any] = {}
        for s in self.sinks:
            if hasattr(s, "identity"):
                try:
                    out.update(s.identity())
                except Exception as exc:  # a mirror must not take the run down
                    log.warning("%s.identity failed: %s", type(s).__name__, exc)
        return out

    def rewind(self, step: int) -> None:
        """Forget history after `step` in every sink that keeps one (see JsonlSink.rewind)."""
        for s in self.sinks:
            if hasattr(s, "rewind"):
                try:
                    s.rewind(step)
                except Exception as exc:  # a mirror must not take the run down
                    log.warning("%s.rewind failed: %s", type(s).__name__, exc)


def make_sinks(cfg: Any, run_dir: Path, append: bool = False) -> MultiSink:
    """metrics.jsonl always, plus the mirror of the `logger` backend (registry.LOGGERS; see loggers.py)."""
    from .loggers import logger_sink

    sinks: list = [JsonlSink(Path(run_dir) / "metrics.jsonl", append=append)]
    sink = logger_sink(cfg, Path(run_dir), resume=append)
    if sink is not None:
        sinks.append(sink)
    return MultiSink(sinks)
