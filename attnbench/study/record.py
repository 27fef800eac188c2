"""study.json: what a study was asked to do and how far it got (issue 27's Record).

Written atomically (track/results.py write_json_atomic: a temporary file, fsync, rename) after
every change, so Ctrl-C, a lost login session or a kill leaves either the old or the new record,
never a torn one. A launch is marked `done` only after its multirun returned, so an interrupted
launch is run again on the next invocation (its finished jobs are skipped by `resume=true`).

    command     what identifies the study: --tune, --baseline, --objective, --confirm-seeds,
                --max-extensions and the overrides after `--` (a re-run must match it)
    argv        the command line as typed (for people)
    stages      tune / extend / confirm / report: "done" once finished
    launches    per sweep directory (relative to the study's --dir): its overrides, the number of
                jobs, its state (planned, running, done, refused), and each attempt's launch id and
                SLURM job ids
    extensions  each grid extension: its number k (extend/<k>), round, variant, edge, the value it
                extends from and the value tried
    edges       variants whose choice is still at an edge when the Extend stage ends, and why
    confirm     the fresh seeds and the confirmation launches
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..track.results import write_json_atomic

NAME = "study.json"
VERSION = 1
STAGES = ("tune", "extend", "confirm", "report")
PLANNED, RUNNING, DONE, REFUSED = "planned", "running", "done", "refused"


@dataclass(frozen=True)
class Command:
    """The options that decide which jobs a study runs and how it chooses (its identity)."""

    tune: str
    baseline: list
    objective: Optional[str]
    confirm_seeds: int
    max_extensions: int
    overrides: list

    def differs(self, other: "Command") -> Optional[str]:
        """One line naming the first field that differs from `other` (the recorded command), or None."""
        mine, theirs = asdict(self), asdict(other)
        for key, value in mine.items():
            if value != theirs.get(key):
                flag = "the overrides after --" if key == "overrides" else "--" + key.replace("_", "-")
                return f"{flag}: this command has {_show(value)}, the study has {_show(theirs.get(key))}"
        return None


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass
class Study:
    """The record of one study directory; `save()` after every change."""

    dir: Path
    command: Command
    argv: str = ""
    stages: dict = field(default_factory=dict)
    launches: dict = field(default_factory=dict)
    extensions: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    confirm: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.dir / NAME

    def save(self) -> None:
        body = {"version": VERSION, "command": asdict(self.command), "argv": self.argv, "stages": self.stages,
                "launches": self.launches, "extensions": self.extensions, "edges": self.edges,
                "confirm": self.confirm, "updated": _now()}
        write_json_atomic(self.path, body)

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("state") == DONE

    def finish(self, stage: str, **facts: Any) -> None:
        self.stages[stage] = {"state": DONE, "ended": _now(), **facts}
        self.save()

    def launch(self, name: str, overrides: list, jobs: int) -> dict:
        """The record of the launch into <dir>/<name>, created (planned) when new."""
        entry = self.launches.setdefault(name, {"overrides": list(overrides), "jobs": jobs, "state": PLANNED,
                                                "attempts": []})
        return entry


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load(directory: Path, command: Command, argv: str) -> Study:
    """The study in `directory`: a new one, or the recorded one when its command is this one. Raises
    ConfigError (one line) when the directory holds a study of another command or an unreadable record."""
    path = Path(directory) / NAME
    if not path.exists():
        if Path(directory).is_dir() and any(Path(directory).iterdir()):
            raise ConfigError(f"--dir {directory}: not empty and no {NAME} in it (not a study's folder); "
                              "give a new or empty folder")
        return Study(dir=Path(directory), command=command, argv=argv)
    try:
        body = json.loads(path.read_text())
        recorded = Command(**body["command"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable study record ({type(exc).__name__}); "
                          "use another --dir or remove it") from exc
    if why := command.differs(recorded):
        raise ConfigError(f"--dir {directory} holds a study of another command ({why}); "
                          "re-run that command to continue it, or use another --dir")
    return Study(dir=Path(directory), command=recorded, argv=body.get("argv", argv),
                 stages=body.get("stages", {}), launches=body.get("launches", {}),
                 extensions=body.get("extensions", []), edges=body.get("edges", []),
                 confirm=body.get("confirm", {}))


__all__ = ["Command", "DONE", "NAME", "PLANNED", "REFUSED", "RUNNING", "STAGES", "Study", "load"]
