"""Resuming a training (issue 25, items 10, 11 and 14): which config changes a checkpoint accepts,
train.steps growth and the re-derived schedule, signals during the final evaluation and after the job,
a finished run kept whole when a new one starts in its directory, and checkpoint temp files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attnbench.config import conf_dir
from attnbench.job import run_job
from attnbench.sweep import continuation
from attnbench.train import checkpoint, loop
from attnbench.train.interrupt import RaiseOnStop, StopRequested
from attnbench.train.schedule import lr_at
from test_continuation import slurm_env, stop_at  # noqa: F401 (slurm_env: a fixture, SLURM task 7_1, scontrol faked)

BASE = ["stages=[train]", "logger=none", "device=cpu", "train.batch_size=4", "train.seq_len=32",
        "train.eval_every=0", "train.eval_batches=2", "train.warmup_steps=2", "data.n_pairs=4", "data.n_queries=4",
        "train.log_every=1"]


def one_line(s: str) -> bool:
    return bool(s) and "\n" not in s and "Traceback" not in s


def metrics(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


# ----------------------------------------------------------------------------- item 11: what a resume compares
def test_changes_that_alter_nothing_trained_resume(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    assert run_job(make_cfg(*BASE, "train.steps=6"), run_dir)["status"] == "ok"
    untrained = ("train.eval_every=2", "train.log_every=2", "train.checkpoint_every=3", "train.eval_batches=3",
                 "train.sample_tokens=7", "train.eval_seq_lens=[64]", "device.threads=1", "bench=quick")
    res = run_job(make_cfg(*BASE, *untrained, "train.steps=6", "train.resume=true"), run_dir)
    assert res["status"] == "ok", res["error"]
    assert res["train"]["resumed_from_step"] == 6 and res["train"]["steps"] == 6
    from attnbench.train.resume_rules import trained_config

    keys = trained_config(make_cfg(*BASE, "logger=wandb"))
    assert "train.lr" in keys and "device.dtype" in keys and "seed" in keys and "attn.n_heads" in keys
    assert not any(k.startswith(("logger.", "bench.", "train.eval", "train.log", "hydra")) for k in keys)


def test_a_refusal_names_each_differing_key_with_both_values(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    assert run_job(make_cfg(*BASE, "train.steps=4"), run_dir)["status"] == "ok"
    res = run_job(make_cfg(*BASE, "train.steps=4", "train.lr=3e-3", "model.d_model=32", "train.resume=true"), run_dir)
    assert res["status"] == "failed" and one_line(res["error"])
    assert "was trained with another config: model.d_model=64 (this job: 32), train.lr=0.001 (this job: 0.003); " \
           "not resuming from it" in res["error"]
    res = run_job(make_cfg(*BASE, "train.steps=2", "train.resume=true"), run_dir)  # below the saved step
    assert res["status"] == "failed" and one_line(res["error"])
    assert "train.steps=2 is below the step 4 that" in res["error"] and "use train.steps>=4" in res["error"]


def test_train_steps_may_grow_and_the_schedule_is_rederived(make_cfg, tmp_path, monkeypatch):
    """Interrupted at step 5 of 10, resumed with train.steps=20: the rate is continuous at step 5 and
    decays (cosine) to lr·min_lr_ratio at step 20; a finished run extended again keeps its minimum."""
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        stop_at(m, 5)
        assert run_job(make_cfg(*BASE, "train.steps=10"), run_dir)["status"] == "interrupted"
    res = run_job(make_cfg(*BASE, "train.steps=20", "train.resume=true"), run_dir)
    assert res["status"] == "ok" and res["train"]["resumed_from_step"] == 5 and res["train"]["steps"] == 20
    cfg10, cfg20 = make_cfg(*BASE, "train.steps=10"), make_cfg(*BASE, "train.steps=20")
    lrs = {r["step"]: r["lr"] for r in metrics(run_dir)}  # the rate of update s-1, logged at step s
    assert res["train"]["lr_anchor"] == [5, pytest.approx(lr_at(5, cfg10.train))]
    assert lrs[6] == pytest.approx(lr_at(5, cfg10.train))  # continuous where the schedule changed
    assert lrs[6] > lrs[20]
    assert all(lrs[s] >= lrs[s + 1] for s in range(6, 20))
    assert lrs[20] == pytest.approx(lr_at(19, cfg20.train, [5, lr_at(5, cfg10.train)]))
    assert lr_at(20, cfg20.train, res["train"]["lr_anchor"]) == pytest.approx(1e-3 * 0.1)
    res = run_job(make_cfg(*BASE, "train.steps=24", "train.resume=true"), run_dir)  # a finished run, extended
    assert res["status"] == "ok" and res["train"]["resumed_from_step"] == 20
    assert [r["lr"] for r in metrics(run_dir) if r["step"] > 20] == pytest.approx([1e-4] * 4)


# ----------------------------------------------------------------------------- item 10: signal timing
def test_a_signal_during_the_final_evaluation_is_honoured_and_loses_nothing(make_cfg, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    over = (*BASE, "train.steps=6", "train.eval_seq_lens=[64]")
    real = loop.eval_lengths

    def eval_lengths(*a, **k):  # the pre-timeout signal arrives while the final evaluation runs
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop, "eval_lengths", eval_lengths)
        res = run_job(make_cfg(*over), run_dir)
    assert res["status"] == "interrupted" and res["stopped_by"] == "SIGUSR1" and one_line(res["error"])
    assert "during the final evaluation (training finished at step 6)" in res["error"]
    assert checkpoint.read_checkpoint(run_dir / "checkpoint.pt")["counters"]["step"] == 6  # saved before it
    res = run_job(make_cfg(*over, "train.resume=true"), run_dir)
    assert res["status"] == "ok" and res["train"]["resumed_from_step"] == 6 and res["train"]["steps"] == 6
    assert set(res["train"]["val_loss_by_len"]) == {"32", "64"}


def test_the_continuation_is_decided_before_wandb_closes(make_cfg, tmp_path, monkeypatch, slurm_env):
    """At the time limit's SIGUSR1 the job requeues itself before closing its sinks (W&B's close takes
    up to 2 x logger.finish_timeout_s)."""
    from attnbench.track import sinks

    at_close = []
    monkeypatch.setattr(sinks.MultiSink, "close", lambda self, status: at_close.append(list(slurm_env["requeued"])))
    monkeypatch.setattr(continuation, "_ATTEMPT", {})
    continuation.open_attempt(continuation.Limits())  # as attnbench's SLURM launcher does
    with monkeypatch.context() as m:
        stop_at(m, 3, signal.SIGUSR1)
        res = run_job(make_cfg(*BASE, "train.steps=20"), tmp_path / "run")
    assert at_close == [["7_1"]]
    assert res["status"] == "interrupted" and "timeout at step 3 (SIGUSR1)" in res["error"]
    assert continuation.decide_now(tmp_path / "run") == continuation.CONTINUE  # decided once
    assert slurm_env["requeued"] == ["7_1"]


def test_the_default_signal_delay_covers_the_worst_case():
    """docs/sweeps.md: one step and the checkpoint, scontrol show job, scontrol requeue, and W&B's close."""
    launcher = yaml.safe_load((conf_dir() / "hydra" / "launcher" / "slurm_gpu.yaml").read_text())
    wandb_close = 2 * yaml.safe_load((conf_dir() / "logger" / "wandb.yaml").read_text())["finish_timeout_s"]
    bounded = continuation.SCONTROL_SHOW_TIMEOUT_S + continuation.REQUEUE_TIMEOUT_S + wandb_close
    assert launcher["signal_delay_s"] >= bounded + continuation.STEP_AND_CHECKPOINT_S


# ----------------------------------------------------------------------------- item 14
def test_a_rerun_without_resume_keeps_the_finished_runs_curves_and_checkpoint(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    assert run_job(make_cfg(*BASE, "train.steps=4"), run_dir)["status"] == "ok"
    first = metrics(run_dir)
    res = run_job(make_cfg(*BASE, "train.steps=3", "train.lr=3e-3"), run_dir)  # no train.resume: afresh
    assert res["status"] == "ok"
    assert json.loads((run_dir / "results.1.json").read_text())["train"]["steps"] == 4
    assert metrics(run_dir, "metrics.1.jsonl") == first and [r["step"] for r in metrics(run_dir)] == [1, 2, 3]
    kept = checkpoint.read_checkpoint(run_dir / "checkpoint.1.pt")
    assert kept["counters"]["step"] == 4 and kept["trained_config"]["train.lr"] == 1e-3
    assert checkpoint.read_checkpoint(run_dir / "checkpoint.pt")["counters"]["step"] == 3


KILLED_SAVE = """
import os, signal, sys, torch
from attnbench.train import checkpoint
real = torch.save
def save(obj, f):  # write the whole checkpoint, then die before the rename, as SIGKILL would
    real(obj, f); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
model = torch.nn.Linear(64, 64)
checkpoint.save_checkpoint(sys.argv[1], model, torch.optim.AdamW(model.parameters()),
                           torch.amp.GradScaler("cpu", enabled=False), {"step": 1}, "h")
"""


def test_a_save_killed_outright_leaves_no_temporary_file_behind(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    assert run_job(make_cfg(*BASE, "train.steps=3"), run_dir)["status"] == "ok"
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(run_dir / "checkpoint.pt")], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    temps = list(run_dir.glob(".checkpoint.pt.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size > 64 * 64 * 4  # a full-size leftover
    assert checkpoint.read_checkpoint(run_dir / "checkpoint.pt")["counters"]["step"] == 3  # intact
    res = run_job(make_cfg(*BASE, "train.steps=3", "train.resume=true"), run_dir)
    assert res["status"] == "ok" and not list(run_dir.glob(".checkpoint.pt.*"))


def test_submitits_handler_is_not_live_outside_attnbenchs_scopes(caplog):
    """submitit installs its own SIGUSR1 handler (SUBMITIT_PREEMPT_SIGNAL=USR1), which would requeue
    the job by itself. Within an attempt, a signal before the job's scope stops the job when that
    scope opens; one after the job ended is only logged."""
    from attnbench.train.interrupt import AttemptScope

    submitits = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: submitits.append(s))
    try:
        with AttemptScope():
            os.kill(os.getpid(), signal.SIGUSR1)  # during setup, before the job's RaiseOnStop
            with pytest.raises(StopRequested, match="SIGUSR1"):
                with RaiseOnStop():
                    pass
            assert signal.getsignal(signal.SIGUSR1).__self__.__class__ is AttemptScope  # restored
            with RaiseOnStop():
                pass  # the job ran and ended
            os.kill(os.getpid(), signal.SIGUSR1)  # while W&B closes
            os.kill(os.getpid(), signal.SIGTERM)  # SLURM ending the requeued attempt
        assert submitits == []
        assert "SIGTERM received after the job ended: its result stands" in caplog.text
        os.kill(os.getpid(), signal.SIGUSR1)
        assert submitits == [signal.SIGUSR1]  # submitit's handler is back outside the attempt
        caplog.clear()
        with AttemptScope(restore=False):  # the launcher's: the process ends after the attempt
            pass
        os.kill(os.getpid(), signal.SIGUSR1)  # e.g. while SLURM ends a requeued attempt
        assert submitits == [signal.SIGUSR1] and "SIGUSR1 received after the job ended" in caplog.text
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.slow
def test_an_interrupted_jobs_error_is_printed_once(tmp_path):
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "attnbench", *BASE, "device.threads=1", "train.steps=1000000",
                             f"hydra.run.dir={run_dir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run_dir / "metrics.jsonl").is_file()
                                          and (run_dir / "metrics.jsonl").stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert (out + err).count("stopped by SIGTERM at step") == 1, out + err
    assert "attnbench: error: stopped by SIGTERM at step" in err
