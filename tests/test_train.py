"""The training stage: learning, determinism, resume, divergence, length evaluation, signals."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnbench.job import run_job
from attnbench.model import build_model
from attnbench.train.data import prepare_data
from attnbench.train.loop import run_train

# The tiny model on small batches: a few hundred ms per run on one core.
FAST = ["stages=[train]", "logger=none", "device=cpu", "train.batch_size=8", "train.seq_len=32",
        "train.eval_every=0", "train.eval_batches=2", "train.warmup_steps=5", "data.n_pairs=4", "data.n_queries=4"]


class Recorder:
    """A sink that keeps what the trainer logs; optionally sends SIGTERM to this process at one step."""

    def __init__(self, kill_at: int | None = None):
        self.rows: dict[int, dict] = {}
        self.kill_at = kill_at

    def log(self, metrics: dict, step: int) -> None:
        self.rows[step] = dict(metrics)
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def losses(self) -> list[float]:
        return [self.rows[s]["train_loss"] for s in sorted(self.rows)]


def train(cfg, run_dir: Path, sink=None) -> dict:
    """What job.py does for stages=[train], with a sink of our choice."""
    data = prepare_data(cfg)
    model = build_model(cfg, vocab_size=data.vocab_size)
    torch.manual_seed(int(cfg.seed))
    return run_train(cfg, model, torch.device("cpu"), torch.float32, run_dir, sink or Recorder(), data=data)


@pytest.fixture
def text_file(tmp_path) -> Path:
    f = tmp_path / "corpus.txt"
    lines = [f"the {a} cat sat on the {b} mat.\n" for a in ("black", "white", "grey") for b in ("red", "blue")]
    f.write_text("".join(lines) * 40)
    return f


def test_loss_decreases_on_synthetic(make_cfg, tmp_path):
    rec = Recorder()
    res = train(make_cfg(*FAST, "train.steps=50", "train.lr=3e-3"), tmp_path, rec)
    assert res["status"] == "ok" and res["steps"] == 50 and res["metric_name"] == "recall_acc"
    first, last = rec.losses()[:5], rec.losses()[-5:]
    assert sum(last) / 5 < sum(first) / 5 - 0.3
    assert 0.0 <= res["metric"] <= 1.0 and res["val_loss"] < math.log(64)


def test_loss_decreases_on_text_and_samples(make_cfg, tmp_path, text_file):
    rec = Recorder()
    cfg = make_cfg(*FAST, "data=text", f"data.path={text_file}", "train.steps=50", "train.sample_tokens=40")
    res = train(cfg, tmp_path, rec)
    assert res["status"] == "ok" and res["metric_name"] == "bpc"
    assert sum(rec.losses()[-5:]) / 5 < sum(rec.losses()[:5]) / 5 - 0.5
    assert res["metric"] == pytest.approx(res["val_loss"] / math.log(2))
    assert res["perplexity"] == pytest.approx(math.exp(res["val_loss"]))
    assert res["sample"].startswith("\n") and len(res["sample"]) == 41
    assert set(res["sample"]) <= set(text_file.read_text())


def test_sample_rolls_past_the_context_of_learned_positions(make_cfg, tmp_path, text_file):
    cfg = make_cfg(*FAST, "data=text", f"data.path={text_file}", "pos=learned", "model.context_length=32",
                   "train.steps=3", "train.sample_tokens=80")
    res = train(cfg, tmp_path)
    assert res["status"] == "ok" and len(res["sample"]) == 81


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_autocast_trains(make_cfg, tmp_path, dtype):
    from attnbench.device import resolve_dtype

    # pos=rope: learned positions (the default) are not scored past train.seq_len
    cfg = make_cfg(*FAST, f"device.dtype={dtype}", "pos=rope", "train.steps=5", "train.eval_seq_lens=[64]")
    data = prepare_data(cfg)
    model = build_model(cfg, vocab_size=data.vocab_size)
    res = run_train(cfg, model, torch.device("cpu"), resolve_dtype(cfg.device), tmp_path, Recorder(), data=data)
    assert res["status"] == "ok" and math.isfinite(res["val_loss"]) and math.isfinite(res["val_loss_by_len"]["64"])
    assert next(model.parameters()).dtype == torch.float32  # autocast: weights stay fp32


def test_same_config_same_losses_bit_for_bit(make_cfg, tmp_path):
    runs = [Recorder(), Recorder()]
    for i, rec in enumerate(runs):
        res = train(make_cfg(*FAST, "train.steps=12", "train.eval_every=6"), tmp_path / str(i), rec)
    assert runs[0].losses() == runs[1].losses()
    assert runs[0].rows[12]["val_loss"] == runs[1].rows[12]["val_loss"]
    assert res["status"] == "ok"


def test_sigterm_checkpoints_and_resume_equals_uninterrupted(make_cfg, tmp_path):
    over = (*FAST, "train.steps=16", "train.eval_every=4", "model.dropout=0.1")  # dropout: RNG state matters
    full = Recorder()
    ref = train(make_cfg(*over), tmp_path / "full", full)

    part = Recorder(kill_at=7)
    res = train(make_cfg(*over), tmp_path / "cut", part)
    assert res["status"] == "interrupted" and res["steps"] == 7 and "SIGTERM" in res["error"]
    assert Path(res["checkpoint"]).is_file()
    rest = Recorder()
    res2 = train(make_cfg(*over, "train.resume=true"), tmp_path / "cut", rest)
    assert res2["status"] == "ok" and res2["resumed_from_step"] == 7 and res2["steps"] == 16
    assert part.losses() + rest.losses() == full.losses()
    assert (res2["val_loss"], res2["train_loss"], res2["tokens"]) == (ref["val_loss"], ref["train_loss"], ref["tokens"])


def test_nan_loss_is_diverged_not_a_crash(make_cfg, tmp_path):
    res = run_job(make_cfg(*FAST, "train.steps=30", "train.lr=1e6", "train.warmup_steps=0"), tmp_path)
    assert res["status"] == "diverged" and res["train"]["status"] == "diverged"
    assert 1 <= res["train"]["diverged_step"] < 30 and res["train"]["steps"] == res["train"]["diverged_step"]
    assert "step" in res["error"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("pos", ["rope", "alibi", "none", "sinusoidal"])
def test_eval_at_longer_lengths(make_cfg, tmp_path, pos):
    res = train(make_cfg(*FAST, f"pos={pos}", "train.steps=2", "train.eval_seq_lens=[32,64,96]"), tmp_path)
    assert set(res["val_loss_by_len"]) == {"32", "64", "96"} and res["val_na"] == {}
    assert all(math.isfinite(v) for v in res["val_loss_by_len"].values())
    assert all(0 <= v <= 1 for v in res["metric_by_len"].values())


def test_learned_positions_report_longer_lengths_not_applicable(make_cfg, tmp_path):
    res = train(make_cfg(*FAST, "pos=learned", "model.context_length=32", "train.steps=2",
                         "train.eval_seq_lens=[64]"), tmp_path)
    assert res["status"] == "ok" and math.isfinite(res["val_loss_by_len"]["32"])
    assert res["val_loss_by_len"]["64"] is None and "context_length" in res["val_na"]["64"]


def test_job_writes_train_section_and_metrics(make_cfg, tmp_path):
    res = run_job(make_cfg(*FAST, "train.steps=6", "train.eval_every=3", "train.checkpoint_every=2"), tmp_path)
    tr = json.loads((tmp_path / "results.json").read_text())["train"]
    for key in ("status", "error", "steps", "tokens", "wall_s", "tokens_per_s", "train_loss", "val_loss",
                "val_loss_by_len", "val_na", "metric_name", "metric"):
        assert key in tr
    assert res["status"] == "ok" and tr["tokens"] == 6 * 8 * 32 and tr["tokens_per_s"] > 0
    assert res["config"]["model"]["vocab_size"] == 17  # from the data (data.vocab_size), not model=tiny's 256
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all({"train_loss", "lr", "tokens_per_s"} <= set(r) for r in rows)
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6] and "val_recall_acc" in rows[2]
    assert (tmp_path / "checkpoint.pt").is_file()


def test_lr_schedule_warmup_then_cosine(make_cfg):
    from attnbench.train.schedule import lr_at

    tc = make_cfg("train.steps=100", "train.warmup_steps=10", "train.lr=1e-3", "train.min_lr_ratio=0.1").train
    lrs = [lr_at(s, tc) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_weight_decay_on_matrices_only(make_cfg):
    from attnbench.train.schedule import param_groups

    decay, no_decay = param_groups(build_model(make_cfg("ffn=swiglu")), 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) > 0


@pytest.mark.slow
def test_sigterm_on_the_cli_saves_checkpoint_and_interrupted_result(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnbench", *FAST, "train.steps=1000000", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "interrupted" and res["train"]["status"] == "interrupted", err
    assert res["train"]["steps"] >= 1 and (run_dir / "checkpoint.pt").is_file()
    assert "Traceback" not in err and "train.resume=true" in err
