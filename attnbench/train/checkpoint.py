"""Training checkpoints: everything an uninterrupted run would still have in memory.

Model and optimizer state, the grad scaler, the step (which is also the learning
-rate schedule position and the data position, see data.py), the RNG states and
the running counters. Written to a temporary file and renamed, so a kill during
the save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any,
                    counters: dict, config_hash: str) -> None:
    obj = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
        "counters": counters, "rng": rng_state(), "config_hash": config_hash,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any) -> Optional[dict]:
    """Restore a checkpoint into model/optimizer/scaler and the RNGs; returns it (None if absent)."""
    path = Path(path)
    if not path.is_file():
        return None
    # weights_only=False: the RNG states hold Python tuples; the file is one this program wrote.
    # Loaded on CPU: load_state_dict copies onto the parameters' device, and the RNG states must stay on CPU.
    obj = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(obj["model"])
    opt.load_state_dict(obj["optimizer"])
    scaler.load_state_dict(obj["scaler"])
    set_rng_state(obj["rng"])
    return obj
