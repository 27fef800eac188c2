"""The Report stage: the comparison report over every folder of the study, verdicts on held-out runs.

`attnbench.report`'s own `build_report` over <dir>/tune, <dir>/extend and <dir>/confirm, with the
study's --tune, --objective and --baseline, into <dir>/report/. The confirmation runs are the only
seeds at each chosen value, so every variant with ok confirmation jobs is reported on them
(`selection = held_out`). report.md gets a **Study** section: the command, the extensions, and the
variants still at an edge with the reason ("still at the edge after N extensions").
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Callable

from ..report.build import Report, build_report
from ..report.format import markdown_table
from ..report.markdown import variant_table
from .plan import SEED
from .record import Study

OUT = "report"


def report_paths(st: Study) -> list[Path]:
    return [p for p in (st.dir / "tune", st.dir / "extend", st.dir / "confirm") if p.exists()]


def write_report(st: Study, say: Callable[[str], None]) -> Report:
    cmd = st.command
    rep = build_report(report_paths(st), st.dir / OUT, replicates=[SEED], tune=cmd.tune, objective=cmd.objective,
                       baseline=cmd.baseline or None)
    section = study_section(st)
    md = rep.files["report.md"]
    Path(md).write_text(Path(md).read_text().rstrip("\n") + "\n\n" + section + "\n")
    say(variant_table(rep.comparison))
    for e in st.edges:
        say(f"note: {e['variant']}: {cmd.tune} {e['value']} ({e['edge'] or 'no choice'}): {e['why']}")
    for path in [*rep.files.values(), *rep.images.values()]:
        say(f"wrote {path}")
    return rep


def study_section(st: Study) -> str:
    """report.md's Study section: how the table above was produced."""
    lines = ["## Study", "", f"`{st.argv}`", ""]
    done = [s for s in ("tune", "extend", "confirm") if st.done(s)]
    seeds = st.confirm.get("seeds") or []
    lines.append(f"Stages done: {', '.join(done) or 'none'}; confirmation seeds "
                 f"{', '.join(map(str, seeds)) or '-'}; every verdict above rests on the held-out runs.")
    if st.extensions:
        rows = [[e["k"], e["round"], v["variant"], v["edge"], v["chosen"], e["value"], e["state"]]
                for e in st.extensions for v in e["variants"]]
        lines += ["", f"Grid extensions ({st.command.tune}, on the tuning seeds):", "",
                  markdown_table(["k", "round", "variant", "edge", "chosen then", "tried", "state"], rows)]
    if st.edges:
        lines += ["", "Choices still at an edge of the grid:", ""]
        lines += [f"- {e['variant']}: {e['value']} ({e['edge'] or '-'}): {e['why']}" for e in st.edges]
    return "\n".join(lines)


def dashboard(rep: Report, st: Study) -> int:
    """--wandb-dashboard, passed through to the report's own (report/dashboard_save.py)."""
    from ..report.dashboard_save import run_dashboard

    paths = report_paths(st)
    argv = [*map(str, paths), "--tune", st.command.tune, "--objective", str(st.command.objective),
            *(["--baseline", *st.command.baseline] if st.command.baseline else []), "--out", str(st.dir / OUT),
            "--wandb-dashboard"]
    args = argparse.Namespace(paths=paths, wandb_project=None, wandb_entity=None, wandb_mode=None,
                              wandb_timeout=30.0, push=False)
    return run_dashboard(rep, args, argv, st.dir / OUT)


def argv_text(argv: list[str]) -> str:
    return "python -m attnbench.study " + shlex.join(argv)


__all__ = ["OUT", "argv_text", "dashboard", "report_paths", "study_section", "write_report"]
