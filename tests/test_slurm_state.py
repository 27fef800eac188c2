"""What the SLURM launcher and a SLURM job read from SLURM (sweep/slurm_state.py, sweep/slurm_wait.py,
sweep/continuation.py), without a SLURM: `scontrol` and `squeue` are small scripts on PATH that answer
with outputs recorded on SLURM 22.05 (benchmarks/slurm/local_cluster.sh, `grace` and `urgent`
partitions). tests/test_slurm.py does the same things to a real SLURM."""
from __future__ import annotations

import json
import logging
import os
import re
import stat
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from attnbench.errors import ConfigError
from attnbench.sweep import continuation, slurm_state
from attnbench.sweep.slurm_launcher import record_slurm_end

_COMMON = ("UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) "
           "Dependency=(null) Requeue=1 BatchFlag=1 Reboot=0")
_TAIL = ("Scheduler=Backfill AllocNode:Sid=localhost:2654 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm "
         "BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 TRES=cpu=1,mem=12052M,node=1,billing=1 Power= ")
# `scontrol show job -o` as a job's SIGTERM handler saw it (the middle of each line shortened to _COMMON/_TAIL).
SHOW = {
    # Preempted by a job of the `urgent` partition: RUNNING during GraceTime=20, PreemptTime set, EndTime = +20 s.
    "grace": f"JobId=26 ArrayJobId=26 ArrayTaskId=3 JobName=g.sh {_COMMON} JobState=RUNNING Reason=None Restarts=0 "
             "ExitCode=0:0 RunTime=00:00:04 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-12-07T23:51:15 "
             "EligibleTime=2026-12-07T23:51:17 AccrueTime=Unknown StartTime=2026-12-07T23:51:17 "
             "EndTime=2026-12-07T23:51:41 Deadline=N/A PreemptEligibleTime=2026-12-07T23:51:17 "
             f"PreemptTime=2026-12-07T23:51:21 SuspendTime=None SecsPreSuspend=0 Partition=grace {_TAIL}",
    # The same job a moment before: nothing preempts it.
    "running": f"JobId=26 ArrayJobId=26 ArrayTaskId=3 JobName=g.sh {_COMMON} JobState=RUNNING Reason=None Restarts=0 "
               "ExitCode=0:0 RunTime=00:00:02 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-12-07T23:51:15 "
               "EligibleTime=2026-12-07T23:51:17 AccrueTime=Unknown StartTime=2026-12-07T23:51:17 "
               "EndTime=2027-12-07T23:51:17 Deadline=N/A PreemptEligibleTime=2026-12-07T23:51:17 "
               f"PreemptTime=None SuspendTime=None SecsPreSuspend=0 Partition=grace {_TAIL}",
    # `scancel`: COMPLETING, EndTime = now (earlier than the time limit too, but not RUNNING).
    "scancel": f"JobId=23 JobName=tj_cancel.sh {_COMMON} JobState=COMPLETING Reason=None Restarts=0 ExitCode=0:15 "
               "RunTime=00:00:03 TimeLimit=365-00:00:00 TimeMin=N/A SubmitTime=2026-12-07T23:45:30 "
               "EligibleTime=2026-12-07T23:45:30 AccrueTime=2026-12-07T23:45:30 StartTime=2026-12-07T23:45:31 "
               f"EndTime=2026-12-07T23:45:34 Deadline=N/A SuspendTime=None SecsPreSuspend=0 Partition=debug {_TAIL}",
    # `scontrol requeue` by an admin: Restarts has moved.
    "requeue": f"JobId=24 JobName=tj_requeue.sh {_COMMON} JobState=COMPLETING Reason=None Restarts=1 ExitCode=0:0 "
               "RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A SubmitTime=2026-12-07T23:45:37 "
               "EligibleTime=2026-12-07T23:45:37 AccrueTime=2026-12-07T23:45:37 StartTime=2026-12-07T23:45:39 "
               f"EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 Partition=debug {_TAIL}",
    # The hard time limit (the SIGTERM after an ignored pre-timeout signal).
    "timelimit": f"JobId=22 JobName=tj_timelimit.sh {_COMMON} JobState=COMPLETING Reason=TimeLimit Restarts=0 "
                 "ExitCode=0:15 RunTime=00:01:28 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-12-07T23:45:30 "
                 "EligibleTime=2026-12-07T23:45:30 AccrueTime=2026-12-07T23:45:30 StartTime=2026-12-07T23:45:31 "
                 f"EndTime=2026-12-07T23:46:59 Deadline=N/A SuspendTime=None SecsPreSuspend=0 Partition=debug {_TAIL}",
}
# A partition without preemption prints no PreemptTime: the grace time shows only in the early EndTime.
SHOW["grace_end_only"] = SHOW["grace"].replace("PreemptTime=2026-12-07T23:51:21 ", "")
DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"

FAKE = '''
"""Fake {name}: answers with $FAKE_SLURM/{name}.out (stdout, or stderr with a non-zero {name}.rc); logs its args."""
import os, sys
from pathlib import Path
d = Path(os.environ["FAKE_SLURM"])
with open(d / "calls.txt", "a") as f:
    f.write("{name} " + " ".join(sys.argv[1:]) + "\\n")
key = "{name}_" + sys.argv[1] if "{name}" == "scontrol" else "{name}"
rc = int((d / (key + ".rc")).read_text()) if (d / (key + ".rc")).is_file() else 0
out = (d / (key + ".out")).read_text() if (d / (key + ".out")).is_file() else ""
(sys.stdout if rc == 0 else sys.stderr).write(out)
sys.exit(rc)
'''


class FakeSlurm:
    def __init__(self, root: Path) -> None:
        self.root = root

    def answer(self, key: str, out: str, rc: int = 0) -> None:
        """key: squeue, sacct, scontrol_show, scontrol_requeue."""
        (self.root / f"{key}.out").write_text(out + "\n")
        (self.root / f"{key}.rc").write_text(str(rc))

    def calls(self) -> list[str]:
        path = self.root / "calls.txt"
        return path.read_text().splitlines() if path.is_file() else []


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSlurm:
    bin_dir, state = tmp_path / "bin", tmp_path / "fake_slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("scontrol", "squeue", "sacct"):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n" + FAKE.replace("{name}", name))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    fake = FakeSlurm(state)
    fake.answer("sacct", "Slurm accounting storage is disabled", rc=1)
    return fake


# ----------------------------------------------------------------------------- the job's side
@pytest.mark.parametrize("seen, signal, rc, kind, requeue_self", [
    ("grace", "SIGTERM", 0, "preempted", True),  # in GraceTime: SLURM would not requeue a job that exits
    ("grace_end_only", "SIGTERM", 0, "preempted", True),
    ("requeue", "SIGTERM", 0, "preempted", False),  # SLURM has requeued it already
    ("scancel", "SIGTERM", 0, None, False),
    ("timelimit", "SIGTERM", 0, None, False),
    ("running", "SIGTERM", 0, None, False),  # `scancel --signal=TERM`: a signal, not a preemption
    ("running", "SIGUSR1", 0, "timeout", True),
    ("down", "SIGTERM", 1, "preempted", True),  # scontrol failed: the SIGTERM cannot be classified
    ("down", "SIGUSR1", 1, "timeout", True),
])
def test_classify_reads_scontrol_as_slurm_writes_it(fake, monkeypatch, seen, signal, rc, kind, requeue_self):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    fake.answer("scontrol_show", SHOW.get(seen, DOWN), rc=rc)
    stop = continuation.classify(signal, "26_3")
    assert (stop.kind, stop.requeue_self) == (kind, requeue_self), stop
    assert stop.state == ("UNKNOWN" if seen == "down" else SHOW[seen].split("JobState=")[1].split()[0])
    assert fake.calls() == ["scontrol show job -o 26_3"]
    if seen == "grace":
        assert "PreemptTime=2026-12-07T23:51:21" in stop.why
    if seen == "grace_end_only":
        assert "EndTime=2026-12-07T23:51:41, before StartTime+TimeLimit=2027-12-07T23:51:17" in stop.why


def _interrupted_attempt(run_dir: Path, monkeypatch) -> None:
    """Attempt 0 of SLURM array task 26_3 stopped by SIGTERM at step 5 (what train/loop.py leaves)."""
    monkeypatch.setenv("SLURM_JOB_ID", "26")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "26")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({
        "schema": 1, "status": "interrupted", "error": "stopped by SIGTERM at step 5", "slurm_job_id": "26_3",
        "train": {"steps": 5, "stopped_by": "SIGTERM"}}))


def test_a_job_preempted_in_its_grace_time_requeues_itself(fake, tmp_path, monkeypatch):
    """Preempted with GraceTime, SLURM leaves the job RUNNING (Restarts unchanged) and would requeue it
    only after the grace time; a job that exits first ends COMPLETED. So the job requeues itself and
    continues; on main it ended `not requeued: cancelled`."""
    run_dir = tmp_path / "run"
    _interrupted_attempt(run_dir, monkeypatch)
    fake.answer("scontrol_show", SHOW["grace"])
    fake.answer("scontrol_requeue", "")
    assert continuation.after_attempt(run_dir, continuation.Limits()) == continuation.CONTINUE
    assert "scontrol requeue 26_3" in fake.calls()
    res = json.loads((run_dir / "results.json").read_text())
    assert res["continuations"]["preempted"] == 1, res
    assert "preempted in its grace time (PreemptTime=" in res["continuations"]["events"][0]["why"]


def test_an_unclassifiable_sigterm_requeues_and_a_failed_requeue_ends_the_job(fake, tmp_path, monkeypatch):
    """scontrol show job fails: the SIGTERM is taken as a preemption and the job requeues itself; when
    that fails too, the job ends `interrupted` with one line naming both."""
    run_dir = tmp_path / "run"
    _interrupted_attempt(run_dir, monkeypatch)
    fake.answer("scontrol_show", DOWN, rc=1)
    fake.answer("scontrol_requeue", DOWN, rc=1)
    assert continuation.after_attempt(run_dir, continuation.Limits()) == continuation.FINISH
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "interrupted"
    assert res["error"] == ("preempted at step 5 (scontrol show job failed, so the SIGTERM is taken as a "
                            f"preemption): scontrol requeue 26_3 failed ({DOWN}); re-run the sweep with the "
                            "command below to continue from the checkpoint"), res["error"]


# ----------------------------------------------------------------------------- held jobs
def _unfinished_row(run_dir, res: dict) -> dict:
    """The summary's status and error of a job (sweep/jobs.py) whose results.json has no final status."""
    from attnbench.report.runs import Run
    from attnbench.sweep import jobs

    run = Run(dir=run_dir, res=res, overrides=[])
    ask = jobs._ask([(None, run_dir, (), run)], {}, None, None)
    job = jobs.judge(None, run_dir, (), run, None, None, ask)
    return {"status": job.status, "error": job.error}


@pytest.mark.parametrize("line, status, reason", [
    ("14|PENDING|JobHeldUser", "held", "JobHeldUser"),  # sbatch --hold, scontrol uhold
    ("15|PENDING|JobHeldAdmin", "held", "JobHeldAdmin"),  # scontrol hold (as root)
    ("17|PENDING|job requeued in held state", "held", "job requeued in held state"),  # scontrol requeuehold
    ("18|SPECIAL_EXIT|job requeued in held state", "held", "job requeued in held state"),  # ... State=SpecialExit
    ("15|PENDING|None", "running", None),  # released
    ("15|PENDING|BeginTime", "running", None),  # requeued: waits for its credential to expire
])
def test_a_held_job_is_reported_held_with_slurms_reason(fake, tmp_path, line, status, reason):
    """`python -m attnbench.sweep` on a job without a final result: a held job is `held`, with squeue's
    %r, not `running` (it never runs by itself). Recorded squeue -o '%i|%T|%r' lines."""
    job_id = line.split("|")[0]
    fake.answer("squeue", line)
    row = _unfinished_row(tmp_path, {"status": "running", "slurm_job_id": job_id})
    assert row["status"] == status, row
    if reason:
        assert row["error"] == (f"SLURM job {job_id} is held ({reason}): it runs once released "
                                f"(`scontrol release {job_id}`), or `scancel {job_id}` it")
    assert "squeue -h -t all -o %i|%T|%r -j " + job_id in fake.calls()


def test_a_held_array_is_expanded():
    states = slurm_state._parse("21_[0-2]|PENDING|JobHeldUser\n26_3|RUNNING|None\n")
    assert [s.held for s in states.values()] == [True, True, True, False]
    assert states["21_1"].label == "held (JobHeldUser)" and states["26_3"].label == "RUNNING"


# ----------------------------------------------------------------------------- the launcher's wait
def _job(tmp_path: Path, job_id: str) -> SimpleNamespace:
    return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(result_pickle=tmp_path / f"{job_id}_result.pkl"))


def bounds(**values):
    from attnbench.sweep.slurm_wait import WaitBounds  # (imported here: the other tests also run on main)

    return WaitBounds(**values)


def _wait(jobs, bounds, run_dirs: dict, sweep_dir: Path):
    """wait_for_jobs in a thread that must end within 60 s (a wait that never ends fails the test)."""
    from attnbench.sweep.slurm_wait import wait_for_jobs

    out = {}
    thread = threading.Thread(target=lambda: out.update(w=wait_for_jobs(jobs, bounds, run_dirs.__getitem__, sweep_dir)),
                              daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the wait did not end"
    return out["w"]


def test_the_wait_is_bounded_and_says_where_it_stands(fake, tmp_path, caplog):
    """A held job is waited for (a release would run it), said held with SLURM's reason in the state
    line and in the periodic progress line, until max_wait_h: then one line names what is left."""
    caplog.set_level(logging.INFO, logger="attnbench.sweep.slurm_wait")
    fake.answer("squeue", "5_0|PENDING|JobHeldAdmin\n5_1|RUNNING|None")
    waited = _wait([_job(tmp_path, "5_0"), _job(tmp_path, "5_1")],
                   bounds(poll_s=0.05, max_wait_h=1 / 3600, progress_min=0.2 / 60), {}, tmp_path / "sweep")
    assert waited.ended == {} and set(waited.unfinished) == {"5_0", "5_1"} and waited.unfinished["5_0"].held
    assert waited.stopped == (f"stopped waiting after 1 s (hydra.launcher.max_wait_h={1 / 3600}); 2 jobs not ended "
                              "(5_0 held (JobHeldAdmin), 5_1 RUNNING); SLURM keeps them: `python -m attnbench.sweep "
                              f"{tmp_path / 'sweep'}` summarises them later")
    text = caplog.text
    assert "job 5_0: held (JobHeldAdmin)" in text and "job 5_1: RUNNING" in text
    assert "waiting for 2 of 2 jobs after 0 s (max_wait_h=" in text
    assert "): 1 RUNNING, 1 held (5_0: JobHeldAdmin)" in text
    assert waited.stopped in text


def test_the_wait_ends_when_squeue_fails_for_good(fake, tmp_path):
    """A failing squeue (slurmctld busy) is waited out, but not forever: squeue_fail_min."""
    fake.answer("squeue", DOWN, rc=1)
    waited = _wait([_job(tmp_path, "5_0")], bounds(poll_s=0.05, squeue_fail_min=0.5 / 60, max_wait_h=None), {},
                   tmp_path)
    assert re.fullmatch(rf"stopped waiting: squeue has failed for \d s \(hydra.launcher.squeue_fail_min="
                        rf"{0.5 / 60}\): {re.escape(DOWN)}; 1 job not ended \(5_0 state unknown\); SLURM keeps "
                        r"them: `python -m attnbench.sweep .*` summarises them later", waited.stopped), waited.stopped
    assert waited.ended == {} and list(waited.unfinished) == ["5_0"]


def _results(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({"schema": 1, "error": None, **fields}))


def test_a_completed_job_keeps_its_own_final_status(fake, tmp_path):
    """SLURM says COMPLETED before the job's files are visible (NFS caches directory entries 30-60 s):
    the job's own final status (diverged, interrupted, ...) ends its wait as soon as it shows, and
    stands; on main it became `failed` after 15 s. A results.json of another job id (an earlier launch)
    is not its own: that job waits its end_grace_s, then gets SLURM's state."""
    fake.answer("squeue", "7_0|COMPLETED|None\n7_1|COMPLETED|None\n7_2|COMPLETED|None")
    dirs = {j: tmp_path / j for j in ("7_0", "7_1", "7_2")}
    _results(dirs["7_1"], status="diverged", slurm_job_id="6_1")  # an earlier launch's
    threading.Timer(0.5, _results, (dirs["7_0"],), {"status": "diverged", "slurm_job_id": "7_0",
                                                    "error": "loss is nan at step 3"}).start()
    # end_grace_s=3600: only its own results.json (written 0.5 s later) can end 7_0's wait in time.
    waited = _wait([_job(tmp_path, "7_0")], bounds(poll_s=0.05, end_grace_s=3600), dirs, tmp_path)
    assert waited.ended == {"7_0": "COMPLETED"} and waited.stopped is None
    foreign = _wait([_job(tmp_path, "7_1")], bounds(poll_s=0.05, end_grace_s=3600, max_wait_h=1 / 3600), dirs,
                    tmp_path)
    assert foreign.ended == {} and list(foreign.unfinished) == ["7_1"]  # an earlier launch's result ends nothing
    late = _wait([_job(tmp_path, j) for j in ("7_1", "7_2")], bounds(poll_s=0.05, end_grace_s=0.3), dirs, tmp_path)
    assert late.ended == {"7_1": "COMPLETED", "7_2": "COMPLETED"}
    config = OmegaConf.create({})
    assert record_slurm_end(dirs["7_0"], config, ["seed=0"], "7_0", "COMPLETED") == "diverged"
    assert json.loads((dirs["7_0"] / "results.json").read_text())["error"] == "loss is nan at step 3"
    assert record_slurm_end(dirs["7_2"], config, ["seed=2"], "7_2", "COMPLETED") == "failed"


def test_a_job_that_continues_is_not_ended_by_a_passing_state(fake, tmp_path):
    """`interrupted` after a continuation (continuations.json, below its bound) may be waiting for SLURM
    to run it again: only end_grace_s ends its wait; at its bound (`final`) its status ends it at once."""
    fake.answer("squeue", "9_0|COMPLETED|None")
    run_dir = tmp_path / "9_0"
    _results(run_dir, status="interrupted", slurm_job_id="9_0")
    record = {"slurm_job_id": "9_0", "events": [{"reason": "preempted", "step": 4}]}
    (run_dir / "continuations.json").write_text(json.dumps(record))
    dirs = {"9_0": run_dir}
    waiting = _wait([_job(tmp_path, "9_0")], bounds(poll_s=0.05, end_grace_s=3600, max_wait_h=1 / 3600), dirs, tmp_path)
    assert waiting.ended == {} and list(waiting.unfinished) == ["9_0"]
    (run_dir / "continuations.json").write_text(json.dumps({**record, "final": True}))
    ended = _wait([_job(tmp_path, "9_0")], bounds(poll_s=0.05, end_grace_s=3600), dirs, tmp_path)
    assert ended.ended == {"9_0": "COMPLETED"}


def test_an_interrupted_job_keeps_its_status_and_the_resume_flag(tmp_path):
    """A job that checkpointed and ended `interrupted` (scancel), whose result pickle the launcher does
    not see: its row stays `interrupted`, so the resume command keeps train.resume=true."""
    from attnbench.sweep.callback import resume_command

    run_dir = tmp_path / "0"
    _results(run_dir, status="interrupted", slurm_job_id="8_0", error="stopped by SLURM at step 40 (SIGTERM; ...)")
    assert record_slurm_end(run_dir, OmegaConf.create({}), ["seed=0"], "8_0", "COMPLETED") == "interrupted"
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    launching = OmegaConf.create({"hydra": {"overrides": {"hydra": ["hydra/launcher=slurm_gpu"], "task": ["seed=0"]}}})
    assert "train.resume=true" in resume_command(launching, tmp_path, [{"status": "interrupted"}])


@pytest.mark.parametrize("key, value, allowed", [
    ("poll_s", 0, "a number > 0"), ("end_grace_s", -1, "a number >= 0"), ("squeue_fail_min", None, "a number > 0"),
    ("max_wait_h", -2, "a number > 0, or null for no bound"), ("progress_min", "soon", "a number"),
])
def test_bad_wait_bounds_are_one_line(key, value, allowed):
    from attnbench.sweep.slurm_wait import WaitBounds

    with pytest.raises(ConfigError) as exc:
        WaitBounds.check_launcher({"max_wait_h": 72, key: value})
    shown = f"{value!r}" if isinstance(value, str) else (value if value is None else float(value))
    assert str(exc.value) == f"hydra.launcher.{key}={shown}: must be {allowed}"
    WaitBounds.check_launcher({"max_wait_h": None})  # no bound is allowed
    WaitBounds.check_launcher({"n_jobs": 2})  # another launcher's config: nothing to check


def test_a_sweep_with_a_bad_wait_bound_is_refused_before_launch():
    """The bounds are checked with the sweep (sweep/precheck.py), before anything is submitted."""
    from attnbench.sweep.precheck import check_sweep_overrides

    slurm = ["hydra/launcher=slurm_gpu", "logger=none", "stages=[bench]", "attn=mha,gqa"]
    refused = r"^hydra.launcher.max_wait_h=-1.0: must be a number > 0, or null for no bound$"
    with pytest.raises(ConfigError, match=refused):
        check_sweep_overrides([*slurm, "hydra.launcher.max_wait_h=-1"])
    assert check_sweep_overrides([*slurm, "hydra.launcher.max_wait_h=null", "hydra.launcher.end_grace_s=0"]) == 2
