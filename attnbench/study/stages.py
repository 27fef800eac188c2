"""The four stages of a study: Tune, Extend, Confirm, Report (issue 27; docs/report.md#one-command-study).

Each launch is recorded in study.json before it starts and marked done after its multirun returned
with every job ended, so a study stopped anywhere (Ctrl-C, a lost session, a failed node) continues
on the next run of the same command from the first launch that is not done; finished jobs are not
run again (launch.py). The report is written on every run: a finished study re-runs in seconds.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .choices import analyse, at_value, confirm_overrides, next_step, seeds_used, spell
from .launch import Runner, launch_ids, unfinished, wait_for_queue
from .plan import Plan
from .record import DONE, PLANNED, REFUSED, RUNNING, Study

log = logging.getLogger(__name__)

TUNE, EXTEND, CONFIRM, REPORT = "tune", "extend", "confirm", "report"


class StudyStopped(RuntimeError):
    """A launch did not finish (its multirun was stopped, or jobs of it did not end): re-run to continue."""


@dataclass
class Context:
    study: Study
    plan: Plan
    runner: Runner
    say: Callable[[str], None]
    slurm: bool = False

    @property
    def tune(self) -> str:
        return self.study.command.tune

    def folders(self, *names: str) -> list[Path]:
        return [self.study.dir / n for n in names]


# ----------------------------------------------------------------------------- one launch
def run_launch(ctx: Context, name: str, overrides: list, jobs: int) -> str:
    """Bring the launch into <dir>/<name> to an end: DONE (every job ended), or StudyStopped."""
    st = ctx.study
    entry = st.launch(name, overrides, jobs)
    if entry["state"] in (DONE, REFUSED):
        return entry["state"]
    folder = st.dir / name
    if entry["attempts"] and ctx.slurm:
        wait_for_queue(folder, ctx.plan.poll_s, ctx.say)
    if entry["attempts"] and unfinished(folder, jobs) is None:
        ctx.say(f"{name}: all {jobs} jobs of the earlier launch have ended; not launched again")
        return _mark(st, entry, DONE)
    attempt = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    entry["attempts"].append(attempt)
    _mark(st, entry, RUNNING)
    ctx.say(f"{name}: launching {jobs} job{'s' * (jobs != 1)}")
    try:
        code = ctx.runner(overrides, folder)
    finally:  # also on Ctrl-C: the launch id and SLURM job ids are what a re-run picks up
        attempt.update(launch_ids(folder, ctx.slurm), ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        st.save()
    attempt["exit"] = code
    if code == 2:
        raise StudyStopped(f"{name}: the multirun was refused (the line above says why)")
    if (missing := unfinished(folder, jobs)) is not None:
        st.save()
        raise StudyStopped(f"{name}: {missing} (multirun exit {code}); re-run the same command to continue")
    return _mark(st, entry, DONE)


def _mark(st: Study, entry: dict, state: str) -> str:
    entry["state"] = state
    st.save()
    return state


# ----------------------------------------------------------------------------- stages
def tune_stage(ctx: Context) -> None:
    if not ctx.study.done(TUNE):
        run_launch(ctx, TUNE, list(ctx.study.command.overrides), len(ctx.plan.jobs))
        ctx.study.finish(TUNE, jobs=len(ctx.plan.jobs))


def extend_stage(ctx: Context) -> None:
    st = ctx.study
    if st.done(EXTEND):
        return
    for ext in st.extensions:  # an extension launched before the study stopped
        if ext["state"] != REFUSED:
            ext["state"] = run_launch(ctx, ext["dir"], ext["overrides"], ext["jobs"])
    rounds = max((e["round"] for e in st.extensions), default=0)
    while todo := _next_extensions(ctx):
        rounds += 1
        by_value: dict[str, tuple[float, list]] = {}
        for choice, value in todo:
            by_value.setdefault(spell(value), (value, []))[1].append(choice)
        for value, choices in by_value.values():
            _extend(ctx, choices, value, rounds)
    st.finish(EXTEND, rounds=rounds, extensions=len(st.extensions))


def extensions_of(st: Study, key: str) -> list[dict]:
    return [e for e in st.extensions if any(v["key"] == key for v in e["variants"])]


def _next_extensions(ctx: Context) -> list:
    """The (choice, value) pairs to run next; records in study.json why the other edges stay."""
    st = ctx.study
    _, choices = analyse(ctx.folders(TUNE, EXTEND), ctx.tune, st.command.objective)
    todo, edges = [], []
    for c in choices:
        mine = extensions_of(st, c.key)
        value, why = next_step(c, ctx.plan.step, len(mine), st.command.max_extensions)
        refused = next((e for e in mine if e["state"] == REFUSED), None)
        if value is not None and refused is None:
            todo.append((c, value))
        elif why or refused is not None:
            why = f"the extension to {refused['value']} was refused: {refused['error']}" if refused else why
            edges.append({"variant": c.label, "variant_key": c.key, "value": spell(c.chosen) if c.chosen is not None
                          else None, "edge": c.edge, "why": why})
    st.edges = edges
    st.save()
    return todo


def _extend(ctx: Context, choices: list, value: float, rnd: int) -> None:
    """Run `choices` (variants at an edge) at `value` on the tuning seeds: one launch per multirun."""
    for ov, idx in at_value([c.overrides for c in choices], ctx.tune, value, ctx.plan.seeds, ctx.plan.hydra):
        _extend_one(ctx, [choices[i] for i in idx], value, rnd, ov)


def _extend_one(ctx: Context, choices: list, value: float, rnd: int, ov: list) -> None:
    from ..sweep.precheck import check_sweep_overrides

    st = ctx.study
    k = len(st.extensions) + 1
    name = f"{EXTEND}/{k}"
    ext = {"k": k, "round": rnd, "dir": name, "value": spell(value), "state": PLANNED, "overrides": ov,
           "variants": [{"variant": c.label, "key": c.key, "chosen": spell(c.chosen), "edge": c.edge}
                        for c in choices]}
    labels = ", ".join(c.label for c in choices)
    try:
        ext["jobs"] = check_sweep_overrides(ov) or len(ctx.plan.seeds) * len(choices)
    except ConfigError as exc:  # e.g. a linear grid stepping below a key's lowest allowed value
        ext.update(state=REFUSED, error=str(exc).splitlines()[0])
        st.extensions.append(ext)
        st.save()
        ctx.say(f"{name}: {labels} at {ctx.tune}={ext['value']} refused: {ext['error']}")
        return
    st.extensions.append(ext)
    st.save()
    edges = ", ".join(f"{c.label} chose {spell(c.chosen)}, the {c.edge} tried" for c in choices)
    ctx.say(f"{name}: {edges}: trying {ctx.tune}={ext['value']}")
    ext["state"] = run_launch(ctx, name, ov, ext["jobs"])
    st.save()


def confirm_stage(ctx: Context) -> None:
    from ..sweep.precheck import check_sweep_overrides

    st = ctx.study
    if st.done(CONFIRM):
        return
    if not st.confirm:  # planned once: a re-run confirms the same choices on the same seeds
        comp, choices = analyse(ctx.folders(TUNE, EXTEND), ctx.tune, st.command.objective)
        used = seeds_used([r for v in comp.variants for r in v.runs])
        fresh = list(range(max(used, default=-1) + 1, max(used, default=-1) + 1 + st.command.confirm_seeds))
        names = []
        for i, ov in enumerate(confirm_overrides(comp, choices, fresh, ctx.plan.hydra), start=1):
            names.append(f"{CONFIRM}/c{i}")
            st.launch(names[-1], ov, check_sweep_overrides(ov) or len(fresh))
        st.confirm = {"seeds": fresh, "launches": names}
        st.save()
    for name in st.confirm["launches"]:
        entry = st.launches[name]
        run_launch(ctx, name, entry["overrides"], entry["jobs"])
    st.finish(CONFIRM, seeds=st.confirm["seeds"])


__all__ = ["CONFIRM", "Context", "EXTEND", "REPORT", "StudyStopped", "TUNE", "confirm_stage", "extend_stage",
           "run_launch", "tune_stage"]
