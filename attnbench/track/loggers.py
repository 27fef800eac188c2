"""Logger backends: `logger=<name>` picks one, registered in `registry.LOGGERS` like the other components.

A backend is a factory `(cfg, run_dir) -> Sink | None` (see sinks.py for the Sink protocol); None
means "nothing to mirror this time" (for example W&B in `disabled` mode). A factory that also takes
a keyword `resume` is told when the job resumes from a checkpoint (train.resume=true, or a SLURM job
continued after a preemption or its time limit), so it can continue the earlier attempt's run. metrics.jsonl and
results.json are written whatever the backend, so a backend only ever mirrors them.

Config fields (`conf/logger/<name>.yaml`, schema `LoggerConfig`): `logger.name` picks the backend;
`logger.mode`, `logger.project`, `logger.tags` and `logger.group` are meant for any tracking backend;
`logger.entity`, `logger.init_timeout_s`, `logger.finish_timeout_s` and `logger.system_stats` are
read by the W&B backend only.

Adding a backend: register a factory here (a large one can live in its own module imported lazily
from its factory, as `wandb` does) and add `conf/logger/<name>.yaml` with `name: <name>`. A package
outside attnbench can register one too: `registry.LOGGERS.register("mine")(factory)`, then
`logger.name=mine`.
"""
from __future__ import annotations

import inspect

from pathlib import Path
from typing import Any, Optional

from ..registry import LOGGERS
from .wandb_rules import LOGGER_MODES

__all__ = ["LOGGER_MODES", "logger_sink", "no_logger", "wandb_logger"]


@LOGGERS.register("none")
def no_logger(cfg: Any, run_dir: Path) -> None:
    """No mirror: results.json and metrics.jsonl only."""
    return None


@LOGGERS.register("wandb")
def wandb_logger(cfg: Any, run_dir: Path, resume: bool = False) -> Optional[Any]:
    """Weights & Biases (Biewald, 2020, wandb.ai): one run per job, offline unless `logger.mode=online`;
    a resumed job continues its W&B run (same run id)."""
    from .wandb_sink import WandbSink  # wandb itself is imported only when a W&B run starts

    return WandbSink.create(cfg, Path(run_dir), resume=resume)


def logger_sink(cfg: Any, run_dir: Path, resume: bool = False) -> Optional[Any]:
    """The sink of the configured backend (`logger.name`); an unknown name is a ConfigError listing the choices."""
    factory = LOGGERS.get(cfg.logger.name)
    if resume and "resume" in inspect.signature(factory).parameters:
        return factory(cfg, Path(run_dir), resume=True)
    return factory(cfg, Path(run_dir))
