"""Result sinks: where metrics go besides results.json.

A sink has `log(metrics, step)`, `summary(results)` and `close(status)`. The
trainer logs through a sink and never knows whether W&B is on; local files are
the source of truth and W&B mirrors them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Sink(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def summary(self, results: dict[str, Any]) -> None: ...
    def close(self, status: str) -> None: ...


class JsonlSink:
    """Appends one JSON object per logged step to <run dir>/metrics.jsonl."""

    def __init__(self, path: Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")
        self._f.flush()

    def summary(self, results: dict[str, Any]) -> None:
        pass

    def close(self, status: str) -> None:
        self._f.close()


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


def make_sinks(cfg: Any, run_dir: Path, append: bool = False) -> MultiSink:
    """metrics.jsonl always; W&B when `logger=wandb` (mode offline unless set)."""
    sinks: list = [JsonlSink(Path(run_dir) / "metrics.jsonl", append=append)]
    if cfg.logger.name == "wandb":
        from .wandb_sink import WandbSink

        sink = WandbSink.create(cfg, Path(run_dir))
        if sink is not None:
            sinks.append(sink)
    return MultiSink(sinks)
