"""Training checkpoints: everything an uninterrupted run would still have in memory.

Model and optimizer state, the grad scaler, the step (which is also the learning
-rate schedule position and the data position, see data.py), the RNG states and
the running counters; and who wrote it: the config keys that decide what is trained
(train/resume_rules.py, compared on resume) and the SLURM job that wrote it (a job that
SLURM restarts resumes only its own checkpoint, sweep/continuation.py). Written to a
temporary file, fsync'd, renamed, and the directory fsync'd: a kill during the save
leaves the previous checkpoint intact, and after a node crash the rename is on disk
(without the two fsyncs, ext4 and XFS can keep the new name pointing at a file whose
data never reached the disk: an empty checkpoint.pt). A SIGKILL during the save leaves
its temporary file (as large as the checkpoint): the next save, and every training
start, deletes such leftovers (`remove_stale_temps`).

Read with `torch.load(weights_only=True)`: a checkpoint on a shared filesystem is
untrusted input, and a full unpickler would run whatever code a crafted file names.
Everything saved is therefore plain data that the restricted unpickler accepts
(tensors, dicts, lists, ints, floats, strings, None): the Python `random` state is
stored as a list, not its native tuple. numpy's RNG is not used by attnbench, so
it is not saved.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 2  # 2: weights_only-safe RNG states (1 stored Python's random state as a tuple)


class CheckpointError(ConfigError):
    """The run directory's checkpoint cannot be used; one line, like every bad input."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def rng_state() -> dict:
    version, internal, gauss_next = random.getstate()
    state: dict = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()  # a list of ByteTensors
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any,
                    counters: dict, config_hash: str, meta: Optional[dict] = None) -> None:
    """Save atomically. `meta`: plain data kept beside the state (`trained_config`, `slurm_job_id`)."""
    obj = {
        **(meta or {}), "format": FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(), "counters": counters, "rng": rng_state(), "config_hash": config_hash,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
        fsync_dir(path.parent)  # and the rename itself survives a crash
    finally:
        Path(tmp).unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> int:
    """Delete the temporary files that a save of `path` killed outright (SIGKILL, node crash) left
    behind; returns how many. Only one process writes a run directory's checkpoint at a time (the
    job, or the next attempt of the same job), so a temporary file seen here is never a live save."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and Windows) refuse fsync on a directory: the rename is still done
        pass
    finally:
        os.close(fd)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, read without running any code from the file.

    Raises CheckpointError (one line) for a file that is torn, corrupt, crafted, or not a checkpoint."""
    path = Path(path)
    try:
        # Loaded on CPU: load_state_dict copies onto the parameters' device, and the RNG states must stay on CPU.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn zip, truncated pickle, a global the restricted unpickler refuses, ...
        raise CheckpointError(f"{path} is unreadable: {_one_line(exc)}; delete it to start over") from None
    missing = [k for k in ("model", "optimizer", "scaler", "counters", "rng", "config_hash")
               if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise CheckpointError(f"{path} is unreadable: not an attnbench checkpoint (no {', '.join(missing)}); "
                              "delete it to start over")
    fmt = obj.get("format", 1)
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {fmt!r}, newer than this attnbench reads "
                              f"(format {FORMAT}): update attnbench to use it, or delete it to start over")
    return obj


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any,
                    config_hash: Optional[str] = None) -> Optional[dict]:
    """Restore a checkpoint into model/optimizer/scaler and the RNGs; returns it (None if absent).

    With `config_hash`, a checkpoint written by another config is refused before anything is loaded.
    The trainer compares the trained keys instead (train/resume_rules.py), which names what differs."""
    path = Path(path)
    if not path.is_file():
        return None
    obj = read_checkpoint(path)
    if config_hash is not None and obj["config_hash"] != config_hash:
        raise CheckpointError(f"{path} belongs to another config (config hash {obj['config_hash']}, this job "
                              f"{config_hash}): not resuming from it; delete it or run into another directory")
    return restore_checkpoint(path, obj, model, opt, scaler)


def restore_checkpoint(path: Path, obj: dict, model: torch.nn.Module, opt: torch.optim.Optimizer,
                       scaler: Any) -> dict:
    """Load `obj` (read_checkpoint's answer for `path`) into model/optimizer/scaler and the RNGs."""
    try:
        model.load_state_dict(obj["model"])
        opt.load_state_dict(obj["optimizer"])
        scaler.load_state_dict(obj["scaler"])
        set_rng_state(obj["rng"])
    except Exception as exc:  # e.g. a checkpoint of another architecture left in this run directory
        raise CheckpointError(f"{path} does not fit this run: {_one_line(exc)}; "
                              "delete it to start over") from None
    return obj


def init_weights_from(model: torch.nn.Module, source: str) -> Path:
    """train.init_from: start from another run's weights (fine-tuning), not its optimizer, step or RNGs.

    `source` is a checkpoint file or a run directory holding one. The state_dict must fit this model
    exactly (strict): buffers such as RoPE frequencies are not saved, so pos.scaling may differ."""
    path = Path(source).expanduser()
    path = checkpoint_path(path) if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"train.init_from={source}: no checkpoint file there")
    obj = read_checkpoint(path)
    try:
        model.load_state_dict(obj["model"])
    except Exception as exc:
        raise CheckpointError(f"train.init_from={source}: does not fit this model: {_one_line(exc)}") from None
    return path
