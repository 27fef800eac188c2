"""Issue 25 (items 1, 2, 5): every job of a launch is accounted for, from the launch's own record.

In process, with hand-made sweep directories: the launch record (launch.json with its job list and
launcher), job records and results.json as the launcher and the jobs write them; SLURM is a fake
`squeue` on PATH that prints the states a test gives it. The real launches (basic launcher killed,
re-launches, a killed launcher on the local SLURM) are in tests/test_sweeps.py and tests/test_slurm.py."""
from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from attnbench.errors import ConfigError
from attnbench.sweep import main
from attnbench.sweep.jobs import launch_jobs
from attnbench.track.launch import record_submitted, this_process, write_job_launch, write_sweep_launch

OVERRIDES = [["attn=mha", "seed=0"], ["attn=mha", "seed=1"], ["attn=gqa", "seed=0"], ["attn=gqa", "seed=1"]]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_sweep(tmp_path: Path, launcher: dict | None = None, slurm_ids: dict | None = None, lid: str = "L2") -> Path:
    """A 4-job launch `lid` as on_multirun_start records it, with a multirun.yaml for the resume command."""
    sweep = tmp_path / "sweep"
    sweep.mkdir(exist_ok=True)
    (sweep / "multirun.yaml").write_text(OmegaConf.to_yaml({"hydra": {"overrides": {
        "hydra": [], "task": ["attn=mha,gqa", "seed=0,1"]}}}))
    jobs = [{"num": n, "dir": str(n), "overrides": ov} for n, ov in enumerate(OVERRIDES)]
    write_sweep_launch(sweep, lid, jobs=jobs, launcher=launcher)
    if slurm_ids:
        record_submitted(sweep, lid, {int(k): v for k, v in slurm_ids.items()})
    return sweep


def job(sweep: Path, num: int, status: str = "ok", lid: str | None = "L2", started_by: str | None = "L2",
        config_hash: str = "h", resume: bool = False, record_hash: str | None = None, **extra) -> Path:
    """Job `num`'s files: results.json written by launch `lid` (None: no results.json) and the job record
    of the launch that last started it (`started_by`)."""
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in OVERRIDES[num]))
    if lid is not None:
        (d / "results.json").write_text(json.dumps({"status": status, "variant": "v", "launch_id": lid,
                                                    "config_hash": config_hash, "error": None, **extra}))
    if started_by:
        write_job_launch(d, started_by, config_hash=record_hash or config_hash, resume=resume)
    return d


@pytest.fixture
def squeue(tmp_path, monkeypatch):
    """A fake `squeue` on PATH printing the `%i|%T` lines of the dict the test fills ({id: state})."""
    bin_dir, answer = tmp_path / "bin", tmp_path / "squeue.out"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(answer)!r}).read())\n")
    (bin_dir / "squeue").chmod(0o755 | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    states: dict[str, str] = {}

    def set_states(**kw: str) -> None:
        states.clear()
        states.update({k.replace("x", "_"): v for k, v in kw.items()})
        answer.write_text("".join(f"{k}|{v}\n" for k, v in states.items()))
    set_states()
    return set_states


# ----------------------------------------------------------------------------- item 1: every job listed
def test_jobs_that_never_started_are_pending_while_the_launcher_runs_then_missing(tmp_path, capsys):
    """The basic launcher died after two jobs: the summary lists all four (today: "2 jobs, 2 ok", exit 0)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        from attnbench.track.launch import _start_ticks
        launcher = {"host": this_process()["host"], "pid": sleeper.pid, "start_ticks": _start_ticks(sleeper.pid)}
        sweep = make_sweep(tmp_path, launcher=launcher)
        job(sweep, 0)
        job(sweep, 1)
        assert main([str(sweep)]) == 3  # not ended: the launcher still runs
        out = capsys.readouterr().out
        assert "4 jobs, 2 ok, 2 NOT OK: 2 pending" in out and "resume=true" not in out
        assert "no resume command while 2 jobs are still pending or running" in out
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main([str(sweep)]) == 1
    out = capsys.readouterr().out
    assert "4 jobs, 2 ok, 2 NOT OK: 2 missing" in out and "resume=true" in out
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"], r["overrides"], r["started"]) for r in rows] == [
        ("0", "ok", "attn=mha seed=0", "True"), ("1", "ok", "attn=mha seed=1", "True"),
        ("2", "missing", "attn=gqa seed=0", "False"), ("3", "missing", "attn=gqa seed=1", "False")]
    assert rows[2]["error"] == f"never started: its launcher (pid {sleeper.pid} on {launcher['host']}) is gone"


def test_a_job_an_earlier_launch_left_is_not_this_launchs(tmp_path, capsys):
    """A listed job whose directory holds only an earlier launch's result never started in this launch."""
    sweep = make_sweep(tmp_path)
    job(sweep, 0)
    job(sweep, 1)
    job(sweep, 2, lid="L1", started_by="L1")  # ok, from launch L1: not this launch's
    job(sweep, 3, status="failed", lid="L1", started_by=None)
    launch = launch_jobs(sweep)
    assert [(j.num, j.status, j.started) for j in launch.jobs] == [
        (0, "ok", True), (1, "ok", True), (2, "missing", False), (3, "missing", False)]
    assert launch.jobs[2].error.endswith("; the directory holds launch L1's ok result")
    assert launch.final and not launch.busy


# ----------------------------------------------------------------------------- item 5: ok only when this launch's
def test_ok_counts_only_when_this_launch_wrote_it_or_its_job_reuses_it(tmp_path, capsys):
    """A job of the new launch killed before its first write_results leaves the old ok results.json: it
    is not `ok (reused)` with the old config's numbers (today it is)."""
    sweep = make_sweep(tmp_path)
    job(sweep, 0, lid="L1", config_hash="old", record_hash="new", resume=True)  # another config: killed early
    job(sweep, 1, lid="L1", config_hash="same", resume=True)  # resume=true, same config: reused
    job(sweep, 2, lid="L1", config_hash="same", resume=False)  # re-run without resume, killed early
    job(sweep, 3, lid="L2")
    assert main([str(sweep)]) == 1
    rows = read_csv(sweep / "summary.csv")
    assert [(r["status"], r["reused"]) for r in rows] == [
        ("failed", "False"), ("ok", "True"), ("failed", "False"), ("ok", "False")]
    assert rows[0]["error"].startswith("started by this launch, it ended before writing a result of its own; "
                                       "results.json is launch L1's (ok)")
    assert "ok (reused)" in (sweep / "summary.md").read_text()


# ----------------------------------------------------------------------------- SLURM: pending, running, missing
def test_slurm_states_make_jobs_pending_running_or_missing_and_hold_the_resume_command(tmp_path, squeue, capsys):
    sweep = make_sweep(tmp_path, slurm_ids={str(n): f"7_{n}" for n in range(4)})
    job(sweep, 0)
    job(sweep, 1, status="interrupted", slurm_job_id="7_1")  # preempted, waits for its own requeue
    job(sweep, 2, status="running", slurm_job_id="7_2")
    squeue(**{"7x0": "COMPLETED", "7x1": "REQUEUE_HOLD", "7x2": "RUNNING", "7x3": "PENDING"})
    assert main([str(sweep)]) == 3
    out = capsys.readouterr().out
    assert "resume=true" not in out and "no resume command while 3 jobs are still pending or running" in out
    rows = read_csv(sweep / "summary.csv")
    assert [(r["status"], r["final"], r["slurm_state"]) for r in rows] == [
        ("ok", "True", ""), ("held", "False", "held (REQUEUE_HOLD)"), ("running", "False", "RUNNING"),
        ("pending", "False", "PENDING")]
    assert rows[1]["error"].startswith("SLURM job 7_1 is ") and "REQUEUE_HOLD" in rows[1]["error"]
    assert "it runs again" in rows[1]["error"]
    squeue(**{"7x1": "CANCELLED", "7x2": "NODE_FAIL", "7x3": "CANCELLED"})
    assert main([str(sweep)]) == 1
    out = capsys.readouterr().out
    assert "4 jobs, 1 ok, 3 NOT OK: 1 interrupted, 1 failed, 1 missing" in out and "train.resume=true" in out
    rows = read_csv(sweep / "summary.csv")
    assert rows[2]["error"] == "job ended with status running (SLURM job 7_2: NODE_FAIL)"
    assert rows[3]["error"] == "never started: SLURM job 7_3 ended as CANCELLED"


def test_a_launch_into_a_directory_slurm_still_runs_is_refused(tmp_path, squeue, monkeypatch):
    from attnbench.sweep.precheck import check_sweep_overrides

    sweep = make_sweep(tmp_path, slurm_ids={"0": "7_0", "1": "7_1", "2": "7_2", "3": "7_3"})
    job(sweep, 0)
    job(sweep, 1, status="interrupted", slurm_job_id="7_1")
    squeue(**{"7x1": "PENDING", "7x3": "PENDING"})
    args = ["attn=mha,gqa", "seed=0,1", "stages=[]", f"hydra.sweep.dir={sweep}"]
    before = (sweep / "launch.json").read_text() + (sweep / "launch_jobs.json").read_text()
    with pytest.raises(ConfigError) as err:
        check_sweep_overrides(args)
    assert str(err.value) == (
        f"hydra.sweep.dir={sweep}: 2 jobs of an earlier launch into it are still running or queued "
        "(job 1 (SLURM 7_1 PENDING), job 3 (SLURM 7_3 PENDING)); a second launch would write into the same job "
        f"directories: wait until `python -m attnbench.sweep {sweep}` says they ended, or scancel them, then "
        "launch again (nothing was submitted)")
    assert (sweep / "launch.json").read_text() + (sweep / "launch_jobs.json").read_text() == before
    squeue(**{"7x1": "CANCELLED", "7x3": "CANCELLED"})
    assert check_sweep_overrides(args) == 4
    assert check_sweep_overrides(["attn=mha", f"hydra.sweep.dir={tmp_path / 'new'}"]) == 1


# ----------------------------------------------------------------------------- the SLURM launcher's own record
def test_record_slurm_end_writes_this_launchs_record_in_a_relaunched_directory(tmp_path):
    """A job SLURM cancels before it starts, in a directory an earlier launch left (its overrides.yaml
    and ok result there): today it keeps the old launch id and returns the old `ok`."""
    from attnbench import load_config
    from attnbench.sweep.slurm_launcher import record_slurm_end

    cfg = load_config(["stages=[]", "logger=none", "attn=gqa"])
    lid = cfg.launch_id  # the launch's cached id, as the launcher's job configs carry it
    sweep = make_sweep(tmp_path, lid=lid)
    d = job(sweep, 2, lid="L1", started_by="L1", config_hash="old")
    assert record_slurm_end(d, cfg, ["attn=gqa", "seed=0"], "9_2", "CANCELLED") == "interrupted"
    res = json.loads((d / "results.json").read_text())
    assert res["launch_id"] == lid and res["status"] == "interrupted" and "before that" not in res["error"]
    assert json.loads((d / ".hydra" / "launch.json").read_text())["launch_id"] == lid
    assert json.loads((d / "results.1.json").read_text())["launch_id"] == "L1"  # the old result is kept
    assert [(j.status, j.started) for j in launch_jobs(sweep).jobs][2] == ("interrupted", True)


# ----------------------------------------------------------------------------- real launches (subprocess)
TINY = ["stages=[]", "logger=none", "device=cpu", "device.threads=1"]
# The basic launcher runs the jobs in its own process: this app SIGKILLs that process after its second
# job (DIE_AFTER=2), or as the first job starts, after Hydra and the callback recorded it (DIE_AFTER=0).
DYING_LAUNCHER = """
import os, signal, sys
import attnbench.cli as cli
real, done = cli.run_job, []
def run_job(cfg, run_dir):
    if os.environ["DIE_AFTER"] == "0":
        os.kill(os.getpid(), signal.SIGKILL)
    done.append(real(cfg, run_dir))
    if int(os.environ["DIE_AFTER"]) == len(done):
        os.kill(os.getpid(), signal.SIGKILL)
    return done[-1]
cli.run_job = run_job
from attnbench.__main__ import main
sys.argv[0] = "attnbench"
main()
"""


def launch_dying(tmp_path: Path, die_after: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DYING_LAUNCHER, "-m", *args, *TINY], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env={**os.environ, "DIE_AFTER": str(die_after)})


def summarize(sweep: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench.sweep", str(sweep)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_basic_launcher_killed_after_two_of_four_jobs(tmp_path, cli):
    """Issue 25 item 1, as reported: the summary said "2 jobs, 2 ok" and exited 0."""
    import shlex

    sweep = tmp_path / "sweep"
    r = launch_dying(tmp_path, 2, "attn=mha,gqa", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == -9, r.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    s = summarize(sweep)
    assert s.returncode == 1, s.stdout + s.stderr
    assert "4 jobs, 2 ok, 2 NOT OK: 2 missing" in s.stdout
    assert [(x["job"], x["status"]) for x in read_csv(sweep / "summary.csv")] == [
        ("0", "ok"), ("1", "ok"), ("2", "missing"), ("3", "missing")]
    (cmd,) = [line.strip() for line in s.stdout.splitlines() if line.strip().startswith("python -m attnbench -m")]
    r = cli(*shlex.split(cmd)[3:])  # the printed resume command runs the two missing jobs
    assert r.returncode == 0 and "4 jobs, 4 ok (2 reused)" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_a_relaunched_job_killed_before_its_first_result_is_not_the_old_ok(tmp_path, cli):
    """Issue 25 item 5: a job of a new launch (another config) killed before its first write_results
    left the old ok results.json, and the summary showed `ok (reused)` with the old config's numbers."""
    sweep = tmp_path / "sweep"
    r = cli("-m", "attn=mha,gqa", *TINY, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    r = launch_dying(tmp_path, 0, "attn=mha,gqa", "attn.n_heads=2", "resume=true", f"hydra.sweep.dir={sweep}")
    assert r.returncode == -9, r.stderr[-2000:]
    s = summarize(sweep)
    assert s.returncode == 1 and "(reused)" not in s.stdout, s.stdout
    rows = read_csv(sweep / "summary.csv")
    assert [(x["status"], x["reused"], x["params"]) for x in rows] == [("failed", "False", ""), ("missing", "False", "")]
    assert "started by this launch, it ended before writing a result of its own" in rows[0]["error"]


def test_job_directories_follow_a_custom_sweep_subdir():
    """launch.json names each job's directory as Hydra resolves hydra.sweep.subdir for it."""
    from attnbench.sweep.plan import _subdirs

    cfg = OmegaConf.create({"hydra": {"sweep": {"subdir": "${hydra.job.override_dirname}_${hydra.job.num}"}, "job": {
        "num": 0, "override_dirname": "", "config": {"override_dirname": {
            "kv_sep": "=", "item_sep": ",", "exclude_keys": ["seed"]}}}}})
    assert _subdirs(cfg, [["attn=mha", "seed=0"], ["attn=gqa", "seed=1"]]) == ["attn=mha_0", "attn=gqa_1"]


def test_a_relaunched_job_still_queued_is_pending_not_the_old_ok(tmp_path, squeue):
    sweep = make_sweep(tmp_path, slurm_ids={"0": "8_0", "1": "8_1", "2": "8_2", "3": "8_3"})
    for n in range(4):
        job(sweep, n, lid="L1", started_by="L1")  # the earlier launch's ok results
    job(sweep, 0)
    squeue(**{"8x0": "COMPLETED", "8x1": "PENDING", "8x2": "RUNNING", "8x3": "PENDING"})
    launch = launch_jobs(sweep)
    assert [j.status for j in launch.jobs] == ["ok", "pending", "running", "pending"]
    assert launch.jobs[1].error == "SLURM job 8_1 is PENDING: not started yet; the directory holds launch L1's ok result"
    assert launch.jobs[2].error.startswith("SLURM job 8_2 is RUNNING: starting, not recorded yet")
