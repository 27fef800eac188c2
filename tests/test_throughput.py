"""Steady-state training throughput: tokens_per_s leaves out the warm-up steps (torch.compile's compilation)."""
from __future__ import annotations

import json
import statistics

import pytest
import torch
import torch._functorch.config
import torch._inductor.config

from attnbench.job import run_job
from attnbench.train.loop import TIMING_WARMUP_STEPS, Progress, throughput

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["stages=[train]", "logger=none", "device=cpu", "train.batch_size=16", "train.seq_len=32",
        "train.eval_every=0", "train.eval_batches=1", "train.warmup_steps=5", "train.log_every=1",
        "data.n_pairs=4", "data.n_queries=4", "train.sample_tokens=0"]


@pytest.mark.slow
def test_compiled_run_reports_the_steady_state_throughput(make_cfg, tmp_path, monkeypatch):
    """A compiled run's step 0 is seconds of compilation; the per-step figures after it are ~1000x faster.
    results.json's tokens_per_s must be close to their median, not the all-steps mean."""
    # A real compilation, whatever ran before: in CI an earlier test compiled the same shapes, and
    # inductor's FX-graph and AOT caches made this warm-up 0.3 s (a CI failure, stop 22).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", False)
    torch._dynamo.reset()
    # steps of ~0.1 s on a loaded box: each spans many scheduler slices, so one preempted slice moves the
    # mean step time little (with 30 ms steps, one 3x slower step in 37 is already 5%)
    cfg = make_cfg(*FAST, "train.steps=40", "device.compile=true", "train.batch_size=32", "train.seq_len=64")
    res = run_job(cfg, tmp_path)
    tr = res["train"]
    assert tr["status"] == "ok", tr.get("error")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_step = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > TIMING_WARMUP_STEPS]
    assert len(per_step) >= 30
    median = statistics.median(per_step)
    assert abs(tr["tokens_per_s"] / median - 1) < 0.10, (tr["tokens_per_s"], median)
    assert tr["warmup_steps"] == TIMING_WARMUP_STEPS and tr["timed_steps"] == 40 - TIMING_WARMUP_STEPS
    assert tr["tokens_per_s_includes_warmup"] is False
    assert tr["warmup_s"] > 0.5 and tr["warmup_s"] + tr["timed_s"] == pytest.approx(tr["train_s"])
    # the old figure (every step, compilation included) is far below: the test would catch a regression
    assert tr["tokens"] / tr["train_s"] < 0.5 * median


def test_short_run_falls_back_to_every_step_and_says_so(make_cfg):
    cfg = make_cfg(*FAST)
    p = Progress(step=2, tokens=2 * 16 * 32, train_s=0.5, warmup_s=0.5, warmup_steps=2)
    out = throughput(p, cfg.train)
    assert out["tokens_per_s"] == pytest.approx(2 * 16 * 32 / 0.5) and out["tokens_per_s_includes_warmup"]
    p = Progress(step=10, tokens=10 * 512, train_s=3.0, warmup_s=2.0, warmup_steps=3, timed_s=1.0, timed_steps=7)
    out = throughput(p, cfg.train)
    assert out["tokens_per_s"] == pytest.approx(7 * 512 / 1.0) and not out["tokens_per_s_includes_warmup"]
    assert (out["warmup_s"], out["warmup_steps"], out["timed_steps"]) == (2.0, 3, 7)
