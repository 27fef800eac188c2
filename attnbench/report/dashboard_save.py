"""`--wandb-dashboard` and `--push`: write the dashboard's JSON, and save it to W&B when asked and able.

- The JSON is always written first (`<out>/wandb_workspace.json`, `<out>/wandb_report.json`), so a
  failed or refused save never loses it.
- Offline (the default: `--wandb-mode`, else the runs' `logger.mode`, else $WANDB_MODE, else offline;
  or online without credentials): nothing is sent; the CLI prints the one command that saves it later.
- `--push`, or online with credentials: both are saved and their URLs printed. `--push` without
  credentials is one line and exit 2 (checked before any W&B call: `wandb.Api` would prompt).
- The save runs in a daemon thread bounded by `--wandb-timeout` (the sink's `logger.init_timeout_s`
  default): a dead network costs that long, never a hang. A refused or timed-out save is one line, exit 1.
- Each push creates a new view and a new report, so a push never overwrites edits made in the UI.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import ConfigError
from ..track import wandb_rules
from .dashboard import Dashboard, Sweep, build, wire

log = logging.getLogger(__name__)

WORKSPACE_JSON = "wandb_workspace.json"
REPORT_JSON = "wandb_report.json"


def sweep_command(paths: Sequence[Path]) -> str:
    """The command that ran the sweep, from Hydra's multirun.yaml ('' when there is none)."""
    import yaml

    for p in map(Path, paths):
        try:
            hydra = (yaml.safe_load((p / "multirun.yaml").read_text()) or {}).get("hydra") or {}
        except (OSError, yaml.YAMLError):
            continue
        ov = hydra.get("overrides") or {}
        args = [o for o in ov.get("hydra") or [] if not str(o).startswith("hydra.mode=")] + list(ov.get("task") or [])
        return "python -m attnbench -m " + " ".join(shlex.quote(str(a)) for a in args)
    return ""


def read_sweep(rep: Any, paths: Sequence[Path], project: Optional[str], entity: Optional[str],
               report_command: str) -> Sweep:
    """The report's variants plus every job's W&B runs; ConfigError when no job has a readable one."""
    from ..track.wandb_keys import read_keys  # the keys alone, cached per job: a 10,000-job sweep in seconds
    from .wandb_run import _logger_cfg

    found: dict[int, list] = {}
    guessed = 0
    for r in rep.runs:
        keys = read_keys(r.dir) if (r.dir / "wandb").is_dir() else []
        want = r.res.get("wandb_run_id") or (keys[-1].run_id if keys else None)
        guessed += bool(keys) and not r.res.get("wandb_run_id")
        # only the run results.json names: an earlier run in this directory (a re-run without resume) is left out
        found[id(r)] = [k for k in keys if k.run_id == want]
    if guessed:
        log.warning("%d job(s) have a results.json without wandb_run_id (written before it was recorded): their "
                    "latest W&B run is taken as theirs", guessed)
    groups = list(dict.fromkeys(w.group for ws in found.values() for w in ws if w.group))
    if not groups:
        raise ConfigError("--wandb-dashboard: no job under the paths has a W&B run with a group (logger=none or "
                          "logger.mode=disabled?); there is nothing for a W&B view to show")
    lc = _logger_cfg(rep.runs)
    return Sweep(comp=rep.comparison, runs=rep.runs, wandb=found, groups=groups,
                 project=project or lc.get("project") or "attnbench", entity=entity or lc.get("entity") or "",
                 command=sweep_command(paths), report_command=report_command)


def write(dash: Dashboard, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, obj in ((WORKSPACE_JSON, dash.workspace), (REPORT_JSON, dash.report)):
        path = out / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(wire(obj, dash.flat_keys), indent=1) + "\n")
        tmp.replace(path)  # never a half-written spec next to a finished report
        paths.append(path)
    return paths


def bounded(fn: Callable[[], Any], timeout_s: float) -> Any:
    """fn() in a daemon thread; TimeoutError when it has not returned after timeout_s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="attnbench-wandb-save", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"no answer from W&B within --wandb-timeout {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _save(sweep: Sweep, timeout_s: float) -> tuple[str, str]:
    """Save the view and the report with wandb-workspaces' own GraphQL calls; their URLs."""
    import wandb
    from wandb_workspaces._graphql import execute_graphql, get_app_url
    from wandb_workspaces.reports.v2 import gql
    from wandb_workspaces.reports.v2.internal import _generate_name
    from wandb_workspaces.workspaces import internal

    api = wandb.Api(timeout=max(1, int(timeout_s)))
    sweep.entity = sweep.entity or api.default_entity or ""
    sweep.online = True  # the report's runset names its project: wandb-workspaces checks it exists
    dash = build(sweep)
    # Saved from the wire JSON, not through Workspace.save()/Report.save(): those re-serialise the
    # interface models, which would turn the exact flat config accessors back into nested ones.
    view = internal.View.model_validate(wire(dash.workspace, dash.flat_keys))
    view.name = internal._generate_view_name()
    saved = internal.upsert_view2(view)["upsertView"]["view"]
    app = get_app_url(api).rstrip("/")
    e, p = sweep.entity, sweep.project
    ws_url = f"{app}/{e}/{p}?nw={internal._internal_name_to_url_query_str(saved['name'])}"
    rep = wire(dash.report, dash.flat_keys)
    r = execute_graphql(api, gql.upsert_view, {
        "id": None, "name": _generate_name(), "entityName": e, "projectName": p, "type": "runs",
        "description": rep.get("description", ""), "displayName": rep["displayName"], "spec": json.dumps(rep["spec"])})
    rid = r["upsertView"]["view"]["id"]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", rep["displayName"]).strip("-")  # the group's slashes stay out of the path
    return ws_url, f"{app}/{e}/{p}/reports/{slug}--{rid}"


def _sync_hint(sweep: Sweep) -> str:
    parents = list(dict.fromkeys(str(r.dir.parent) for r in sweep.runs if sweep.wandb.get(id(r))))
    return " && ".join(f"wandb sync {shlex.quote(p)}/*/wandb/offline-run-*" for p in parents[:3])


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def run_dashboard(rep: Any, args: Any, argv: Sequence[str], out: Path) -> int:
    """The CLI's --wandb-dashboard/--push: build, write, then save when asked and able; the exit code."""
    cmd = "python -m attnbench.report " + shlex.join([a for a in argv if a != "--push"])
    push_cmd = cmd + ("" if "--wandb-dashboard" in argv else " --wandb-dashboard") + " --push"
    try:
        sweep = read_sweep(rep, args.paths, args.wandb_project, args.wandb_entity, cmd)
    except ConfigError as exc:
        print(f"attnbench report: error: {exc}", file=sys.stderr)
        return 2
    dash = build(sweep)
    for note in dash.notes:
        print(f"dashboard: {note}")
    for path in write(dash, out):
        print(f"wrote {path}")
    from .wandb_run import _logger_cfg

    mode = wandb_rules.resolve_mode(args.wandb_mode or _logger_cfg(rep.runs).get("mode"))
    creds = wandb_rules.has_credentials()
    if args.push and not creds:
        print("attnbench report: error: --push needs W&B credentials (WANDB_API_KEY or `wandb login`); the "
              f"dashboard is written to {out}, push it after logging in", file=sys.stderr)
        return 2
    if not args.push and (mode != "online" or not creds):
        why = "online, but no W&B credentials" if mode == "online" else mode
        print(f"W&B dashboard: not saved ({why}). After syncing the runs ({_sync_hint(sweep)}), save it with:\n"
              f"  {push_cmd}")
        return 0
    try:
        ws_url, rep_url = bounded(lambda: _save(sweep, args.wandb_timeout), args.wandb_timeout)
    except Exception as exc:
        print(f"attnbench report: error: W&B did not save the dashboard: {_one_line(exc)} (the JSON in {out} "
              f"is kept; retry with: {push_cmd})", file=sys.stderr)
        return 1
    print(f"W&B workspace: {ws_url}\nW&B report: {rep_url}")
    return 0
