"""`attnbench.report --wandb-dashboard`: the W&B view and report of a real small sweep, checked offline with
wandb-workspaces' own models and against the keys the runs logged (read back with the project's reader)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnbench import report
from attnbench.report.dashboard import load_report, load_workspace
from attnbench.report.dashboard_panels import SECTIONS, Logged
from attnbench.track.wandb_reader import find_run_files, read_run

pytestmark = pytest.mark.slow
LRS = (1e-3, 3e-3, 1e30)  # 1e30 diverges at step 2: a failed job that has a W&B run
OPTS = ["--tune", "train.lr", "--baseline", "attn=mha"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """12 real jobs, W&B offline: 2 variants x 2 seeds x 3 learning rates, bench + train, 4 steps."""
    base = tmp_path_factory.mktemp("dash")
    root = base / "multirun" / "2026-12-07" / "03-00-00"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(base / "wandb"),
           "ATTNBENCH_RUNS": str(base / "runs"), "ATTNBENCH_CACHE": str(base / "cache")}
    proc = subprocess.run([sys.executable, "-m", "attnbench", "-m", "attn=mha,mqa", "seed=0,1",
                           "train.lr=" + ",".join(map(str, LRS)), "stages=[bench,train]", "bench.seq_lens=[16,32]",
                           "bench.repeats=2", "bench.modes=[forward]", "train.steps=4", "train.batch_size=4",
                           "train.eval_every=2", "train.eval_batches=1", "train.eval_seq_lens=[32]",
                           f"hydra.sweep.dir={root}"], capture_output=True, text=True, timeout=400, env=env, cwd=base)
    assert proc.returncode == 1, proc.stderr[-2000:]  # a sweep with failed jobs says so in its exit code
    assert len(list(root.glob("*/results.json"))) == 12
    return root


def _jobs(sweep: Path) -> list[tuple[dict, object]]:
    """(results.json, its W&B run) of every job."""
    out = []
    for d in sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        out.append((json.loads((d / "results.json").read_text()), read_run(find_run_files(d)[-1])))
    return out


@pytest.fixture(scope="module")
def built(sweep, tmp_path_factory) -> dict:
    """The dashboard of the sweep, written offline, and what the CLI printed."""
    out = tmp_path_factory.mktemp("out")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = report.main([str(sweep), *OPTS, "--out", str(out), "--wandb-dashboard"])
    return {"rc": rc, "out": out, "stdout": buf.getvalue()}


def test_the_json_loads_back_into_wandb_workspaces_models(built):
    from wandb_workspaces.reports.v2 import internal as rinternal
    from wandb_workspaces.workspaces import internal as winternal

    assert built["rc"] == 0
    ws_path, rep_path = built["out"] / "wandb_workspace.json", built["out"] / "wandb_report.json"
    winternal.View.model_validate_json(ws_path.read_text())  # the wire models first, then the user-facing ones
    rinternal.ReportViewspec.model_validate_json(rep_path.read_text())
    view, rep = load_workspace(ws_path), load_report(rep_path)
    assert view.project == rep.project == "attnbench"  # the runs' logger.project
    kinds = [type(b).__name__ for b in rep.blocks]
    assert {"H2", "MarkdownBlock", "PanelGrid"} <= set(kinds)
    assert "python -m attnbench.report" in built["stdout"] and "--push" in built["stdout"]  # the command for later


def test_view_groups_by_variant_filters_to_the_group_and_has_the_sections(built, sweep):
    view = load_workspace(built["out"] / "wandb_workspace.json")
    group = _jobs(sweep)[0][1].group
    rs = view.runset_settings
    assert [g.name for g in rs.groupby] == ["variant", "train.lr.value"]  # then the tuned key, as W&B stores it
    assert f"Metric(\"Group\") == '{group}'" in rs.filters and "SummaryMetric(\"status\") == 'ok'" in rs.filters
    assert [s.name for s in view.sections] == list(SECTIONS)
    titles = {s.name: [getattr(p, "title", None) for p in s.panels] for s in view.sections}
    assert {"train loss vs step", "val loss vs step", "val recall_acc vs step"} <= set(titles["training"])
    assert "forward latency (median ms) by sequence length" in titles["cost"]
    assert rs.pinned_columns[:3] == ["run:displayName", "config:variant.value", "config:attn.name.value"]


def _panel_keys(panel) -> list[tuple[str, str]]:
    """(where, key) for every key a loaded panel names: history, summary or config."""
    import wandb_workspaces.reports.v2 as wr

    name = lambda m: m if isinstance(m, str) else m.name  # noqa: E731
    if isinstance(panel, wr.LinePlot):
        return [("history", name(m)) for m in panel.y]
    if isinstance(panel, wr.BarPlot):
        return [("summary", name(m)) for m in panel.metrics]
    if isinstance(panel, wr.ScatterPlot):
        return [("summary", panel.x.name), ("summary", panel.y.name)]
    if isinstance(panel, wr.ParallelCoordinatesPlot):
        return [("config" if isinstance(c.metric, wr.Config) else "summary", c.metric.name) for c in panel.columns]
    if isinstance(panel, wr.WeavePanelSummaryTable):
        return [("summary", panel.table_name)]
    assert isinstance(panel, wr.RunComparer), type(panel)
    return []


def test_every_panel_key_is_logged_by_the_runs(built, sweep):
    have = Logged()
    for res, run in _jobs(sweep):
        if res["status"] == "ok":
            have.add(run)
    sets = {"history": have.history, "summary": have.summary, "config": have.config}
    view, rep = load_workspace(built["out"] / "wandb_workspace.json"), load_report(built["out"] / "wandb_report.json")
    grid = next(b for b in rep.blocks if type(b).__name__ == "PanelGrid")
    keys = [k for s in view.sections for p in s.panels for k in _panel_keys(p)]
    keys += [k for p in grid.panels for k in _panel_keys(p)]
    assert len(keys) >= 20 and len(grid.panels) >= 5
    assert [k for k in keys if k[1] not in sets[k[0]]] == []
    assert ("config", "train.lr") in keys and ("summary", "bench/forward/T32/median_ms") in keys
    wire = (built["out"] / "wandb_workspace.json").read_text()
    assert '"config:train.lr.value"' in wire and "train.value.lr" not in wire  # flat keys, as W&B stores them


def test_failed_jobs_are_left_out_and_said_so(built, sweep):
    jobs = _jobs(sweep)
    bad = {run.run_id for res, run in jobs if res["status"] != "ok"}
    assert len(bad) == 4 and {res["status"] for res, _ in jobs} == {"ok", "diverged"}
    rep = load_report(built["out"] / "wandb_report.json")
    text = "\n".join(getattr(b, "text", "") or "" for b in rep.blocks)
    assert "4 of 12 jobs are not ok" in text and "diverged" in text
    assert "| 2 (+2 not ok) |" in text  # n of the variant table: the diverged lr counted apart
    grid = next(b for b in rep.blocks if type(b).__name__ == "PanelGrid")
    ids = set(grid.runsets[0].filters.split(" in ")[1].strip("[]").replace("'", "").split(", "))
    import csv

    with open(built["out"] / "variants.csv", newline="") as f:
        lr = {row["name"]: float(row["train.lr"]) for row in csv.DictReader(f)}
    chosen = {run.run_id for res, run in jobs
              if res["status"] == "ok" and res["config"]["train"]["lr"] == lr[res["variant"]]}
    assert ids == chosen and len(ids) == 4 and not ids & bad  # exactly what the table averages: 2 variants x 2 seeds


def test_a_panel_whose_key_no_run_has_is_left_out_with_a_line(sweep):
    from attnbench.report.build import build_report
    from attnbench.report.dashboard_panels import candidates, check
    from attnbench.report.dashboard_save import read_sweep

    rep = build_report([sweep], sweep / "r2", tune="train.lr")
    s = read_sweep(rep, [sweep], None, None, "")
    sections, notes = check(candidates(s.comp, [r for r in s.runs if r.ok]), Logged(history={"train_loss"}), "view")
    assert [p.title for p in sections["training"]] == ["train loss vs step"]
    assert "view: left out panel 'val loss vs step' (training): no run logs val_loss" in notes
    assert "quality" not in sections


def test_entity_and_project_flags_override_the_logger_config(sweep, tmp_path, capsys):
    assert report.main([str(sweep), "--out", str(tmp_path), "--wandb-dashboard", "--wandb-project", "p2",
                        "--wandb-entity", "team"]) == 0
    ws = json.loads((tmp_path / "wandb_workspace.json").read_text())
    rep = json.loads((tmp_path / "wandb_report.json").read_text())
    assert (ws["entity"], ws["project"]) == ("team", "p2")
    assert rep["project"] == {"name": "p2", "entityName": "team"}


def _no_credentials(env: dict, home: Path) -> dict:
    env = {k: v for k, v in env.items() if k not in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")}
    return {**env, "HOME": str(home), "NETRC": str(home / "no-netrc"), "WANDB_CONFIG_DIR": str(home / "wandb-config"),
            "WANDB_BASE_URL": "http://127.0.0.1:9"}  # the discard port: nothing leaves this machine


def test_push_without_credentials_is_one_line_and_exit_2_with_the_json_written(sweep, tmp_path):
    env = _no_credentials(dict(os.environ), tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "attnbench.report", str(sweep), "--out", str(tmp_path / "o"),
                           "--push"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--push needs W&B credentials" in errors[0]
    load_workspace(tmp_path / "o" / "wandb_workspace.json")
    load_report(tmp_path / "o" / "wandb_report.json")


def test_online_with_an_unreachable_server_is_bounded(sweep, tmp_path):
    env = {**_no_credentials(dict(os.environ), tmp_path / "home"), "WANDB_API_KEY": "k" * 40}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "attnbench.report", str(sweep), "--out", str(tmp_path / "o"),
                           "--wandb-dashboard", "--wandb-mode", "online", "--wandb-timeout", "3"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1 and "W&B did not save the dashboard" in proc.stderr, proc.stderr[-1500:]
    assert (tmp_path / "o" / "wandb_workspace.json").is_file()


def test_no_wandb_runs_is_a_clear_error(tmp_path, capsys):
    job = tmp_path / "0"
    job.mkdir()
    (job / "results.json").write_text(json.dumps({"status": "ok", "variant": "v", "config": {"seed": 0}}))
    assert report.main([str(tmp_path), "--wandb-dashboard"]) == 2
    assert "no job under the paths has a W&B run" in capsys.readouterr().err
    assert not (tmp_path / "report" / "wandb_workspace.json").exists()


def _leet(path: Path) -> dict:
    """A run file decoded by wandb itself: `wandb leet inspect --json` (wandb-core's reader), merged."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    out: dict = {"config": {}, "summary": {}, "history": [], "exit_code": None}
    for rec in map(json.loads, proc.stdout.splitlines()):
        kind, body = rec["type"], rec.get(rec["type"]) or {}
        if kind == "run":
            out["run"] = body
            out["config"].update(body.get("config", {}).get("update", {}))
        elif kind in ("config", "summary"):
            out[kind].update(body.get("update", {}))
            for key in body.get("remove", {}) or {}:
                out[kind].pop(key, None)
        elif kind == "history":
            out["history"].append(body["item"])
        elif kind == "exit":
            out["exit_code"] = body.get("exit_code", 0)
    return out


def test_reader_agrees_with_wandbs_own_decoder(sweep):
    """wandb_reader.py decodes the .wandb format itself (see its docstring); wandb's CLI decodes it too."""
    for res, ours in (_jobs(sweep)[0], next(j for j in _jobs(sweep) if j[0]["status"] != "ok")):
        theirs = _leet(ours.path)
        run = theirs["run"]
        assert (ours.run_id, ours.project, ours.name, ours.group, ours.job_type, ours.tags) == (
            run["run_id"], run["project"], run["display_name"], run["run_group"], run["job_type"], run["tags"])
        assert ours.exit_code == theirs["exit_code"] == (0 if res["status"] == "ok" else 1)
        theirs["config"].pop("_wandb", None)
        assert ours.config == theirs["config"]  # attnbench's config is flat: the same keys either way
        assert len(ours.history) == len(theirs["history"]) >= 1
        for mine, other in zip(ours.history, theirs["history"]):
            assert {k: v for k, v in mine.items() if not isinstance(v, dict)} == \
                   {k: v for k, v in other.items() if "." not in k}  # leet writes nested keys as a.b
        flat = {k: v for k, v in ours.summary.items() if not isinstance(v, dict)}
        assert flat == {k: v for k, v in theirs["summary"].items() if "." not in k}
        assert ("train/val_loss" in flat) == (res["status"] == "ok") and flat["status"] == res["status"]


class _FakeWandb:
    """A local stand-in for W&B's GraphQL endpoint: answers the queries a push makes and records them."""

    VIEW = {"id": "VIEW1", "name": "nw-abc123-v", "type": "runs", "displayName": "d", "description": "",
            "project": {"id": "1", "name": "attnbench", "entityName": "me"}, "spec": "{}",
            "updatedAt": "2026-12-07T00:00:00"}

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                q = req.get("query", "")
                calls.append(req)
                data = ({"upsertView": {"view": _FakeWandb.VIEW, "inserted": True}} if "upsertView" in q else
                        {"project": {"internalId": "P1"}} if "internalId" in q else
                        {"viewer": {"id": "u", "entity": "me", "username": "me"}} if "viewer" in q else {})
                body = json.dumps({"data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _no_ids(obj):
    """A spec without the random ids each build draws (panels, runsets; group colours are keyed by runset id)."""
    if isinstance(obj, dict):
        return {k: _no_ids(v) for k, v in obj.items() if k not in ("id", "__id__", "customRunColors")}
    return [_no_ids(v) for v in obj] if isinstance(obj, list) else obj


def test_push_with_credentials_saves_both_and_prints_their_urls(sweep, tmp_path):
    fake = _FakeWandb()
    env = {**_no_credentials(dict(os.environ), tmp_path / "home"), "WANDB_API_KEY": "k" * 40,
           "WANDB_BASE_URL": fake.url}
    try:
        proc = subprocess.run([sys.executable, "-m", "attnbench.report", str(sweep), *OPTS, "--out",
                               str(tmp_path / "o"), "--push", "--wandb-timeout", "60"],
                              capture_output=True, text=True, timeout=180, env=env)
    finally:
        fake.server.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"W&B workspace: {fake.url}/me/attnbench?nw=abc123" in proc.stdout
    assert f"W&B report: {fake.url}/me/attnbench/reports/attnbench-" in proc.stdout and "--VIEW1" in proc.stdout
    saves = [c["variables"] for c in fake.calls if "upsertView" in c.get("query", "")]
    assert [(v["type"], v["entityName"], v["projectName"]) for v in saves] == [
        ("project-view", "me", "attnbench"), ("runs", "me", "attnbench")]  # the view, then the report
    view_spec, report_spec = json.loads(saves[0]["spec"]), json.loads(saves[1]["spec"])
    written = json.loads((tmp_path / "o" / "wandb_workspace.json").read_text())["spec"]
    assert _no_ids(view_spec) == _no_ids(written)  # the JSON written offline (new panel and runset ids apart)
    assert '"config:train.lr.value"' in saves[0]["spec"] and "| 2 (+2 not ok) |" in saves[1]["spec"]
    grid = next(b for b in report_spec["blocks"] if b["type"] == "panel-grid")
    assert grid["metadata"]["runSets"][0]["project"]["id"] == "P1"  # the runset names the pushed project


def test_a_bench_only_sweep_keeps_only_panels_with_data_and_says_why(tmp_path, capsys):
    """No training: every training and quality panel is left out with its line; what is drawn has data."""
    root = tmp_path / "multirun" / "2026-12-07" / "04-00-00"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "-m", "attnbench", "-m", "attn=mha,mqa", "stages=[bench]",
                           "bench.seq_lens=[16,32]", "bench.repeats=2", "bench.modes=[forward]",
                           f"hydra.sweep.dir={root}"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report.main([str(root), "--wandb-dashboard"]) == 0
    out = capsys.readouterr().out
    assert "dashboard: view, report: left out panel 'val loss vs step' (training): no run logs val_loss" in out
    assert "dashboard: view: left out section 'training': none of its panels has data" in out
    view = load_workspace(root / "report" / "wandb_workspace.json")
    assert [s.name for s in view.sections] == ["cost", "axes", "runs"]
    have = Logged()
    for d in root.iterdir():
        if d.name.isdigit():
            have.add(read_run(d))
    sets = {"history": have.history, "summary": have.summary, "config": have.config}
    keys = [k for s in view.sections for p in s.panels for k in _panel_keys(p)]
    assert keys and [k for k in keys if k[1] not in sets[k[0]]] == []


def test_jobs_leave_their_wandb_keys_cached(sweep, monkeypatch):
    """Each job's W&B sink caches its run's key names at close: the dashboard parses no .wandb file."""
    from attnbench.track import wandb_keys

    def no_scan(path):
        raise AssertionError(f"{path} parsed although the job cached its keys")

    jobs = [d for d in sweep.iterdir() if d.name.isdigit()]
    assert jobs and all((d / "wandb" / wandb_keys.CACHE_FILE).is_file() for d in jobs)
    monkeypatch.setattr(wandb_keys, "scan", no_scan)
    for d in jobs:
        cached, full = wandb_keys.read_keys(d)[-1], read_run(find_run_files(d)[-1])
        assert (cached.run_id, cached.history_keys, cached.summary, cached.config) == \
            (full.run_id, full.history_keys, set(full.summary), set(full.config))
