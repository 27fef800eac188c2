"""What a study will run, read from its overrides before anything launches (issue 27).

`read_plan` refuses a bad study in one line before any job starts: the sweep check of
`python -m attnbench -m` (sweep/precheck.py: every job composed and validated), then the study's
own rules: `--tune` must name a config key that the sweep gives at least two values, the seeds
must be integers (the confirmation seeds are the next integers above them), and the grid must
have a step of its own (grid.py) unless `--max-extensions 0`. The overrides that belong to the
study (`hydra.sweep.dir`, `resume`) are refused too: the study sets them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .grid import Step, grid_step

SEED = "seed"  # the replicate key of a study (the report's default --replicates)
OWNED = ("hydra.sweep.dir", "resume", "hydra.mode")  # set by the study for each launch


@dataclass
class Plan:
    """The tuning sweep as Hydra will launch it."""

    jobs: list  # every job's overrides, in launch order
    values: list  # the --tune grid as written (one string per value, in order of first use)
    seeds: list  # the tuning seeds (ints)
    step: Optional[Step]
    hydra: list = field(default_factory=list)  # the user's Hydra overrides (launcher and its settings)
    poll_s: float = 10.0  # how often to look at a SLURM queue (hydra.launcher.poll_s when set)
    master: Optional[DictConfig] = None  # the launching config
    slurm: bool = False  # the launcher submits to SLURM (a re-run then asks the queue first)


def key_of(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def value_of(override: str) -> str:
    return override.partition("=")[2]


def compose_sweep(overrides: Sequence[str]) -> tuple[DictConfig, list[list[str]]]:
    """(the launching config, every job's overrides) as `python -m attnbench -m` computes them."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ..config import conf_dir, one_line_error
    from ..sweep.plugins import register_launchers
    from ..sweep.precheck import _master_config, sweep_jobs

    register_launchers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            master = _master_config(GlobalHydra.instance().hydra, list(overrides), one_line_error)
            return master, sweep_jobs(master, one_line_error)
    finally:
        GlobalHydra.instance().clear()


def check_owned(overrides: Sequence[str]) -> None:
    for o in overrides:
        if key_of(o) in OWNED:
            raise ConfigError(f"{o}: the study sets {key_of(o)} itself (its folders are under --dir); leave it out")


def swept_values(jobs: Sequence[Sequence[str]], key: str) -> list[str]:
    """The values the jobs give `key`, in order of first use."""
    return list(dict.fromkeys(value_of(o) for job in jobs for o in job if key_of(o) == key))


def read_plan(overrides: Sequence[str], tune: str, max_extensions: int) -> Plan:
    """The tuning sweep's plan; ConfigError (one line) for anything that would fail later."""
    from ..sweep.precheck import check_sweep_overrides

    check_owned(overrides)
    check_sweep_overrides(list(overrides))
    master, jobs = compose_sweep(overrides)
    if OmegaConf.select(master, tune, default="<absent>") == "<absent>" or tune.startswith("hydra"):
        raise ConfigError(f"--tune {tune}: not a key of the config (e.g. train.lr, model.d_model, attn.window)")
    values = swept_values(jobs, tune)
    if len(values) < 2:
        raise ConfigError(f"--tune {tune}: the sweep gives it {len(values) or 'no'} value{'s' * (len(values) != 1)} "
                          f"({', '.join(values) or 'none swept'}); give a grid after --, e.g. {tune}=1e-3,3e-3,1e-2")
    seeds = _seeds(jobs, master)
    step = grid_step(values)
    if step is None and max_extensions > 0:
        raise ConfigError(f"--tune {tune}: the grid {', '.join(values)} has no step of its own (neither equal "
                          "ratios nor equal differences), so its edges cannot be extended; use an even grid "
                          "or --max-extensions 0")
    hydra = [o for o in overrides if key_of(o).startswith("hydra")]
    poll = OmegaConf.select(master, "hydra.launcher.poll_s", default=None)
    return Plan(jobs=jobs, values=values, seeds=seeds, step=step, hydra=hydra,
                poll_s=float(poll) if poll is not None else 10.0, master=master,
                slurm="Slurm" in str(OmegaConf.select(master, "hydra.launcher._target_", default="")))


def _seeds(jobs: Sequence[Sequence[str]], master: DictConfig) -> list[int]:
    raw = swept_values(jobs, SEED) or [str(master.get(SEED))]
    try:
        return [int(s) for s in raw]
    except ValueError:
        raise ConfigError(f"seed: the study's seeds must be integers (the confirmation runs take the next "
                          f"integers above them), got {', '.join(raw)}") from None


def count_jobs(overrides: Sequence[str]) -> int:
    """How many jobs a multirun of `overrides` launches (its values composed as the sweeper reads them)."""
    return len(compose_sweep(overrides)[1])


__all__ = ["Plan", "SEED", "check_owned", "compose_sweep", "count_jobs", "key_of", "read_plan", "swept_values",
           "value_of"]
