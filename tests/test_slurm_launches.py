"""Issue 25 on the local SLURM (items 1, 2, 5): a killed login-node launcher and re-launches.

The jobs are held where a test needs them (`scontrol hold` keeps a job pending, `scontrol requeuehold`
preempts one and keeps it waiting for its own requeue), so each state is reached by an event, not a
sleep. Uses the cluster and helpers of tests/test_slurm.py; run under the shared lock:
    flock /tmp/attnbench-slurm.lock python -m pytest tests/test_slurm_launches.py -q -x
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_slurm import (cleanup, drain, finish, launch, results, rows, scontrol, slurm,  # noqa: F401 (fixture)
                        slurm_id, wait_until)

pytestmark = pytest.mark.slow
LIVE = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "COMPLETING", "CONFIGURING")


def state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id], capture_output=True, text=True,
                         timeout=30).stdout.split()
    return out[0] if out else ""


def summary(sweep: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    r = subprocess.run([sys.executable, "-m", "attnbench.sweep", str(sweep)], capture_output=True, text=True,
                       timeout=120)
    with open(sweep / "summary.csv", newline="") as f:
        return r, list(csv.DictReader(f))


def test_killed_launcher_jobs_still_listed_get_no_resume_command_and_block_a_relaunch(slurm, tmp_path):
    """Job 0 trains and is then preempted and held (`requeuehold`: it waits for its own requeue), job 1 is
    held before it starts; the launcher is killed. Today the summary counts one job and prints the resume
    command that would start a second writer in job 0's directory."""
    sweep = tmp_path / "sweep"
    grid = ["seed=0,1", "train.steps=100000", "train.eval_every=0", "hydra.launcher.array_parallelism=1"]
    proc = launch(tmp_path, sweep, *grid)
    d = [sweep / "0", sweep / "1"]
    try:
        wait_until(lambda: rows(d[0]) >= 5, 180, "job 0 to train", proc=proc)
        j0, j1 = slurm_id(sweep, 0), slurm_id(sweep, 1)
        scontrol("hold", j1)  # pending (array_parallelism=1) and kept so
        proc.kill()
        proc.wait()
        scontrol("requeuehold", j0)
        wait_until(lambda: results(d[0]).get("status") == "interrupted" and state(j0) in LIVE, 120,
                   "job 0 to stop and wait for its requeue")
        r, table = summary(sweep)
        assert r.returncode == 3, r.stdout + r.stderr
        # job 1 waits for `scontrol release`; job 0 is held once SLURM has taken its requeue (REQUEUED or
        # COMPLETING just before: still running)
        assert [x["slurm_job_id"] for x in table] == [j0, j1] and table[1]["status"] == "held", table
        assert table[0]["status"] in ("running", "held"), table
        assert "resume=true" not in r.stdout and "no resume command while 2 jobs are still pending" in r.stdout
        submitted = sorted(p.name for p in (sweep / ".submitit").iterdir())
        again = subprocess.run([sys.executable, "-m", "attnbench", "-m", *proc.args[4:]], capture_output=True,
                               text=True, timeout=300, cwd=tmp_path)
        assert again.returncode == 2, again.stdout + again.stderr
        (line,) = again.stderr.strip().splitlines()
        assert f"job 0 (SLURM {j0} " in line and f"job 1 (SLURM {j1} " in line and "nothing was submitted" in line
        assert sorted(p.name for p in (sweep / ".submitit").iterdir()) == submitted
        subprocess.run(["scancel", j0, j1], check=True, timeout=30)
        wait_until(lambda: state(j0) not in LIVE and state(j1) not in LIVE, 60, "the jobs to be cancelled")
        r, table = summary(sweep)
    finally:
        cleanup(proc, sweep)
    assert r.returncode == 1, r.stdout + r.stderr
    assert [x["status"] for x in table] == ["interrupted", "missing"]
    assert table[1]["error"] == f"never started: SLURM job {j1} ended as CANCELLED"
    assert "resume=true hydra.sweep.dir=" in r.stdout and r.stdout.rstrip().endswith("train.resume=true")
    drain()


def test_relaunch_job_cancelled_before_it_starts_is_this_launchs(slurm, tmp_path, cli):
    """A re-launch (another config) into a directory whose jobs ended ok: job 1 is cancelled while held
    pending. Today record_slurm_end sees the old ok results.json, returns `ok`, and leaves the earlier
    launch's record, so the summary drops the job as "earlier launch"."""
    sweep = tmp_path / "sweep"
    first = cli("-m", "seed=0,1", "stages=[]", "logger=none", "device=cpu", "device.threads=1",
                f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr
    old = json.loads((sweep / "launch.json").read_text())["launch_id"]
    proc = launch(tmp_path, sweep, "seed=0,1", "train.steps=100000", "train.eval_every=0",
                  "hydra.launcher.array_parallelism=1")
    d = [sweep / "0", sweep / "1"]
    try:
        wait_until(lambda: rows(d[0]) >= 5, 180, "job 0 to train", proc=proc)
        j0, j1 = slurm_id(sweep, 0), slurm_id(sweep, 1)
        scontrol("hold", j1)
        subprocess.run(["scancel", j1], check=True, timeout=30)
        wait_until(lambda: state(j1) == "CANCELLED", 30, "job 1 to be cancelled", proc=proc)
        subprocess.run(["scancel", j0], check=True, timeout=30)  # the launcher records both once both ended
        out = finish(proc, tmp_path, 120)
    finally:
        cleanup(proc, sweep)
    new = json.loads((sweep / "launch.json").read_text())["launch_id"]
    assert proc.returncode == 1 and new != old, out
    cancelled = results(d[1])
    assert cancelled["launch_id"] == new and f"SLURM ended job {j1} as CANCELLED" in cancelled["error"]
    assert json.loads((d[1] / ".hydra" / "launch.json").read_text())["launch_id"] == new
    assert json.loads((d[1] / "results.1.json").read_text())["launch_id"] == old  # kept, not taken as this job's
    assert "2 jobs, 0 ok, 2 NOT OK: 2 interrupted" in out and "earlier launch" not in out
    r, table = summary(sweep)
    assert r.returncode == 1 and [x["status"] for x in table] == ["interrupted", "interrupted"], r.stdout
    drain()
