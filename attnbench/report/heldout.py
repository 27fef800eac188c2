"""Held-out selection under `--tune`: choose on one set of runs, report on runs the choice never saw.

The minimum of several noisy means is biased low (the winner's curse: Dodge et al. 2019, *Show Your
Work*; Bouthillier et al. 2021, *Accounting for Variance in Machine Learning Benchmarks*), the more
so with more grid values and fewer seeds, and a CI over the same runs does not cover that bias. So:

- the *tuning replicates* of a variant are those present (a job exists, whatever its status) at
  every value of its grid; the value is chosen on their mean objective alone, so a value with more
  seeds is never compared with one with fewer;
- only a *complete* value can be chosen: one at which every tuning job ended ok (`completeness`).
  The mean of a value where some seeds diverged is a mean over its survivors, biased in its favour
  (lr 3e-2 diverged on 2 of 3 seeds; its one survivor's 1.40 must not beat lr 1e-3's three-seed
  1.51). An incomplete value ranks below every complete one, whatever its mean, and the report says
  why; when no value is complete nothing is chosen. A value that fails on a tuning seed is an edge
  of the usable grid: there is no need to extend the grid past it;
- the *held-out* replicates are those present only at the chosen value (the confirmation jobs
  `confirm_commands` writes: the chosen value, fresh seeds); when a variant has any, its n,
  mean ± CI, Δ vs baseline and verdict come from them alone (a replicate at some values but not
  all is neither: the choice did not see it, but it is no confirmation run either);
- without held-out jobs the figures stay those of every job at the chosen value (as before), and the
  variant's `selection` says so: `same_runs (optimistic)`; with a single value tried nothing was
  selected: `one_value`.
When the grid values share no replicate at all (disjoint seeds), every job is a tuning job.
`choose` applies the rule to one variant; `grid_edge` flags a choice at an end of the grid;
`confirm_commands` writes the commands that run the held-out jobs.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from . import stats
from .format import num
from .tables import csv_row

HELD_OUT = "held_out"
SAME_RUNS = "same_runs (optimistic)"
ONE_VALUE = "one_value"
MIN_CONFIRM = 3  # held-out replicates per variant at least: a claim needs 3 (tuning on 2 seeds is then cheaper)
CONFIRM_SUFFIX = "_confirm"  # confirmation jobs go into <first report path>_confirm/c<i>
LAUNCHER_PREFIXES = ("hydra/launcher=", "hydra.launcher.")  # Hydra overrides a confirmation job needs too


def sort_values(values: list) -> list:
    if all(num(v) for v in values):
        return sorted(values)
    return sorted(values, key=lambda v: json.dumps(v, default=str))


def choose(v: Any, tune: Optional[str], objective: str, lower: bool, run_flat: dict,
           replicates: Sequence[str]) -> None:
    """Set the variant's tuned value (chosen on its tuning replicates), the jobs it is reported on and its
    `selection` (see the module docstring). `run_flat`: id(run) -> flat config."""
    if not tune:
        v.chosen = v.at_value = list(v.runs)
        return
    values = sort_values(list(dict.fromkeys(run_flat[id(r)].get(tune) for r in v.runs)))
    v.tuned_over = values
    rep = {id(r): x for r, x in zip(v.runs, v.all_reps)}
    at = {i: [r for r in v.runs if run_flat[id(r)].get(tune) == value] for i, value in enumerate(values)}
    tuning = tuning_replicates([[rep[id(r)] for r in at[i]] for i in range(len(values))])
    if not tuning:  # the values share no replicate: choose on every job, as nothing is held out
        tuning = set(v.all_reps)
    v.tuning_reps = sorted(tuning, key=lambda t: json.dumps(t, default=str))
    why = completeness({value: at[i] for i, value in enumerate(values)}, lambda r: rep[id(r)], tuning)
    v.tuned_incomplete = {x: reason for x, reason in why.items() if reason}
    best, best_mean = None, None
    for i, value in enumerate(values):
        est = stats.mean_ci([x for r in at[i] if r.ok and rep[id(r)] in tuning
                             and num(x := csv_row(r).get(objective))])
        v.tuned_means[value] = est
        if why[value]:  # chosen on survivors never: ranked below every complete value
            continue
        if est.mean is not None and (best_mean is None or (est.mean < best_mean if lower else est.mean > best_mean)):
            best, best_mean = i, est.mean
    if best is None:
        v.tuned_value, v.chosen, v.at_value = None, [], []
    else:
        v.tuned_value, v.at_value = values[best], at[best]
        # held out: replicates present only at the chosen value (a seed also run at another value is
        # neither: the choice did not use it, but it is not a confirmation run either)
        where = {}
        for i in at:
            for r in at[i]:
                where.setdefault(rep[id(r)], set()).add(i)
        held = [r for r in v.at_value if rep[id(r)] not in tuning and where[rep[id(r)]] == {best}]
        v.chosen = held or list(v.at_value)
        v.selection = selection_of(len(values), held)
    v.tuned_edge = grid_edge(v.tuned_value, values)


def completeness(at: dict, replicate: Callable[[Any], tuple], tuning: set) -> dict[Any, str]:
    """value -> "" when every tuning job at that value ended ok (the value can be chosen), else why not
    ("seed=1 diverged, seed=2 oom"). `at`: value -> its jobs (report.runs.Run); `replicate`: a job's
    replicate ((key, value), ...); `tuning`: the tuning replicates. A value that fails on a tuning seed
    is an edge of the usable grid (a study needs no extension past it)."""
    out = {}
    for value, jobs in at.items():
        bad = [r for r in jobs if replicate(r) in tuning and not r.ok]
        out[value] = ", ".join(f"{_rep(replicate(r))} {r.status}" for r in bad)
    return out


def complete_values(v: Any) -> dict[Any, bool]:
    """Per value tried by a grouped variant (variants.Variant): whether every tuning job there ended ok."""
    return {x: x not in v.tuned_incomplete for x in v.tuned_over}


def incomplete_text(v: Any, show: Callable[[Any], str]) -> str:
    """'3e-2 (seed=1 diverged, seed=2 diverged)' for the values that cannot be chosen ('' if none)."""
    return "; ".join(f"{show(x)} ({why})" for x, why in v.tuned_incomplete.items())


def _rep(rep: tuple) -> str:
    return " ".join(f"{k}={x}" for k, x in rep) or "job"


def grid_edge(value: Any, values: list) -> str:
    """'lowest' or 'highest' when value is at an end of a numeric grid of at least two values, else ''.

    A best value on the edge of its grid is not known to be an optimum: the trend may continue
    past it (the Findings' first scans put most variants' best lr at the grid's top). The report
    flags it rather than hiding it. A value whose jobs all failed still counts as tried: a
    diverged higher lr does bracket the optimum."""
    if value is None or len(values) < 2 or not all(num(x) for x in values):
        return ""
    return "lowest" if value == min(values) else "highest" if value == max(values) else ""


def edge_note(comp: Any) -> str:
    """One sentence naming the variants whose chosen tuned value is at the edge of its grid ('' if none)."""
    at = [v for v in comp.variants if v.tuned_edge]
    if not at:
        return ""
    names = ", ".join(f"{v.label} ({v.tuned_edge})" for v in at)
    return (f"For {len(at)} of {len(comp.variants)} variants the chosen {comp.tune} is the lowest or highest value "
            f"tried: {names}. The best value may lie outside the grid; extend it there before trusting those rows.")


def tuning_replicates(reps_at: Sequence[Sequence[tuple]]) -> set:
    """The replicates present at every value (reps_at: per value, the replicate of each of its jobs)."""
    sets = [set(r) for r in reps_at]
    return set.intersection(*sets) if sets else set()


def selection_of(n_values: int, held_out: Sequence) -> str:
    if held_out:
        return HELD_OUT
    return ONE_VALUE if n_values <= 1 else SAME_RUNS


def describe(selection: str) -> str:
    """The report.md cell for a variant's selection."""
    return {HELD_OUT: "held-out runs", SAME_RUNS: "same runs (optimistic)",
            ONE_VALUE: "one value (nothing chosen)"}.get(selection, selection or "-")


# ----------------------------------------------------------------------------- confirmation commands
def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _drops(key: str, names: Sequence[str]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def fresh_values(used: Sequence[Any], count: int) -> Optional[list[int]]:
    """`count` integers above every integer already used (so every variant gets the same fresh seeds and
    the confirmation jobs pair by seed); None when the values are not integers."""
    ints = [int(u) for u in used if num(u) and float(u).is_integer()]
    if len(ints) != len([u for u in used if u is not None]):
        return None
    start = max(ints, default=-1) + 1
    return list(range(start, start + count))


def launcher_overrides(run_dir: Path) -> list[str]:
    """The Hydra launcher overrides of the job's sweep (a SLURM sweep's confirmation runs on SLURM too)."""
    try:
        data = yaml.safe_load((Path(run_dir) / ".hydra" / "hydra.yaml").read_text())
        hydra_ov = data["hydra"]["overrides"]["hydra"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    return [str(o) for o in hydra_ov or [] if str(o).startswith(LAUNCHER_PREFIXES)]


def job_overrides(run: Any, tune: str, replicates: Sequence[str]) -> list[str]:
    """The job's overrides without its tuned value, its replicate values and Hydra's own keys."""
    return [o for o in run.overrides if not _drops(_key(o), [tune, *replicates]) and not _key(o).startswith("hydra")]


def _merge(group: list[list[str]]) -> Optional[list[str]]:
    """One override list that sweeps exactly these jobs (they differ in one key, no value has a comma), or None."""
    if len(group) == 1:
        return group[0]
    keys = [[_key(o) for o in ov] for ov in group]
    if any(k != keys[0] for k in keys):
        return None
    differ = [i for i in range(len(keys[0])) if len({ov[i] for ov in group}) > 1]
    if len(differ) != 1:
        return None
    i = differ[0]
    values = list(dict.fromkeys(ov[i].partition("=")[2] for ov in group))
    if any("," in v for v in values):
        return None
    merged = list(group[0])
    merged[i] = f"{group[0][i].partition('=')[0]}={','.join(values)}"
    return merged


def confirm_commands(comp: Any, sources: Sequence[Path], show: Any) -> list[str]:
    """Shell commands that run the confirmation jobs of every variant reported on its tuning runs:
    the variant at its chosen value, fresh replicate values, into <first source>_confirm/c<i>; and,
    last, the report command over the tuning sweep and that folder."""
    todo = [v for v in comp.variants if v.selection == SAME_RUNS and v.tuned_value is not None]
    if not todo or not sources:
        return []
    count = max(MIN_CONFIRM, max(len(v.tuning_reps) for v in todo))
    fresh = []
    for key in comp.replicates:
        used = [val for v in comp.variants for rep in v.all_reps for k, val in rep if k == key]
        vals = fresh_values(used, count)
        fresh.append(f"{key}={','.join(map(str, vals))}" if vals else f"{key}=<{count} values not used yet>")
    by_value: dict[str, list[tuple[list[str], list[str]]]] = {}
    for v in todo:
        run = next((r for r in v.at_value if r.overrides), None)
        if run is None:
            continue
        by_value.setdefault(show(v.tuned_value), []).append((job_overrides(run, comp.tune, comp.replicates),
                                                             launcher_overrides(run.dir)))
    dest = Path(str(sources[0]) + CONFIRM_SUFFIX)
    cmds, i = [], 0
    for value, items in by_value.items():
        merged = _merge([ov for ov, _ in items])
        batches = [(merged, items[0][1])] if merged is not None else items
        for ov, launcher in batches:
            i += 1
            args = [*ov, f"{comp.tune}={value}", *fresh, *launcher, f"hydra.sweep.dir={dest / f'c{i}'}"]
            cmds.append("python -m attnbench -m " + " ".join(shlex.quote(a) for a in args))
    if not cmds:
        return []
    opts = [f"--tune {comp.tune}"]
    if tuple(comp.replicates) != ("seed",):
        opts.append("--replicates " + " ".join(comp.replicates))
    if comp.objective != "val_loss":
        opts.append(f"--objective {comp.objective}")
    if comp.baseline_spec:
        opts.append("--baseline " + " ".join(shlex.quote(b) for b in comp.baseline_spec))
    report = ["python -m attnbench.report", *(shlex.quote(str(s)) for s in sources), shlex.quote(str(dest)), *opts]
    return cmds + [" ".join(report)]


def confirm_note(comp: Any) -> str:
    """One sentence naming the variants whose figures come from the runs their value was chosen on ('' if none)."""
    same = [v for v in comp.variants if v.selection == SAME_RUNS]
    if not same:
        return ""
    names = ", ".join(v.label for v in same)
    return (f"{len(same)} of {len(comp.variants)} variants are reported on the same runs their {comp.tune} was "
            f"chosen on ({names}): their means are optimistic (the best of several noisy means is biased), and "
            "their verdicts do not rest on runs the choice never saw. Run the confirmation jobs below and "
            "report both folders together.")
