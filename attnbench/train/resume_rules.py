"""Which config changes a resumed training accepts (docs/training.md, "Resuming").

A checkpoint records the config keys that decide what is trained (`trained_config`): the
model and attention, the data, the optimizer and schedule, the seed and the compute dtype.
Resuming compares those, and a refusal names every key that differs, with both values, in
one line. Everything else alters nothing trained and may change between attempts:
evaluation, logging and checkpoint cadence, the bench, the logger, where the job runs.

`train.steps` may change too (the usual reason to resume a finished run is to extend it),
down to the checkpoint's step. The learning-rate schedule is then re-derived from the saved
step (`schedule.lr_at`'s anchor): warm-up is never repeated, and from the saved step the
cosine goes from the learning rate that step had to `lr · min_lr_ratio` at the new total, so
the rate is continuous. A run resumed during its warm-up gets exactly the new total's schedule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from .checkpoint import CheckpointError
from .schedule import lr_at

# Prefixes of dotted keys that alter nothing trained (why, for each):
UNTRAINED = (
    "hydra", "launch_id", "resume", "experiment", "stages",  # bookkeeping: how the job was launched
    "logger", "bench",  # the W&B mirror and the bench stage, not training
    "train.name", "model.name",  # preset labels; their values are compared key by key
    "train.eval_every", "train.eval_batches", "train.eval_seq_lens", "train.eval_window", "train.sample_tokens",
    "train.log_every", "train.checkpoint_every", "train.resume",  # cadence of evaluation, logging, saving
    "train.steps",  # may change: the schedule is re-derived (module docstring)
    "device.name", "device.threads", "device.compile", "device.memory_gb",  # where it runs (device.dtype counts)
    "data.cache_dir",  # where the download is cached; data.sha256 / path / url say what the data is
)


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _untrained(key: str) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in UNTRAINED)


def trained_config(cfg: DictConfig) -> dict[str, Any]:
    """The dotted keys (and values) that decide what is trained; plain data (weights_only-safe)."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in sorted(flat.items()) if not _untrained(k)}


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """`key=<checkpoint's value> (this job: <value>)` for each trained key that differs."""
    absent = "<absent>"
    keys = sorted(set(saved) | set(now))
    return [f"{k}={saved.get(k, absent)} (this job: {now.get(k, absent)})"
            for k in keys if saved.get(k, absent) != now.get(k, absent)]


def check_resumable(path: Path, obj: dict, cfg: DictConfig, config_hash: str) -> None:
    """Refuse (CheckpointError, one line) a checkpoint trained with other trained keys, or a
    train.steps below its step."""
    saved = obj.get("trained_config")
    if not isinstance(saved, dict):  # written before checkpoints recorded their keys: the hash decides
        if obj["config_hash"] != config_hash:
            raise CheckpointError(f"{path} belongs to another config (config hash {obj['config_hash']}, this job "
                                  f"{config_hash}; written by an older attnbench that records no keys): not "
                                  "resuming from it; delete it or run into another directory")
        return
    if diff := differences(saved, trained_config(cfg)):
        raise CheckpointError(f"{path} was trained with another config: {', '.join(diff)}; not resuming from it; "
                              "delete it or run into another directory")
    step = int(obj["counters"].get("step", 0))
    if int(cfg.train.steps) < step:
        raise CheckpointError(f"train.steps={cfg.train.steps} is below the step {step} that {path} reached; "
                              f"not resuming from it; use train.steps>={step}, or delete it to start over")


def resumed_anchor(obj: dict, cfg: DictConfig) -> Optional[list]:
    """The learning-rate anchor [step, lr] the resumed run trains with (schedule.lr_at): the saved
    one while train.steps is unchanged, else a new one at the saved step (module docstring)."""
    counters = obj["counters"]
    anchor, step = counters.get("lr_anchor"), int(counters.get("step", 0))
    old_steps = obj.get("train_steps", cfg.train.steps)
    if int(old_steps) == int(cfg.train.steps):
        return anchor
    if step <= int(cfg.train.warmup_steps):  # no decay yet: the new total's schedule, exactly
        return None
    old_tc = OmegaConf.merge(cfg.train, {"steps": int(old_steps)})
    return [step, lr_at(step, old_tc, anchor)]
