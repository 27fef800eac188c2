"""ffn=none: attention-only blocks with every attention and norm; counts, FLOPs, bench and cache decoding."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnbench import build_model, load_config
from attnbench.bench.flops import flops_per_token_fwd
from attnbench.config.spec import resolve_spec
from attnbench.model import param_breakdown
from attnbench.model.size import count_params

pytestmark = pytest.mark.usefixtures("one_thread")

ATTNS = [["attn=mha"], ["attn=gqa"], ["attn=mqa"], ["attn=local"], ["attn=mla"], ["attn=diff", "pos=rope"],
         ["attn=linear", "pos=none", "attn.short_conv=4"], ["attn.gate=headwise", "attn.sinks=true"]]
NORMS = [["norm=layernorm"], ["norm=rmsnorm", "norm.placement=post"]]


def _cfg(*over: str):
    return load_config(["stages=[bench]", "logger=none", "device=cpu", *over])


@pytest.mark.parametrize("norm", NORMS, ids=lambda o: " ".join(o))
@pytest.mark.parametrize("attn", ATTNS, ids=lambda o: " ".join(o))
def test_attention_only_blocks_build_count_and_run(attn, norm):
    spec = resolve_spec(_cfg("ffn=none", *attn, *norm))
    model = build_model(spec)
    parts = param_breakdown(model)
    assert parts.get("ffn", 0) == 0 and all(b.ffn is None and b.norm2 is None for b in model.blocks)
    assert count_params(spec) == parts["total"]
    with_mlp = param_breakdown(build_model(resolve_spec(_cfg("ffn=gelu", *attn, *norm))))
    d = spec.d_model
    assert with_mlp["total"] - parts["total"] >= spec.n_layers * 8 * d * d  # the MLP's two matrices are gone
    x = torch.randint(0, spec.vocab_size, (2, 24))
    full = model(x)  # (B, T, V)
    assert full.shape == (2, 24, spec.vocab_size) and torch.isfinite(full).all()
    full.float().logsumexp(-1).sum().backward()
    if attn != ["attn=local"]:  # decoding token by token through the cache equals the full forward
        cache = model.init_cache(2, 24)
        with torch.no_grad():
            steps = torch.cat([model(x[:, t : t + 1], cache=cache) for t in range(24)], 1)
        assert torch.allclose(steps, full.detach(), atol=1e-4)


def test_flops_have_no_ffn_term():
    cfg = _cfg("ffn=none", "attn.impl=manual")
    model = build_model(cfg)
    idx = torch.randint(0, 256, (2, 32))
    with FlopCounterMode(display=False) as fwd:
        model(idx)
    assert fwd.get_total_flops() == pytest.approx(2 * 32 * flops_per_token_fwd(cfg, 32, causal=False), rel=1e-9)
    assert flops_per_token_fwd(_cfg("attn.impl=manual"), 32) - flops_per_token_fwd(cfg, 32) == 2 * 2 * 2 * 64 * 256


def test_bench_and_train_run_with_ffn_none(tmp_path):
    from attnbench.job import run_job

    cfg = load_config(["ffn=none", "logger=none", "device=cpu", "bench=quick", "bench.seq_lens=[32]",
                       "bench.repeats=1", "bench.warmup=0", "bench.memory=none", "train.steps=3", "train.eval_every=0",
                       "train.batch_size=4", "train.seq_len=32", "train.eval_batches=1", "data.n_queries=4"])
    res = run_job(cfg, tmp_path)
    assert res["train"]["status"] == "ok" and res["bench"]
    assert res["variant"].split("-")[3] == "none"
