"""Refuse a bad sweep before it launches: every job's config composed and validated here.

`python -m attnbench -m ...` calls `check_sweep_overrides` before Hydra starts or submits any
job. The jobs are enumerated as Hydra's basic sweeper will launch them (the experiment's
`hydra.sweeper.params`, then the command line; `BasicSweeper.split_arguments`), and each is
composed and validated (config/validate.py, including the size check of config/size.py). Any
failure refuses the whole sweep: one line per distinct error with the jobs it applies to, nothing
launched (exit 2 in `attnbench.__main__`), also when only some jobs are bad: a typo in a
400-job grid costs seconds, not a queue wait per job.

Fast because configs are composed once per combination of config-group choices (`attn=gqa`,
`+experiment/depth_width=L8_D64`, ...): each job then copies that config and applies its value
overrides with Hydra's own `_apply_overrides_to_config`, the step Hydra itself runs after composing
the defaults list, so the result is the config the job will get (tests/test_precheck.py compares).

A launch into a sweep directory whose jobs SLURM (or their launcher) still runs is refused in one
line naming them (busy.py `refuse_busy_directory`): two writers in one job directory corrupt it.

Launchers that run the jobs on other machines (SLURM) are checked for the device the jobs will
have (`device=cuda`, or `auto` with GPUs requested: `gpus_per_node`, `gpus_per_task`, a `gres`
with `gpu`, or `--gpus` among the additional parameters), not for this login node's; the memory for the
size check is `device.memory_gb` when given, else the requested `hydra.launcher.mem_gb` on CPU,
else it is left to each job, which checks again on its node before building the model.
"""
from __future__ import annotations

import copy
import logging
from collections import defaultdict
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, open_dict

from ..errors import ConfigError

log = logging.getLogger(__name__)

MAX_LISTED = 3  # jobs named per error line; the rest are counted


class SweepRefused(ConfigError):
    """A sweep with invalid jobs: str() is one line per distinct error, then the count."""


def check_sweep_overrides(overrides: Sequence[str]) -> int:
    """Compose and validate every job of the multirun that `overrides` (the command line, without
    -m) describe; return the number of jobs checked (0 for a sweeper other than Hydra's basic one,
    which picks its jobs as it goes). Raises ConfigError (one line) when the sweep itself cannot be
    parsed or composed, SweepRefused when any job is invalid."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra import initialize_config_dir

    from ..config import check_group_overrides, conf_dir, one_line_error
    from .busy import refuse_busy_directory
    from .plugins import register_launchers
    from .slurm_wait import WaitBounds

    check_group_overrides(overrides)
    register_launchers()  # hydra/launcher=slurm_gpu composes only once its base config is stored
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            hydra = GlobalHydra.instance().hydra
            master = _master_config(hydra, overrides, one_line_error)
            refuse_busy_directory(master)  # before anything else: SLURM may still run jobs in that directory
            WaitBounds.check_launcher(master.hydra.get("launcher"))  # the SLURM launcher's wait bounds
            if "BasicSweeper" not in str(master.hydra.sweeper.get("_target_", "")):
                log.info("hydra.sweeper=%s: its jobs are not known before it runs; not checked here",
                         master.hydra.sweeper.get("_target_"))
                return 0
            jobs = sweep_jobs(master, one_line_error)
            errors = _check_jobs(hydra.config_loader, master, jobs, one_line_error)
    finally:
        GlobalHydra.instance().clear()
    if errors:
        raise SweepRefused(refusal(errors, jobs))
    return len(jobs)


def _master_config(hydra: Any, overrides: Sequence[str], one_line: Any) -> DictConfig:
    """The launching config, composed as `hydra.multirun` composes it."""
    from hydra.types import RunMode

    try:
        return hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN,
                                    with_log_configuration=False)
    except Exception as exc:
        raise ConfigError(one_line(exc)) from exc


def sweep_jobs(master: DictConfig, one_line: Any) -> list[list[str]]:
    """Every job's overrides, in launch order, as the basic sweeper computes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = master.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in master.hydra.overrides.task]
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as exc:
        raise ConfigError(one_line(exc)) from exc


# validate() never reads these keys (tests/test_precheck.py makes reading them fail): jobs that differ only
# in them share one validation, once every value has been applied (so `seed=abc` is still caught).
NOT_VALIDATED = ("seed",)


def _check_jobs(loader: Any, master: DictConfig, jobs: list[list[str]], one_line: Any) -> dict[str, list[int]]:
    """{one-line error: the numbers of the jobs it applies to}; empty when every job is valid."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed_cache: dict[str, Any] = {}
    bases: dict[tuple, Any] = {}
    outcome: dict[tuple, Optional[str]] = {}  # (groups, validated values) -> error or None
    applied: set[str] = set()
    target = launch_target(master)
    errors: dict[str, list[int]] = defaultdict(list)
    for num, job in enumerate(jobs):
        try:
            for line in job:
                if line not in parsed_cache:
                    parsed_cache[line] = parser.parse_overrides([line])[0]
        except Exception as exc:
            errors[one_line(exc)].append(num)
            continue
        parsed = [parsed_cache[line] for line in job]
        groups = tuple(o.input_line for o in parsed if loader.repository.group_exists(o.key_or_group))
        values = [o for o in parsed if o.input_line not in groups and not o.key_or_group.startswith("hydra")]
        key = (groups, tuple(o.input_line for o in values if o.key_or_group not in NOT_VALIDATED))
        fresh = {o.input_line for o in values} - applied
        if key not in outcome or fresh:
            if groups not in bases:
                bases[groups] = _compose_base(loader, master, groups)
            outcome[key] = _check_one(bases[groups], values, target, one_line)
            applied |= fresh
        if outcome[key] is not None:
            errors[outcome[key]].append(num)
    return errors


def _check_one(base: Any, values: list, target: Any, one_line: Any) -> Optional[str]:
    """The one-line error of one job (its group choices composed into `base`, then its value overrides), or None."""
    from ..config import validate

    try:
        if isinstance(base, ConfigError):
            raise base
        cfg = copy.deepcopy(base)
        _apply(values, cfg)
        validate(cfg, target=target)
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # Hydra/OmegaConf errors: one line naming the key
        return one_line(exc)
    return None


def _compose_base(loader: Any, master: DictConfig, groups: tuple) -> Any:
    """The task config for one combination of group choices (no value overrides yet), or the ConfigError."""
    from hydra.types import RunMode

    from ..config import one_line_error

    hydra_overrides = [str(o) for o in master.hydra.overrides.hydra]
    try:
        cfg = loader.load_configuration("config", overrides=hydra_overrides + list(groups), run_mode=RunMode.RUN)
    except Exception as exc:
        return ConfigError(one_line_error(exc))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _apply(values: list, cfg: DictConfig) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)


def launch_target(master: DictConfig) -> Any:
    """Where the jobs will run: None = this machine (basic, joblib, submitit_local launchers); for a
    launcher that submits to other machines (SLURM), the device and memory they will have."""
    from ..device import Target

    launcher = master.hydra.get("launcher") or {}
    if "Slurm" not in str(launcher.get("_target_", "")):
        return None
    dev = master.get("device") or {}
    name = str(dev.get("name", "auto"))
    extra = launcher.get("additional_parameters") or {}
    gpus = any((launcher.get(k) or 0) for k in ("gpus_per_node", "gpus_per_task")) or any(
        gres_gpus(src.get("gres")) for src in (launcher, extra)) or bool(extra.get("gpus"))
    device = ("cuda" if gpus else "cpu") if name == "auto" else name
    memory = dev.get("memory_gb")
    if memory is None and device == "cpu" and launcher.get("mem_gb"):
        memory = launcher.get("mem_gb")
    return Target(device_type=device, memory_bytes=int(float(memory) * 2**30) if memory else None)


def gres_gpus(gres: Any) -> int:
    """GPUs asked for in a SLURM `gres` ("gpu:1", "gpu:a100:2,shard:4", "gpu" = 1); 0 for none."""
    total = 0
    for item in str(gres or "").split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu":
            continue
        total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def refusal(errors: dict[str, list[int]], jobs: list[list[str]]) -> str:
    """One line per distinct error with the jobs it applies to (their swept overrides), then the count."""
    from ..report.runs import differing_overrides

    swept = differing_overrides(jobs) if len(jobs) > 1 else [" ".join(j) for j in jobs]
    lines = []
    for msg, nums in errors.items():
        named = ", ".join(f"#{n} {swept[n] or ' '.join(jobs[n])}".strip() for n in nums[:MAX_LISTED])
        more = f", and {len(nums) - MAX_LISTED} more" if len(nums) > MAX_LISTED else ""
        lines.append(f"{msg} [{len(nums)} of {len(jobs)} jobs: {named}{more}]")
    bad = len({n for nums in errors.values() for n in nums})
    lines.append(f"sweep refused: {bad} of {len(jobs)} jobs are invalid; no job was launched")
    return "\n".join(lines)


__all__ = ["SweepRefused", "check_sweep_overrides", "launch_target", "refusal", "sweep_jobs"]
