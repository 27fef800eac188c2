"""`--wandb-dashboard`: a sweep as a saved W&B workspace view and a W&B report, from the report's variants.

Built with W&B's own `wandb-workspaces` models (sections, typed panels, runsets) from the same
Comparison that variants.csv holds, then serialised to the JSON that W&B stores (a `View`, a
`ReportViewspec`), offline: saving them is dashboard_save.py's job.
- Every key a panel names is a key the jobs' W&B runs logged, read back from their `.wandb` files:
  history keys for line plots, summary keys for bars, scatter and parallel coordinates, config keys
  for axes and grouping. A panel whose keys no shown run has is left out with a note; a panel that
  names several (one bar per sequence length) keeps the ones present.
- A job's W&B runs are those with the run id its results.json records (`wandb_run_id`; the attempts of a
  resumed job share it): a job re-run without resume has a new id, and its earlier run (failed, or
  kept as results.1.json) is in no panel. Results written before the id was recorded: the latest run.
- The view shows the sweep's group filtered to `status = ok` and to those run ids (failed jobs' runs stay
  in W&B but out of every average), grouped by `variant`, then by the keys that tell apart variants sharing a name, then
  by the tuned key. The report's panels show exactly the runs the variant table averages (`ok_runs`:
  the ok jobs at the chosen tuned value, held-out ones where there are any), selected by W&B run id.
- The band of a grouped line or bar is W&B's standard error (`stderr`), the closest of W&B's range
  functions to the report's 95% CI (which is t(n-1) times it).
- attnbench logs the config with flat dotted keys (`train.lr`), stored by W&B as
  `{"train.lr": {"value": ...}}`; wandb-workspaces' `Config("train.lr")` assumes a nested dict
  (`train.value.lr`). Grouping is given the exact backend key, and the serialised panel accessors are
  rewritten (`wire`). Loading the JSON back into the interface models reads them as `Config("train.lr")`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dashboard_panels import (SECTIONS, Logged, backend_config, candidates, check, colors, split_keys, summary_key,
                               swept_keys)
from .markdown import _explain, variant_table
from .variants import Comparison


@dataclass
class Sweep:
    """What the dashboard is built from: the report's variants and the jobs' W&B runs."""

    comp: Comparison
    runs: list  # every job (report.runs.Run)
    wandb: dict  # id(job) -> its W&B runs (wandb_reader.WandbRun), oldest first
    groups: list  # the W&B groups of the jobs' runs
    project: str
    entity: str = ""  # "": the default entity of whoever saves it
    command: str = ""  # the sweep's command line (multirun.yaml)
    report_command: str = ""
    online: bool = False  # the report's runset names its project (wandb-workspaces then looks up its id)

    def logged(self, jobs: list) -> Logged:
        out = Logged()
        for r in jobs:
            for w in self.wandb.get(id(r), []):
                out.add(w)
        return out


@dataclass
class Dashboard:
    workspace: Any  # wandb_workspaces.workspaces.Workspace
    report: Any  # wandb_workspaces.reports.v2.Report
    notes: list  # one line per panel (or key) left out, and why
    flat_keys: list  # dotted config keys the panels name (see `wire`)


# ----------------------------------------------------------------------------- the view and the report


def ok_jobs(s: Sweep) -> list:
    return [r for r in s.runs if r.ok]


def chosen_jobs(s: Sweep) -> list:
    return [r for v in s.comp.variants for r in v.ok_runs]


def run_ids(s: Sweep, jobs: list) -> list[str]:
    return list(dict.fromkeys(w.run_id for r in jobs for w in s.wandb.get(id(r), []) if w.run_id))


def table_columns(s: Sweep, have: Logged) -> tuple[list[str], list[str]]:
    """The runs table's pinned columns (variant, swept keys, main figures) present in the runs; notes."""
    figs = ["val_loss", "metric", "train_tokens_per_s", "forward_median_ms", "params", "kv_cache_bytes_per_token"]
    keys = [f"c:{k}" for k in ["variant", *swept_keys(s.comp)]] + ["s:status"] + [
        f"s:{k}" for f in figs if (k := summary_key(f, ok_jobs(s)))]
    cols = [f"config:{backend_config(k[2:])}" if k.startswith("c:") else f"summary:{k[2:]}"
            for k in keys if have.has(k)]
    gone = [k[2:] for k in keys if not have.has(k)]
    return cols, ([f"view: runs table without {', '.join(gone)}: no run logs it"] if gone else [])


def build_workspace(s: Sweep) -> tuple[Any, list[str]]:
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    have = s.logged(ok_jobs(s))
    sections, notes = check(candidates(s.comp, ok_jobs(s)), have, "view")
    notes += [f"view: left out section '{n}': none of its panels has data" for n in SECTIONS if n not in sections]
    group_by = ["variant", *split_keys(s.comp), *([s.comp.tune] if s.comp.tune else [])]
    notes += [f"view: not grouped by {k}: no run logs it" for k in group_by if not have.has(f"c:{k}")]
    cols, more = table_columns(s, have)
    group = expr.Metric("Group") == s.groups[0] if len(s.groups) == 1 else expr.Metric("Group").isin(s.groups)
    names = list(dict.fromkeys(v.name for v in s.comp.variants if v.n))
    settings = ws.RunsetSettings(
        filters=[group, expr.Summary("status") == "ok", expr.Metric("ID").isin(run_ids(s, ok_jobs(s)))],
        groupby=[expr.Config(backend_config(k)) for k in group_by if have.has(f"c:{k}")],
        pinned_columns=cols, group_colors=colors(names))
    view = ws.Workspace(entity=s.entity, project=s.project, name=f"attnbench {', '.join(s.groups)}"[:128],
                        sections=[ws.Section(name=n, panels=sections[n], is_open=True) for n in SECTIONS
                                  if n in sections],
                        settings=ws.WorkspaceSettings(max_runs=max(10, len(s.runs))), runset_settings=settings)
    return view, notes + more


def failed_text(s: Sweep) -> str:
    bad = [r for r in s.runs if not r.ok]
    if not bad:
        return f"All {len(s.runs)} jobs are ok."
    lines = [f"{len(bad)} of {len(s.runs)} jobs are not ok. They are left out of every mean, CI and panel here "
             "(the view filters on `status = ok`; their W&B runs, where they have one, keep what they logged):", ""]
    lines += [f"- `{r.dir.name}` ({r.variant}): {r.status}: {(r.res.get('error') or '')[:160]}" for r in bad[:50]]
    return "\n".join(lines + ([f"- ... and {len(bad) - 50} more (see results.csv)"] if len(bad) > 50 else []))


def build_report(s: Sweep) -> tuple[Any, list[str]]:
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    comp, jobs = s.comp, chosen_jobs(s)
    have = s.logged(jobs)
    sections, notes = check([c for c in candidates(s.comp, jobs) if c.in_report], have, "report")
    runset = wr.Runset(entity=s.entity if s.online else "", project=s.project if s.online else "",
                       name="the variant table's runs", filters=[expr.Metric("ID").isin(run_ids(s, jobs))],
                       groupby=[f"config.{backend_config(k)}" for k in ["variant", *split_keys(comp)]
                                if have.has(f"c:{k}")])
    cmd = "\n".join(c for c in (s.command, s.report_command) if c) or "(not a Hydra multirun: no command recorded)"
    base = f"; baseline {comp.baseline.label}" if comp.baseline else ""
    desc = (f"{len(s.runs)} jobs, {len(comp.variants)} variants; objective {comp.objective} "
            f"({'lower' if comp.lower_is_better else 'higher'} is better); replicates {', '.join(comp.replicates)}"
            + (f"; {comp.tune} tuned per variant" if comp.tune else "") + base)
    blocks = [wr.H2("Command line"), wr.MarkdownBlock(text=f"```\n{cmd}\n```"),
              wr.H2(f"Variants ({len(comp.variants)})"), wr.MarkdownBlock(text=variant_table(comp)),
              wr.MarkdownBlock(text=_explain(comp)), wr.MarkdownBlock(text=failed_text(s)),
              wr.H2("Key panels"),
              wr.PanelGrid(runsets=[runset], panels=[p for n in SECTIONS for p in sections.get(n, [])])]
    if notes:
        blocks.append(wr.MarkdownBlock(text="\n".join(f"- {n}" for n in notes)))
    title = f"attnbench {', '.join(s.groups)}"[:128]
    return wr.Report(entity=s.entity, project=s.project, title=title, description=desc, blocks=blocks), notes


def build(s: Sweep) -> Dashboard:
    """The workspace view and the report of a sweep; no network unless `s.online`."""
    view, notes = build_workspace(s)
    report, more = build_report(s)
    flat = [k for k in [*swept_keys(s.comp), *split_keys(s.comp)] if "." in k]
    return Dashboard(workspace=view, report=report, notes=merge_notes(notes + more), flat_keys=flat)


def merge_notes(notes: list[str]) -> list[str]:
    """One line per reason: "view: X" and "report: X" become "view, report: X"."""
    where: dict[str, list[str]] = {}
    for n in notes:
        w, msg = n.split(": ", 1)
        seen = where.setdefault(msg, [])
        if w not in seen:
            seen.append(w)
    return [f"{', '.join(ws)}: {msg}" for msg, ws in where.items()]


# ----------------------------------------------------------------------------- wire format
def _replace(obj: Any, fix: dict) -> Any:
    if isinstance(obj, dict):
        return {k: _replace(v, fix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace(v, fix) for v in obj]
    return fix.get(obj, obj) if isinstance(obj, str) else obj


def wire(obj: Any, flat_keys: list) -> dict:
    """A Workspace or Report as the JSON W&B stores, with the flat config keys' accessors made exact."""
    data = obj._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    fix = {}
    for k in flat_keys:
        head, rest = k.split(".", 1)
        fix[f"config:{head}.value.{rest}"] = f"config:{k}.value"  # parallel coordinates
        fix[f"config.{head}.value.{rest}"] = f"config.{k}.value"  # line-plot axes and panel grouping
    return _replace(data, fix)


def load_workspace(path: Path) -> Any:
    """A written view back in wandb-workspaces' models (`Workspace`), as Workspace.from_url loads one."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.workspaces import internal

    return ws.Workspace._from_model(internal.View.model_validate_json(Path(path).read_text()))


def load_report(path: Path) -> Any:
    """A written report back in wandb-workspaces' models (`Report`), as Report.from_url loads one."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    return wr.Report._from_model(internal.ReportViewspec.model_validate_json(Path(path).read_text()))
