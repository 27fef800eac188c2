"""Each variant's choice after the tuning runs, read with the report's own rule (report/variants.py,
report/heldout.py), and what the study does next with it: extend its grid past an edge, or confirm it.

The choice, the tuning seeds and the edge are exactly what `python -m attnbench.report --tune KEY`
computes over the same folders, so the study extends where the report's **Grid edge** note would
send a person, and confirms what the report would print as confirmation commands.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..report.format import num
from ..report.heldout import _merge, job_overrides
from ..report.runs import Run, flat_config, job_set
from ..report.variants import Comparison, group, replicate_of, show
from .grid import Step, fmt_value, next_value
from .plan import OWNED, SEED, key_of


@dataclass
class Choice:
    """One variant after tuning."""

    key: str  # its overrides without the tuned key and the seed, sorted: its identity in study.json
    label: str
    overrides: list  # the same overrides in a job's own order (what an extension or confirmation launches)
    tried: list  # the values tried, in order
    chosen: Any  # None when no value has an ok tuning job
    edge: str  # "lowest" / "highest" (report/heldout.py grid_edge) or ""
    failed: dict = field(default_factory=dict)  # value -> statuses of its tuning jobs that are not ok
    means: dict = field(default_factory=dict)  # value -> mean objective over the tuning seeds (None: no ok job)


def analyse(dirs: Sequence[Path], tune: str, objective: Optional[str]) -> tuple[Comparison, list[Choice]]:
    """Group the jobs under `dirs` (the latest launch of each sweep folder, as the report counts them)."""
    runs = job_set([d for d in dirs if Path(d).exists()]).runs
    comp = group(runs, replicates=(SEED,), tune=tune, objective=objective)
    return comp, [_choice(v, tune) for v in comp.variants]


def _choice(v: Any, tune: str) -> Choice:
    run = next((r for r in v.runs if r.overrides), v.runs[0])
    ov = [o for o in job_overrides(run, tune, (SEED,)) if key_of(o) not in OWNED]  # resume=true: the study's
    tuning = set(v.tuning_reps)
    failed: dict = {}
    for r in v.runs:
        flat = flat_config(r.config)
        if not r.ok and replicate_of(r, flat, (SEED,)) in tuning:
            failed.setdefault(flat.get(tune), []).append(r.status)
    return Choice(key=" ".join(sorted(ov)), label=v.label, overrides=ov, tried=list(v.tuned_over),
                  chosen=v.tuned_value, edge=v.tuned_edge, failed=failed,
                  means={x: e.mean for x, e in v.tuned_means.items()})


def failed_here(c: Choice) -> list[str]:
    """The statuses of the tuning jobs that failed at the chosen value (empty when none did)."""
    return next((s for value, s in c.failed.items() if value == c.chosen), [])


def tie_inward(c: Choice) -> Any:
    """The value next to the chosen edge, inward, when its tuning mean equals the chosen one (a recall of
    1.000 at both: the optimum is already inside the grid, as in Finding 13), else None."""
    ordered = sorted(x for x in c.tried if num(x))
    if len(ordered) < 2 or c.chosen not in ordered:
        return None
    inner = ordered[1] if c.edge == "lowest" else ordered[-2]
    mine, theirs = c.means.get(c.chosen), c.means.get(inner)
    return inner if mine is not None and theirs is not None and abs(mine - theirs) <= 1e-12 else None


def next_step(c: Choice, step: Optional[Step], done: int, limit: int) -> tuple[Optional[float], str]:
    """(the value to try next past the variant's edge, None) or (None, why it stays where it is: '' when
    its choice is interior). `done`: its extensions so far; `limit`: --max-extensions."""
    if c.chosen is None:
        return None, "no value has an ok tuning job"
    if not c.edge:
        return None, ""
    if failed := failed_here(c):
        return None, (f"{show(c.chosen)} ({c.edge} tried) failed on a tuning seed ({', '.join(sorted(set(failed)))}): "
                      "an edge that needs no extension past it")
    if (tie := tie_inward(c)) is not None:
        return None, f"ties with {show(tie)} inside the grid ({c.means[tie]:.6g}): the optimum is not past the edge"
    if done >= limit or step is None:
        return None, f"still at the edge after {done} extension{'s' * (done != 1)}"
    value = next_value(step, [float(x) for x in c.tried if num(x)], c.edge)
    if value is None:
        return None, f"no value past {show(c.chosen)} on the grid's step ({step.rule()})"
    return value, ""


def spell(value: Any) -> str:
    """A config value as an override spells it (numbers to 12 significant digits)."""
    return fmt_value(float(value)) if num(value) and not isinstance(value, bool) else show(value)


def at_value(groups: Sequence[list[str]], tune: str, value: Any, seeds: Sequence[int],
             hydra: Sequence[str]) -> list[tuple[list[str], list[int]]]:
    """Multiruns of the variants `groups` (their overrides) at one value of the tuned key on `seeds`, each with
    the indices of the variants it runs: one multirun when they differ in one override (merged as the
    report's confirmation commands are), else one each."""
    merged = _merge(list(groups))
    batches = [(merged, list(range(len(groups))))] if merged is not None else [(g, [i]) for i, g in enumerate(groups)]
    return [([*ov, f"{tune}={spell(value)}", f"{SEED}={','.join(map(str, seeds))}", *hydra], idx)
            for ov, idx in batches]


def seeds_used(runs: Sequence[Run]) -> list[int]:
    return sorted({int(s) for r in runs if num(s := flat_config(r.config).get(SEED))})


def confirm_overrides(comp: Comparison, choices: Sequence[Choice], fresh: Sequence[int],
                      hydra: Sequence[str]) -> list[list[str]]:
    """One multirun per chosen value (variants there that differ in one override merged into one, as the
    report's confirmation commands are), each at the fresh seeds."""
    by_value: dict[str, tuple[Any, list[list[str]]]] = {}
    for c in choices:
        if c.chosen is not None:
            by_value.setdefault(spell(c.chosen), (c.chosen, []))[1].append(c.overrides)
    return [ov for value, groups in by_value.values() for ov, _ in at_value(groups, comp.tune, value, fresh, hydra)]


__all__ = ["Choice", "analyse", "at_value", "confirm_overrides", "failed_here", "next_step", "tie_inward",
           "seeds_used", "spell"]
