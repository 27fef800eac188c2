"""Launches: which jobs of a sweep directory the summary (and the report) count.

A job belongs to the latest launch into its sweep directory by the launch ids recorded in the
files (track/launch.py), never by file times: a copy (`cp -r`, rsync without -t) changes those.
The subprocess tests run real multiruns of tiny jobs (stages=[], logger=none) and are slow-marked."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnbench.report.runs import job_set
from attnbench.sweep import main
from attnbench.sweep.summary import collect
from attnbench.track.launch import EARLIER, LATEST, UNKNOWN, write_job_launch, write_sweep_launch

TINY = ["stages=[]", "logger=none", "device=cpu"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def job(sweep: Path, num: int, status: str = "ok", launch: str | None = None, results_launch: str | None = None,
        attn: str = "mha") -> Path:
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- attn={attn}\n")
    (d / "results.json").write_text(json.dumps({"status": status, "variant": attn,
                                                "launch_id": results_launch or launch}))
    if launch:
        write_job_launch(d, launch)
    return d


def age_files(root: Path, years: int = 0) -> None:
    """What a copy without times does: every file gets a new time, here in reverse order of writing
    (each job's .hydra/overrides.yaml ends up older than multirun.yaml, the old rule's test)."""
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: "multirun.yaml" not in p.name)
    now = time.time()
    for i, p in enumerate(files):
        os.utime(p, (now - i * 10 - years * 3.2e7,) * 2)


# ----------------------------------------------------------------------------- in process
def test_membership_comes_from_launch_ids_not_file_times(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    write_sweep_launch(sweep, "L2")
    job(sweep, 0, launch="L2")
    job(sweep, 1, launch="L2", results_launch="L1")  # started by L2, result reused from L1 (resume=true)
    job(sweep, 2, launch="L1", attn="gqa")  # only the earlier launch had a job 2
    job(sweep, 3, status="failed")  # no record at all: cannot be told
    (sweep / "4" / ".hydra").mkdir(parents=True)  # L2 started it; it died before writing results.json
    (sweep / "4" / ".hydra" / "overrides.yaml").write_text("- attn=mqa\n")
    write_job_launch(sweep / "4", "L2")
    age_files(sweep)
    jobs = job_set([sweep])
    assert [r.dir.name for r in jobs.runs] == ["0", "1", "3", "4"] and [r.dir.name for r in jobs.earlier] == ["2"]
    assert [r.launch.state for r in jobs.runs] == [LATEST, LATEST, UNKNOWN, LATEST]
    assert [r.dir.name for r in jobs.unknown] == ["3"] and jobs.earlier[0].launch.state == EARLIER
    rows = collect(sweep)
    assert [(r["job"], r["status"], r["reused"]) for r in rows] == [
        ("0", "ok", False), ("1", "ok", True), ("3", "failed", False), ("4", "failed", False)]
    assert len(job_set([sweep], all_launches=True).runs) == 5


def test_summary_says_what_it_left_out_and_what_it_cannot_tell(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    write_sweep_launch(sweep, "L2")
    job(sweep, 0, launch="L2")
    job(sweep, 1, launch="L1")
    job(sweep, 2, launch=None)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "sweep " + str(sweep) + ": 2 jobs, 2 ok" in out
    assert "1 job of earlier launches into the same directory left out; " \
           "`python -m attnbench.sweep DIR --all-launches` counts them" in out
    assert "1 job counted whose launch cannot be told" in out
    assert "1 job of earlier launches" in (sweep / "summary.md").read_text()
    assert [r["job"] for r in read_csv(sweep / "summary.csv")] == ["0", "2"]
    assert main([str(sweep), "--all-launches"]) == 0
    assert ": 3 jobs, 3 ok" in capsys.readouterr().out


def test_a_sweep_from_before_launch_ids_keeps_every_job_and_says_so(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    job(sweep, 0)
    job(sweep, 1)
    age_files(sweep)  # overrides.yaml older than multirun.yaml: the old rule dropped both
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert ": 2 jobs, 2 ok" in out and "2 jobs counted whose launch cannot be told" in out


def test_job_folders_without_multirun_yaml_give_a_summary(tmp_path, capsys):
    loose = tmp_path / "copied_jobs"
    job(loose, 3, launch="L1")
    job(loose, 7, status="failed", launch="L9")
    assert main([str(loose)]) == 1
    out = capsys.readouterr().out
    assert ": 2 jobs, 1 ok, 1 NOT OK" in out and "Traceback" not in out
    assert f"(no multirun.yaml in {loose}: job directories, not a whole sweep; no resume command)" in out
    (loose / "multirun.yaml").write_text("hydra: [unclosed\n")  # torn: still a summary, no resume command
    assert main([str(loose)]) == 1 and "resume=true" not in capsys.readouterr().out


def test_the_report_counts_the_jobs_the_summary_counts(tmp_path, capsys):
    from attnbench.report import main as report_main

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    write_sweep_launch(sweep, "L2")
    for n, (attn, launch) in enumerate([("mha", "L2"), ("gqa", "L1"), ("mqa", "L1"), ("local", None)]):
        job(sweep, n, launch=launch, attn=attn)
    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs (2 ok)")
    assert "note: 2 jobs of earlier launches into the same directory left out; `--all-launches` counts them" in out
    assert "note: 1 job counted whose launch cannot be told" in out
    md = (sweep / "report" / "report.md").read_text()
    assert "2 jobs of earlier launches into the same directory left out; `--all-launches` counts them." in md
    report_dirs = [r["run_dir"] for r in read_csv(sweep / "report" / "results.csv")]
    assert report_dirs == [r["dir"] for r in collect(sweep)] == [str((sweep / n).resolve()) for n in "03"]
    assert report_main([str(sweep), "--all-launches", "--out", str(tmp_path / "all")]) == 0
    assert capsys.readouterr().out.startswith("4 runs (4 ok)") and "earlier launches" not in (tmp_path / "all" / "report.md").read_text()


# ----------------------------------------------------------------------------- real multiruns (subprocess)
def sweep_cli(cli, sweep: Path, *args: str) -> subprocess.CompletedProcess:
    r = cli("-m", *args, *TINY, f"hydra.sweep.dir={sweep}")
    assert r.returncode in (0, 1), r.stderr
    return r


def summary(sweep: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench.sweep", str(sweep)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_a_copied_sweep_keeps_every_job(cli, tmp_path):
    """Issue 17: after `cp -r` the old rule (overrides.yaml older than multirun.yaml) dropped a job."""
    sweep = tmp_path / "sweep"
    r = sweep_cli(cli, sweep, "attn=mha,gqa,mqa,local", "attn.window=8")
    assert r.returncode == 0 and "4 jobs, 4 ok" in r.stdout
    lid = json.loads((sweep / "launch.json").read_text())["launch_id"]
    assert all(json.loads((sweep / n / "results.json").read_text())["launch_id"] == lid for n in "0123")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(sweep), str(copy)], check=True)  # cp -r keeps no times
    age_files(copy)
    assert (copy / "0" / ".hydra" / "overrides.yaml").stat().st_mtime < (copy / "multirun.yaml").stat().st_mtime
    s = summary(copy)
    assert s.returncode == 0, s.stderr
    assert "4 jobs, 4 ok" in s.stdout and "left out" not in s.stdout and "cannot be told" not in s.stdout
    loose = tmp_path / "loose"  # some jobs copied out of the sweep, without multirun.yaml
    loose.mkdir()
    for n in "13":
        shutil.copytree(copy / n, loose / n)
    s = summary(loose)
    assert s.returncode == 0 and "2 jobs, 2 ok" in s.stdout and "Traceback" not in s.stderr, s.stderr


@pytest.mark.slow
def test_a_relaunch_with_fewer_jobs_counts_only_the_new_ones(cli, tmp_path):
    sweep = tmp_path / "sweep"
    sweep_cli(cli, sweep, "attn=mha,gqa,mqa")
    r = sweep_cli(cli, sweep, "attn=gqa,mha", "resume=true")  # job 0 is now gqa (runs), job 1 mha (runs)
    assert "2 jobs, 2 ok" in r.stdout and "1 job of earlier launches" in r.stdout, r.stdout
    rows = read_csv(sweep / "summary.csv")
    assert [(x["job"], x["overrides"], x["status"]) for x in rows] == [("0", "attn=gqa", "ok"), ("1", "attn=mha", "ok")]
    r = sweep_cli(cli, sweep, "attn=gqa", "resume=true")  # the same job 0 again: reused, still counted
    assert "1 jobs, 1 ok (1 reused)" in r.stdout and "2 jobs of earlier launches" in r.stdout, r.stdout
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(sweep), str(copy)], check=True)
    age_files(copy, years=1)
    s = summary(copy)
    assert "1 jobs, 1 ok (1 reused)" in s.stdout and "2 jobs of earlier launches" in s.stdout, s.stdout
    rep = subprocess.run([sys.executable, "-m", "attnbench.report", str(copy)], capture_output=True, text=True,
                         timeout=300)  # issue 21: the report and the summary agree
    assert rep.returncode == 0 and rep.stdout.startswith("1 runs (1 ok)"), rep.stdout + rep.stderr
    assert "2 jobs of earlier launches into the same directory left out; `--all-launches` counts them" in rep.stdout
    assert [r["run_dir"] for r in read_csv(copy / "report" / "results.csv")] == \
        [r["dir"] for r in read_csv(copy / "summary.csv")] == [str((copy / "0").resolve())]
