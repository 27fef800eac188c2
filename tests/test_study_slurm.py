"""`python -m attnbench.study` on the local SLURM cluster (issue 27): a study whose login session is lost
while its tuning jobs are queued picks them up on the next run instead of submitting them again.
Run under the shared lock: `flock /tmp/attnbench-slurm.lock python -m pytest tests/test_study_slurm.py`."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
from test_slurm import LAUNCH, cleanup, drain, slurm, wait_until  # noqa: F401 (slurm: the cluster fixture)

from attnbench.study.launch import slurm_ids

pytestmark = pytest.mark.slow


def test_a_slurm_study_picks_up_its_queued_jobs_after_a_lost_session(slurm, tmp_path):
    d = tmp_path / "st"
    argv = [sys.executable, "-m", "attnbench.study", "--dir", str(d), "--tune", "train.lr", "--baseline", "attn=mha",
            "--max-extensions", "0", "--confirm-seeds", "1", "--", *LAUNCH, "attn=mha", "train.lr=1e-4,3e-4",
            "seed=0", "train.steps=3"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    first.log_path = tmp_path / "first.log"
    tune, second = d / "tune", None
    try:
        wait_until(lambda: slurm_ids(tune), 120, "the tuning jobs to be submitted", proc=first)
        arrays = {i.split("_")[0] for i in slurm_ids(tune)}
        subprocess.run(["scontrol", "hold", *arrays], capture_output=True, timeout=30)  # kept in the queue
        os.killpg(first.pid, signal.SIGKILL)  # the login session is lost: study and launcher die, the jobs do not
        first.wait()
        with open(tmp_path / "second.log", "w") as log:
            second = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        second.log_path = tmp_path / "second.log"
        wait_until(lambda: "waiting for" in second.log_path.read_text(), 120, "the re-run to wait", proc=second)
        subprocess.run(["scontrol", "release", *arrays], capture_output=True, timeout=30)
        second.wait(timeout=400)
        out = second.log_path.read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
        for folder in (tune, d / "confirm" / "c1"):
            cleanup(first, folder)
    assert second.returncode == 0, out[-3000:]
    assert {i.split("_")[0] for i in slurm_ids(tune)} == arrays  # no second array for the tuning jobs
    assert f"{tune}: waiting for 2 SLURM jobs" in out and "of an earlier launch instead of launching them again" in out
    assert "tune: all 2 jobs of the earlier launch have ended; not launched again" in out
    rec = json.loads((d / "study.json").read_text())
    assert len(rec["launches"]["tune"]["attempts"]) == 1 and rec["launches"]["tune"]["state"] == "done"
    assert rec["launches"]["confirm/c1"]["attempts"][0]["slurm_jobs"]  # the launch ids of the confirmation
    assert rec["edges"][0]["why"] == "still at the edge after 0 extensions"
    with open(d / "report" / "variants.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["selection"] == "held_out" and row["replicates"] == "seed=1"
    drain()
