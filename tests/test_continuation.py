"""Continuing a SLURM job (sweep/continuation.py, job.py) and checkpoint safety, without a SLURM:
the SLURM environment variables and `scontrol` are faked. tests/test_slurm.py runs the real thing."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from attnbench.job import run_job
from attnbench.sweep import continuation
from attnbench.track.wandb_reader import find_run_files, read_run
from attnbench.train import checkpoint

BASE = ["logger=none", "device=cpu", "train.batch_size=4", "train.seq_len=32", "train.eval_every=0",
        "train.eval_batches=2", "train.warmup_steps=2", "data.n_pairs=4", "data.n_queries=4", "train.log_every=1"]
BENCH = ["bench=quick", "bench.memory=none", "bench.peak_flops=1e11", "bench.repeats=2", "bench.warmup=1",
         "bench.decode_tokens=3", "bench.seq_lens=[16]"]


def one_line(s: str) -> bool:
    return bool(s) and "\n" not in s and "Traceback" not in s


@pytest.fixture
def slurm_env(monkeypatch):
    """This process is attempt 0 of SLURM array task 7_1; scontrol answers from `sched`."""
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    sched = {"restarts": 0, "requeued": [], "requeue_error": None}
    monkeypatch.setattr(continuation, "scontrol_job",
                        lambda jid: {"JobState": "RUNNING", "Restarts": str(sched["restarts"])})

    def requeue(jid):
        sched["requeued"].append(jid)
        return sched["requeue_error"]

    monkeypatch.setattr(continuation, "requeue", requeue)
    return sched


def stop_at(monkeypatch, step: int, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to this process when the trainer logs `step` (as SLURM would)."""
    from attnbench.track import sinks

    orig = sinks.JsonlSink.log

    def log(self, metrics, s):
        orig(self, metrics, s)
        if s == step:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(sinks.JsonlSink, "log", log)


def steps_of(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_preempted_then_timed_out_job_resumes_to_the_uninterrupted_result(make_cfg, tmp_path, monkeypatch,
                                                                            slurm_env):
    """Attempt 0 is preempted (SLURM requeues it), attempt 1 reaches its time limit (the job requeues
    itself), attempt 2 finishes: same losses and steps as one uninterrupted run, each step once in
    metrics.jsonl and in one W&B run id, the bench rows of attempt 0 kept."""
    over = (*BASE, *BENCH, "stages=[bench,train]", "train.steps=12", "logger=wandb")
    ref = run_job(make_cfg(*over), tmp_path / "ref")
    run_dir, limits = tmp_path / "run", continuation.Limits()
    with monkeypatch.context() as m:
        stop_at(m, 4)
        slurm_env["restarts"] = 1  # `scontrol requeue`: SLURM has counted the restart already
        assert run_job(make_cfg(*over), run_dir)["status"] == "interrupted"
    assert continuation.after_attempt(run_dir, limits) == continuation.CONTINUE
    bench0 = json.loads((run_dir / "results.json").read_text())["bench"]
    assert bench0 and "preempted at step 4 (SIGTERM)" in json.loads((run_dir / "results.json").read_text())["error"]

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # attempt 1
    with monkeypatch.context() as m:
        stop_at(m, 9, signal.SIGUSR1)
        assert run_job(make_cfg(*over), run_dir)["status"] == "interrupted"
    assert continuation.after_attempt(run_dir, limits) == continuation.CONTINUE
    assert slurm_env["requeued"] == ["7_1"]  # the time limit: the job asked SLURM to run it again

    slurm_env["restarts"] = 2
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # attempt 2
    res = run_job(make_cfg(*over), run_dir)
    assert continuation.after_attempt(run_dir, limits) == continuation.FINISH
    assert res["status"] == "ok" and res["train"]["resumed_from_step"] == 9
    assert res["train"]["steps"] == ref["train"]["steps"] == 12
    assert res["train"]["train_loss"] == pytest.approx(ref["train"]["train_loss"], rel=1e-6)
    assert res["train"]["val_loss"] == pytest.approx(ref["train"]["val_loss"], rel=1e-6)
    assert res["bench"] == bench0  # not run again
    assert res["continuations"]["preempted"] == 1 and res["continuations"]["timeout"] == 1
    assert steps_of(run_dir) == list(range(1, 13))
    runs = [read_run(p) for p in find_run_files(run_dir)]
    assert len(runs) == 3 and len({r.run_id for r in runs}) == 1  # one W&B run, resumed twice
    logged = [h["_step"] for r in runs for h in r.history if "train_loss" in h]
    assert logged == list(range(1, 13))  # each step once, in order


def test_continuations_are_bounded(make_cfg, tmp_path, monkeypatch, slurm_env):
    """Past max_num_requeue the job ends `interrupted` with the reason and the count; if SLURM starts it
    again anyway, the attempt returns that result without training."""
    over = (*BASE, "stages=[train]", "train.steps=50")
    run_dir, limits = tmp_path / "run", continuation.Limits(max_num_requeue=1)
    for attempt, expected in ((0, continuation.CONTINUE), (1, continuation.FINISH)):
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(attempt))
        slurm_env["restarts"] = attempt + 1
        assert continuation.begin_attempt(run_dir) is None
        with monkeypatch.context() as m:
            stop_at(m, 3 + 3 * attempt)
            run_job(make_cfg(*over), run_dir)
        assert continuation.after_attempt(run_dir, limits) == expected
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "interrupted" and one_line(res["error"])
    assert "preempted (SIGTERM) 2 times, more than hydra.launcher.max_num_requeue=1 allows" in res["error"]
    assert res["continuations"]["preempted"] == 2 and res["train"]["steps"] == 6
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert continuation.begin_attempt(run_dir)["error"] == res["error"]


def test_failed_requeue_and_scancel_end_the_job(make_cfg, tmp_path, monkeypatch, slurm_env):
    over = (*BASE, "stages=[train]", "train.steps=50")
    slurm_env["requeue_error"] = "Requested operation is presently disabled"  # a job submitted --no-requeue
    with monkeypatch.context() as m:
        stop_at(m, 3, signal.SIGUSR1)
        run_job(make_cfg(*over), tmp_path / "a")
    assert continuation.after_attempt(tmp_path / "a", continuation.Limits()) == continuation.FINISH
    err = json.loads((tmp_path / "a" / "results.json").read_text())["error"]
    assert "scontrol requeue 7_1 failed (Requested operation is presently disabled)" in err and one_line(err)
    with monkeypatch.context() as m:  # scancel: SIGTERM, and SLURM does not count a restart
        stop_at(m, 3)
        run_job(make_cfg(*over), tmp_path / "b")
    assert continuation.after_attempt(tmp_path / "b", continuation.Limits()) == continuation.FINISH
    err = json.loads((tmp_path / "b" / "results.json").read_text())["error"]
    assert err.startswith("stopped by SLURM at step 3 (SIGTERM; job 7_1 not requeued")


def test_a_fresh_job_is_no_continuation(make_cfg, tmp_path, monkeypatch, slurm_env):
    """Another sweep into the same directory (other SLURM job ids) starts over: no resume, old record dropped."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / continuation.STATE_NAME).write_text(json.dumps({"slurm_job_id": "3_1", "events": [{"reason": "timeout"}]}))
    assert not continuation.is_continuation(run_dir)
    assert continuation.begin_attempt(run_dir) is None and not (run_dir / continuation.STATE_NAME).exists()
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID"):
        monkeypatch.delenv(var)
    assert not continuation.is_continuation(run_dir)  # off SLURM: never


def test_a_continued_job_refuses_another_configs_checkpoint(make_cfg, tmp_path, monkeypatch, slurm_env):
    run_dir = tmp_path / "run"
    assert run_job(make_cfg(*BASE, "stages=[train]", "train.steps=3"), run_dir)["status"] == "ok"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM restarted the job: it resumes by itself
    res = run_job(make_cfg(*BASE, "stages=[train]", "train.steps=3", "train.lr=3e-3"), run_dir)
    assert res["status"] == "failed" and one_line(res["error"])
    assert "was trained with another config: train.lr=0.001 (this job: 0.003); not resuming from it" in res["error"]
    monkeypatch.delenv("SLURM_RESTART_COUNT")  # the same refusal for train.resume=true
    res = run_job(make_cfg(*BASE, "stages=[train]", "train.steps=3", "train.lr=3e-3", "train.resume=true"),
                  tmp_path / "run")
    assert res["status"] == "failed" and "train.lr=0.001 (this job: 0.003)" in res["error"]


def test_a_new_launchs_job_restarted_before_its_first_checkpoint_starts_afresh(make_cfg, tmp_path, monkeypatch,
                                                                                slurm_env):
    """Issue 25 item 9: SLURM job 7_1 left an interrupted training (checkpoint at step 3). A new launch's
    job 8_1 into the same directory is stopped during its bench, before any checkpoint, and SLURM
    restarts it: it must train from step 0 (with this config or another), not resume 7_1's checkpoint
    nor refuse it as another config's."""
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        stop_at(m, 3)
        over = (*BASE, *BENCH, "stages=[bench,train]", "train.steps=8", "train.lr=1e-3")
        assert run_job(make_cfg(*over), run_dir)["status"] == "interrupted"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "8")
    for lr in ("1e-3", "3e-3"):  # the same config as 7_1's, and another one
        over = (*BASE, *BENCH, "stages=[bench,train]", "train.steps=8", f"train.lr={lr}")
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
        with monkeypatch.context() as m:  # attempt 0 of 8_1: SLURM's SIGTERM during the bench
            from attnbench.bench import suite

            real = suite.run_bench
            m.setattr(suite, "run_bench", lambda *a, **k: (os.kill(os.getpid(), signal.SIGTERM), real(*a, **k))[1])
            assert run_job(make_cfg(*over), run_dir)["status"] == "interrupted"
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM runs 8_1 again
        assert continuation.is_continuation(run_dir)
        res = run_job(make_cfg(*over), run_dir)
        assert res["status"] == "ok", res["error"]
        assert res["train"]["resumed_from_step"] is None and res["train"]["steps"] == 8
        assert steps_of(run_dir) == list(range(1, 9))
        assert checkpoint.read_checkpoint(run_dir / "checkpoint.pt").get("slurm_job_id") == "8_1"
        (run_dir / "results.json").unlink()  # the next round: 8_1's first attempt again, before its checkpoint
        torch.save({**checkpoint.read_checkpoint(run_dir / "checkpoint.pt"), "slurm_job_id": "7_1"},
                   run_dir / "checkpoint.pt")


# ----------------------------------------------------------------------------- checkpoint files
def test_checkpoint_from_a_newer_attnbench_is_one_line(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    over = (*BASE, "stages=[train]", "train.steps=3")
    assert run_job(make_cfg(*over), run_dir)["status"] == "ok"
    obj = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**obj, "format": checkpoint.FORMAT + 1}, run_dir / "checkpoint.pt")
    res = run_job(make_cfg(*over, "train.resume=true"), run_dir)
    assert res["status"] == "failed" and one_line(res["error"])
    assert f"checkpoint format {checkpoint.FORMAT + 1}, newer than this attnbench reads" in res["error"]


def test_checkpoint_is_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    """The file's data, then the directory entry: the order that survives a node crash."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint(path, model, opt, torch.amp.GradScaler("cpu", enabled=False), {"step": 1}, "h")
    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].endswith(".tmp") and events[2][1] == str(tmp_path)
    assert checkpoint.read_checkpoint(path)["counters"] == {"step": 1}


def test_summary_asks_slurm_about_a_job_without_a_final_result(monkeypatch, tmp_path):
    """`python -m attnbench.sweep` after the launcher died: a job SLURM still runs (or will rerun) stays
    `running`; one SLURM no longer has is `failed` with what SLURM said."""
    import shutil as _shutil

    from attnbench.report.runs import Run
    from attnbench.sweep import jobs, slurm_state

    answer = {"out": "5_1|PENDING\n"}
    monkeypatch.setattr(slurm_state, "_run", lambda cmd: (0, answer["out"]) if cmd[0] == "squeue" else (1, "off"))
    monkeypatch.setattr(_shutil, "which", lambda name: "/usr/bin/" + name)

    def row(res: dict) -> tuple:
        run = Run(dir=tmp_path, res=res, overrides=[])
        job = jobs.judge(None, tmp_path, (), run, None, None, jobs._ask([(None, tmp_path, (), run)], {}, None, None))
        return job.status, job.error

    res = {"status": "running", "error": None, "slurm_job_id": "5_1"}
    assert row(res) == ("running", "SLURM job 5_1 is PENDING: not ended yet")
    answer["out"] = "5_1|NODE_FAIL\n"
    assert row(res) == ("failed", "job ended with status running (SLURM job 5_1: NODE_FAIL)")
    answer["out"] = ""
    assert row(res)[0] == "failed"
    assert row({"status": "running"}) == ("failed", "job ended with status running")
    assert slurm_state.expand("12_[0-2,5]%4") == ["12_0", "12_1", "12_2", "12_5"]
    assert slurm_state.row_status("CANCELLED by 0") == "interrupted" and slurm_state.row_status("OUT_OF_MEMORY") == "oom"
