"""`python -m attnbench.study`: one command from a tuning sweep to held-out verdicts (issue 27).

    python -m attnbench.study --dir runs/study/gating --tune train.lr --baseline attn.gate=none \\
        [--objective F] [--confirm-seeds 3] [--max-extensions 3] [--dry-run] [--wandb-dashboard] \\
        -- experiment=gating_lr data.path=... [any Hydra multirun overrides]

Exit status: 0 when the study finished (its report written; jobs that diverged or ran out of memory
are results, not errors); 2 when it was refused before anything ran (one line naming what is wrong);
1 when a launch did not finish (re-run the same command to continue); 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError
from . import record
from .launch import Runner, multirun
from .plan import Plan, SEED, key_of, read_plan
from .record import Command, Study

PROG = "python -m attnbench.study"


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog=PROG, description="Tune, extend the grid at its edges, confirm on fresh "
                                "seeds and report, in one command (docs/report.md, One-command study).",
                                epilog="After --: the tuning sweep's overrides, as for `python -m attnbench -m`.")
    p.add_argument("--dir", type=Path, required=True, help="the study's folder: study.json, tune/, extend/<k>/, "
                   "confirm/c<i>/, report/")
    p.add_argument("--tune", required=True, metavar="KEY", help="the config key tuned per variant (e.g. train.lr)")
    p.add_argument("--baseline", nargs="+", default=[], metavar="OVERRIDE",
                   help="the variant every other one is compared against (e.g. attn.gate=none); without it the "
                        "report has each variant's held-out figures but no differences or verdicts")
    p.add_argument("--objective", default="val_loss", metavar="FIGURE",
                   help="the results.csv figure the choice and the verdicts use (default val_loss)")
    p.add_argument("--confirm-seeds", type=int, default=3, metavar="N",
                   help="fresh seeds per variant at its chosen value (default 3, the project's rule for a claim)")
    p.add_argument("--max-extensions", type=int, default=3, metavar="N",
                   help="grid extensions per variant at most (default 3)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (jobs per stage) and run nothing")
    p.add_argument("--wandb-dashboard", action="store_true",
                   help="also build the report's W&B dashboard (as `attnbench.report --wandb-dashboard`)")
    args = p.parse_args(argv[:cut])
    for name in ("confirm_seeds", "max_extensions"):
        if getattr(args, name) < (1 if name == "confirm_seeds" else 0):
            p.error(f"--{name.replace('_', '-')}: must be at least {1 if name == 'confirm_seeds' else 0}")
    overrides = argv[cut + 1:]
    if not overrides:
        p.error("give the tuning sweep's overrides after --, e.g. -- experiment=gating_lr")
    return args, overrides


def check_baseline(plan: Plan, baseline: Sequence[str]) -> None:
    """Each --baseline KEY=VALUE must be a key the config has (a typo fails now, not after the sweep)."""
    from omegaconf import OmegaConf

    for b in baseline:
        key, sep, _ = b.partition("=")
        if not sep or OmegaConf.select(plan.master, key, default=None) is None:
            raise ConfigError(f"--baseline {b}: write KEY=VALUE with a key of the config (e.g. attn=mha, "
                              "attn.gate=none)")


def dry_run(st: Study, plan: Plan) -> str:
    cmd, n_seeds = st.command, len(plan.seeds)
    variants = {" ".join(sorted(o for o in job if key_of(o) not in (cmd.tune, SEED))) for job in plan.jobs}
    fresh = list(range(max(plan.seeds) + 1, max(plan.seeds) + 1 + cmd.confirm_seeds))
    state = ", ".join(f"{s} done" for s in record.STAGES[:3] if st.done(s)) or "nothing run yet"
    rule = plan.step.rule() if plan.step else "none"
    return "\n".join([
        f"study {st.dir} ({state})",
        f"tune:    {len(plan.jobs)} jobs into {st.dir / 'tune'}: {len(variants)} variants x {cmd.tune} = "
        f"{', '.join(plan.values)} x seeds {', '.join(map(str, plan.seeds))}",
        f"extend:  for each variant whose chosen {cmd.tune} is the lowest or highest tried, the next value past "
        f"it by the grid's step ({rule}), on seeds {', '.join(map(str, plan.seeds))} ({n_seeds} jobs per "
        f"extension) into {st.dir / 'extend'}/<k>; repeated until the choice is interior, at most "
        f"{cmd.max_extensions} per variant ({len(variants) * cmd.max_extensions * n_seeds} jobs at most); never "
        "past a value that failed on a tuning seed",
        f"confirm: each variant at its chosen {cmd.tune} on seeds {', '.join(map(str, fresh))}: "
        f"{len(variants) * cmd.confirm_seeds} jobs into {st.dir / 'confirm'}/c<i>",
        f"report:  {st.dir / 'report'} (--tune {cmd.tune} --objective {cmd.objective}"
        f"{' --baseline ' + ' '.join(cmd.baseline) if cmd.baseline else ''}); "
        f"{'verdicts' if cmd.baseline else 'figures'} on the held-out runs",
    ])


def run_stages(st: Study, plan: Plan, runner: Runner) -> int:
    """Tune, Extend and Confirm, each from where the record says it stopped; 0, or the exit status."""
    from .stages import Context, StudyStopped, confirm_stage, extend_stage, tune_stage

    ctx = Context(study=st, plan=plan, runner=runner, say=lambda s: print(s, flush=True), slurm=plan.slurm)
    try:
        tune_stage(ctx)
        extend_stage(ctx)
        confirm_stage(ctx)
    except StudyStopped as exc:
        print(f"attnbench.study: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found once jobs ran: e.g. an --objective that no job measures
        print(f"attnbench.study: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnbench.study: interrupted; study.json is consistent, re-run the same command to continue",
              file=sys.stderr)
        return 130
    return 0


def main(argv: Optional[Sequence[str]] = None, runner: Runner = multirun) -> int:
    from .reporting import argv_text, dashboard, write_report

    raw = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse(raw)
    logging.basicConfig(level=logging.WARNING, format="attnbench.study: %(levelname)s: %(message)s")
    command = Command(tune=args.tune, baseline=list(args.baseline), objective=args.objective,
                      confirm_seeds=args.confirm_seeds, max_extensions=args.max_extensions, overrides=overrides)
    try:
        st = record.load(args.dir, command, argv_text([a for a in raw if a != "--dry-run"]))
        finished = all(st.done(s) for s in ("tune", "extend", "confirm"))
        plan = None if finished and not args.dry_run else read_plan(overrides, args.tune, args.max_extensions)
        if plan is not None:
            check_baseline(plan, args.baseline)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"attnbench.study: error: {line}", file=sys.stderr)
        return 2
    if args.dry_run and plan is not None:  # (a dry run always plans)
        print(dry_run(st, plan))
        return 0
    if plan is not None:  # a finished study only reports: nothing to plan or launch
        st.save()
        code = run_stages(st, plan, runner)
        if code:
            return code
    try:
        rep = write_report(st, lambda s: print(s, flush=True))
    except (ConfigError, FileNotFoundError) as exc:
        print(f"attnbench.study: error: report: {exc}", file=sys.stderr)
        return 2
    st.finish("report")
    return dashboard(rep, st) if args.wandb_dashboard else 0


__all__ = ["main", "parse"]
