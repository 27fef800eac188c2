"""Sweeps on a real SLURM: the one-node cluster of benchmarks/slurm/local_cluster.sh (docs/sweeps.md).

hydra/launcher=slurm_gpu as a user runs it (its --gpus-per-node=1 line scheduled on the placeholder
GPUs, device=cpu), with preemptions (`scontrol requeue`, and a higher-priority job in the `grace`
partition's GraceTime), time limits, `scancel`, holds and kills done to the jobs by SLURM itself.
Skipped with one line where SLURM is absent; CI (ATTNBENCH_REQUIRE_SLURM=1, set by .ci/run) fails
instead. Sizes are tiny; each test waits on events, not on fixed sleeps. end_grace_s=5: this
filesystem is local, there is no NFS attribute caching to wait out.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "slurm" / "local_cluster.sh"
HOW = ("SLURM tests skipped: no local SLURM here (as root: apt-get install slurm-wlm munge, then "
       "bash benchmarks/slurm/local_cluster.sh start; or export SLURM_CONF of a running test cluster)")
LAUNCH = ["hydra/launcher=slurm_gpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
          "hydra.launcher.poll_s=1", "hydra.launcher.end_grace_s=5", "device=cpu", "device.threads=1", "logger=none",
          "stages=[train]", "train.batch_size=8", "train.eval_batches=1", "train.log_every=1"]

pytestmark = pytest.mark.slow


def _unavailable(why: str):
    if os.environ.get("ATTNBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"ATTNBENCH_REQUIRE_SLURM=1 but no SLURM: {why}")
    pytest.skip(HOW)


def _sinfo_ok() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="session")
def slurm():
    """A running SLURM: the one SLURM_CONF points at, else the local cluster, started here and stopped after."""
    if os.environ.get("SLURM_CONF") and _sinfo_ok():
        yield
        return
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    if not shutil.which("slurmctld", path=path) or not shutil.which("munged", path=path):
        _unavailable("slurmctld or munged not installed")
    if os.geteuid() != 0:
        _unavailable("the local cluster needs root")
    running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        _unavailable(" ".join(r.stderr.split())[-300:])
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = r.stdout.strip().split("=", 1)[1]
    try:
        yield
    finally:
        if not running:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


# ----------------------------------------------------------------------------- helpers
def wait_until(pred, timeout: float, what: str, poll: float = 0.2, proc: subprocess.Popen | None = None):
    """Poll `pred`; with `proc` (the launcher), fail at once with its log if it ends first, since a
    launcher that exited early (a refused sweep, a crash) would otherwise cost the whole timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            log = getattr(proc, "log_path", None)
            tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
            raise AssertionError(f"the launcher exited ({proc.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def launch(tmp_path: Path, sweep: Path, *overrides: str) -> subprocess.Popen:
    log = open(tmp_path / "launcher.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "attnbench", "-m", *LAUNCH, *overrides,
                             f"hydra.sweep.dir={sweep}"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    proc.log_path = tmp_path / "launcher.log"  # for wait_until's early-exit message
    return proc


def slurm_id(sweep: Path, num: int, timeout: float = 60) -> str:
    """The SLURM id of job `num` of the sweep (array task `num`), from submitit's folders."""
    def find():
        hits = [p.name for p in (sweep / ".submitit").glob(f"*_{num}") if p.name.split("_")[0].isdigit()]
        return hits[0] if hits else None
    return wait_until(find, timeout, f"job {num} to be submitted")


def rows(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def results(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def attempts(run_dir: Path) -> int:
    path = run_dir / "continuations.json"
    return len(json.loads(path.read_text())["events"]) if path.is_file() else 0


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, timeout=30)


def kill_step(job_id: str) -> None:
    """SIGKILL the job's training process, as the kernel's OOM killer would (`scancel --signal=KILL`
    lets slurmstepd send SIGTERM first, which the trainer handles)."""
    show = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    raw = re.search(r"JobId=(\d+)", show).group(1)  # listpids wants the job's own id, not <array>_<task>
    out = subprocess.run(["scontrol", "listpids", raw], capture_output=True, text=True, timeout=30).stdout
    pids = [int(f[0]) for f in (line.split() for line in out.splitlines()[1:]) if len(f) >= 3 and f[2] == "0"]
    assert pids, out
    for pid in pids:
        os.kill(pid, 9)


def finish(proc: subprocess.Popen, tmp_path: Path, timeout: float) -> str:
    proc.wait(timeout=timeout)
    return (tmp_path / "launcher.log").read_text()


def cleanup(proc: subprocess.Popen, sweep: Path) -> None:
    """After a failed test: stop the launcher and cancel this sweep's jobs (only them)."""
    if proc.poll() is None:
        proc.kill()
    arrays = {p.name.split("_")[0] for p in (sweep / ".submitit").glob("*_*") if p.name.split("_")[0].isdigit()}
    if arrays:
        subprocess.run(["scancel", *sorted(arrays)], capture_output=True, timeout=30)


def drain(timeout: float = 60) -> None:
    """Let every job leave the queue, so the next test has the whole node."""
    def empty():
        out = subprocess.run(["squeue", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
        return not [s for s in out if s in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")]
    wait_until(empty, timeout, "the queue to empty", poll=1)


# ----------------------------------------------------------------------------- tests
def test_scancel_kill_and_endless_preemption_give_clear_rows(slurm, tmp_path):
    """4 jobs: 0 is `scancel`ed (graceful stop), 1 is preempted more often than max_num_requeue=1 allows,
    2 is SIGKILLed (no result of its own, as after an OOM kill), 3 runs. The launcher waits for the
    requeued job, then reports each with SLURM's reason and exits 1; the sbatch script is the one
    that slurm_gpu promises."""
    sweep = tmp_path / "sweep"
    proc = launch(tmp_path, sweep, "seed=0,1,2,3", "train.steps=1500", "train.eval_every=0",
                  "hydra.launcher.max_num_requeue=1", "hydra.launcher.signal_delay_s=30")
    try:
        d = [sweep / str(i) for i in range(4)]
        wait_until(lambda: rows(d[0]) >= 20 and rows(d[1]) >= 20, 120, "jobs 0 and 1 to train", proc=proc)
        subprocess.run(["scancel", slurm_id(sweep, 0)], check=True, timeout=30)
        before = rows(d[1])
        scontrol("requeue", slurm_id(sweep, 1))  # preemption 1 of 2: once more than max_num_requeue=1
        wait_until(lambda: attempts(d[1]) == 1, 60, "preemption 1 of job 1 to be recorded", proc=proc)
        wait_until(lambda: rows(d[2]) >= 20, 120, "job 2 to train", proc=proc)  # in job 0's place
        kill_step(slurm_id(sweep, 2))
        wait_until(lambda: rows(d[1]) >= before + 20, 120, "job 1 to resume", proc=proc)
        scontrol("requeue", slurm_id(sweep, 1))
        wait_until(lambda: attempts(d[1]) == 2, 60, "preemption 2 of job 1 to be recorded", proc=proc)
        out = finish(proc, tmp_path, 240)
    finally:
        cleanup(proc, sweep)
    assert proc.returncode == 1, out
    cancelled, preempted, killed, ok = (results(x) for x in d)
    assert cancelled["status"] == "interrupted" and "stopped by SLURM" in cancelled["error"], cancelled["error"]
    assert preempted["status"] == "interrupted", preempted["error"]
    assert "preempted (SIGTERM) 2 times, more than hydra.launcher.max_num_requeue=1" in preempted["error"]
    assert preempted["continuations"]["preempted"] == 2
    assert killed["status"] == "failed" and f"SLURM ended job {slurm_id(sweep, 2)} as" in killed["error"]
    assert ok["status"] == "ok" and ok["train"]["steps"] == 1500
    assert out.count("job states come from squeue") == 1 and "Bypassing sacct" not in out, out
    assert "4 jobs, 1 ok, 3 NOT OK" in out and "train.resume=true" in out  # and what to run next
    # The summary the launcher wrote is the one `python -m attnbench.sweep DIR` gives.
    with open(sweep / "summary.csv", newline="") as f:
        launched = [r["status"] for r in csv.DictReader(f)]
    r = subprocess.run([sys.executable, "-m", "attnbench.sweep", str(sweep)], capture_output=True, text=True,
                       timeout=120)
    with open(sweep / "summary.csv", newline="") as f:
        assert [x["status"] for x in csv.DictReader(f)] == launched == ["interrupted", "interrupted", "failed", "ok"]
    assert r.returncode == 1
    # What a real sbatch accepted: slurm_gpu's signal, GPU request and setup lines.
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    lines = script.read_text().splitlines()
    for line in ("#SBATCH --signal=USR1@30", "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-3%4",
                 "export WANDB_MODE=offline", "export SUBMITIT_PREEMPT_SIGNAL=USR1", "export PYTHONUNBUFFERED=1"):
        assert line in lines, line
    drain()


def test_preempted_and_timed_out_jobs_continue_to_the_uninterrupted_result(slurm, tmp_path):
    """4 jobs; job 0 is preempted (`scontrol requeue`) mid-training, job 1 is given a time limit shorter
    than its training. All end ok with the final losses of the same sweep run uninterrupted through the
    basic launcher, each step once in metrics.jsonl, and the launcher exits 0. (SLURM checks time limits
    every 30 s, so the jobs train for ~40 s; the reference runs meanwhile.)"""
    sweep = tmp_path / "sweep"
    # 1000 steps of ~25 ms (one thread each: 2 SLURM jobs and 2 reference jobs share the cores without
    # oversubscribing them) keep job 1 running past SLURM's next 30 s time-limit check.
    steps = 1000
    grid = ["attn=mha,gqa", "seed=0,1", f"train.steps={steps}", "train.batch_size=32", "train.eval_every=200"]
    common = [x for x in LAUNCH if not x.startswith("hydra")] + grid
    # The reference: the same 4 jobs through the basic launcher, as two half sweeps side by side.
    refs = [subprocess.Popen([sys.executable, "-m", "attnbench", "-m", *common, f"seed={seed}",
                              f"hydra.sweep.dir={tmp_path / f'ref{seed}'}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
            for seed in (0, 1)]
    proc = launch(tmp_path, sweep, *grid, "hydra.launcher.signal_delay_s=55")
    d = [sweep / str(i) for i in range(4)]
    try:
        wait_until(lambda: rows(d[1]) >= 1, 180, "job 1 to train", proc=proc)
        # 1 minute, of which SIGUSR1 is due 55 s before the end: at once. SLURM checks every 30 s.
        scontrol("update", f"jobid={slurm_id(sweep, 1)}", "TimeLimit=1")
        wait_until(lambda: rows(d[0]) >= 50, 180, "job 0 to train", proc=proc)
        scontrol("requeue", slurm_id(sweep, 0))
        wait_until(lambda: attempts(d[1]) >= 1, 90, "job 1 to reach its time limit and requeue itself", proc=proc)
        scontrol("update", f"jobid={slurm_id(sweep, 1)}", "TimeLimit=30")  # its next attempt has time
        out = finish(proc, tmp_path, 400)
        ref_errs = [ref.communicate(timeout=400)[1] for ref in refs]
    finally:
        cleanup(proc, sweep)
        for ref in refs:
            if ref.poll() is None:
                ref.kill()
    assert proc.returncode == 0, out
    assert [ref.returncode for ref in refs] == [0, 0], [e[-2000:] for e in ref_errs]
    reference = {r["config_hash"]: r for r in (results(p) for p in tmp_path.glob("ref*/[0-9]"))}
    for i in range(4):
        res = results(d[i])
        base = reference[res["config_hash"]]
        assert res["status"] == "ok", (i, res.get("error"))
        assert res["train"]["steps"] == base["train"]["steps"] == steps
        for key in ("train_loss", "val_loss"):
            assert res["train"][key] == pytest.approx(base["train"][key], rel=1e-5, abs=1e-6), (i, key)
        logged = [json.loads(line)["step"] for line in (d[i] / "metrics.jsonl").read_text().splitlines()]
        assert logged == list(range(1, steps + 1)), i  # each step exactly once, in order
    assert results(d[0])["continuations"]["preempted"] == 1 and results(d[0])["train"]["resumed_from_step"]
    assert results(d[1])["continuations"]["timeout"] >= 1 and results(d[1])["train"]["resumed_from_step"]
    assert "4 jobs, 4 ok" in out
    drain()


def test_a_job_preempted_in_its_grace_time_continues(slurm, tmp_path):
    """The `grace` partition (PreemptMode=REQUEUE, GraceTime=20): a job of the `urgent` partition that
    needs the whole node preempts the sweep's job. SLURM sends SIGTERM and keeps the job RUNNING for the
    grace time, with PreemptTime set and Restarts unchanged; a job that exits then ends COMPLETED and is
    never requeued. The job checkpoints, sees the preemption, requeues itself, and resumes once the
    urgent job is done: ok, each step once. (On main it ended `interrupted`: "not requeued: cancelled".)"""
    sweep = tmp_path / "sweep"
    proc = launch(tmp_path, sweep, "train.steps=300", "train.eval_every=0", "hydra.launcher.partition=grace")
    d, urgent = sweep / "0", None
    try:
        wait_until(lambda: rows(d) >= 20, 180, "the job to train", proc=proc)
        cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=30).stdout.split()[0]
        urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-c", cpus, "-o", "/dev/null", "--wrap",
                                 "sleep 2"], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        wait_until(lambda: attempts(d) == 1, 60, "the preemption to be recorded", proc=proc)
        out = finish(proc, tmp_path, 240)
    finally:
        cleanup(proc, sweep)
        if urgent:
            subprocess.run(["scancel", urgent], capture_output=True, timeout=30)
    assert proc.returncode == 0, out
    res = results(d)
    assert res["status"] == "ok" and res["train"]["steps"] == 300, res.get("error")
    assert res["continuations"]["preempted"] == 1 and res["train"]["resumed_from_step"], res["continuations"]
    (event,) = res["continuations"]["events"]
    assert event["why"].startswith("preempted in its grace time (PreemptTime=") and event["slurm_state"] == "RUNNING"
    logged = [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 301))
    drain()


def test_a_held_job_is_said_held_and_runs_once_released(slurm, tmp_path):
    """Job 1 waits behind job 0 (array_parallelism=1) and is held (`scontrol hold`, as an admin would).
    The launcher says it is held, with SLURM's reason, also in its progress line once job 0 has ended,
    and keeps waiting: once released it runs, and the sweep ends ok. (On main: "PENDING", no progress line.)"""
    sweep = tmp_path / "sweep"
    proc = launch(tmp_path, sweep, "seed=0,1", "train.steps=30", "hydra.launcher.array_parallelism=1",
                  "hydra.launcher.progress_min=0.05")
    log = tmp_path / "launcher.log"
    try:
        job1 = slurm_id(sweep, 1)
        scontrol("hold", job1)
        wait_until(lambda: results(sweep / "0").get("status") == "ok", 180, "job 0 to end", proc=proc)
        line = re.compile(rf"waiting for 1 of 2 jobs after .*: 1 held \({re.escape(job1)}: JobHeldAdmin\)")
        wait_until(lambda: line.search(log.read_text()), 60, "a progress line naming the held job", proc=proc)
        scontrol("release", job1)
        out = finish(proc, tmp_path, 240)
    finally:
        cleanup(proc, sweep)
    assert proc.returncode == 0, out
    assert f"job {job1}: held (JobHeldAdmin)" in out and results(sweep / "1")["status"] == "ok", out
    assert "2 jobs, 2 ok" in out
    drain()
