"""attn=diff and attn=linear through a whole job: every bench mode (decode with the KV cache or the
recurrent state), the trainer, the model figures in results.json and the report's columns."""
from __future__ import annotations

import json

import pytest

from attnbench import report
from attnbench.job import run_job
from attnbench.track.results import check_results

JOB = ("stages=[bench,train]", "logger=none", "bench=quick", "bench.memory=none", "bench.peak_flops=1e11",
       "bench.repeats=2", "bench.warmup=1", "bench.decode_tokens=3", "bench.seq_lens=[16,48]",
       "train.steps=6", "train.eval_every=3", "train.batch_size=4", "train.seq_len=48", "train.eval_batches=1",
       "train.sample_tokens=0", "model.d_model=32")


@pytest.mark.slow
def test_diff_and_linear_run_every_stage_and_reach_the_report(make_cfg, tmp_path):
    figures = {}
    for i, attn in enumerate([("attn=diff", "pos=rope"), ("attn=linear", "attn.feature_map=taylor2", "attn.short_conv=3")]):
        res = run_job(make_cfg(*JOB, *attn), tmp_path / str(i))
        on_disk = json.loads((tmp_path / str(i) / "results.json").read_text())
        assert res["status"] == "ok" and check_results(on_disk) == []
        assert [r["status"] for r in on_disk["bench"]] == ["ok"] * 8, on_disk["bench"]
        assert on_disk["train"]["steps"] == 6 and on_disk["train"]["val_loss"] > 0
        figures[attn[0]] = on_disk["model"]
    assert figures["attn=diff"]["kv_cache_bytes_per_token"] == 2 * 2 * 32 * 4
    assert figures["attn=diff"]["recurrent_state_bytes"] == 0
    assert figures["attn=linear"]["kv_cache_bytes_per_token"] == 0
    F = 1 + 8 + 64  # taylor2 features of D = 8
    conv = (3 - 1) * 3 * 32  # short_conv: the last 2 q/k/v projections (3 · d_model channels) per layer
    assert figures["attn=linear"]["recurrent_state_bytes"] == 2 * (4 * (F * 8 + F) + conv) * 4
    md = (report.build_report([tmp_path]).files["report.md"]).read_text()
    assert "state bytes/seq" in md and "| diff-rope-" in md and "| linear-learned-" in md
