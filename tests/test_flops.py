"""Analytic FLOPs (bench/flops.py) against hand counts and torch's FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnbench import build_model
from attnbench.bench.flops import flops_per_token_decode, flops_per_token_fwd, flops_per_token_train, mean_keys


def test_mean_keys_causal_halving_and_window():
    assert mean_keys(8, causal=False) == 8
    assert mean_keys(8) == pytest.approx(4.5)  # (T+1)/2
    assert mean_keys(8, window=3) == pytest.approx((1 + 2 + 3 * 6) / 8)  # min(i+1, w) averaged
    assert mean_keys(8, window=100) == mean_keys(8)


def test_tiny_model_by_hand(make_cfg):
    cfg = make_cfg("stages=[bench]")  # tiny: d=64, H=4, L=2, V=256, gelu ×4, MHA
    d, T = 64, 32
    per_layer = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * (T + 1) / 2 + 2 * 2 * d * 4 * d
    assert flops_per_token_fwd(cfg, T) == pytest.approx(2 * per_layer + 2 * d * 256)
    assert flops_per_token_train(cfg, T) == pytest.approx(3 * flops_per_token_fwd(cfg, T))


def test_gqa_shrinks_only_the_projection(make_cfg):
    mha, gqa = make_cfg("stages=[bench]"), make_cfg("stages=[bench]", "attn=gqa")  # 4 heads vs 2 KV heads
    d, D, L = 64, 16, 2
    assert flops_per_token_fwd(mha, 64) - flops_per_token_fwd(gqa, 64) == pytest.approx(L * 2 * d * 2 * (4 - 2) * D)


def test_decode_flops_average_the_growing_context(make_cfg):
    cfg = make_cfg("stages=[bench]")
    # token n after a T-token prompt sees T+n+1 keys: the mean over 4 new tokens after 10 is 12.5
    attn_term = 2 * 2 * 4 * 16 * 2  # 2·2·H·D per key, × L layers
    base = flops_per_token_fwd(cfg, 1, causal=False) - attn_term * 1
    assert flops_per_token_decode(cfg, 10, 4) == pytest.approx(base + attn_term * 12.5)
    local = make_cfg("stages=[bench]", "attn=local", "attn.window=8")
    assert flops_per_token_decode(local, 100, 4) == pytest.approx(base + attn_term * 8)


@pytest.mark.parametrize("overrides", [
    (), ("attn=gqa", "ffn=swiglu"), ("attn=mqa", "pos=rope", "norm=rmsnorm"),
    ("attn=local", "model.tie_embeddings=false", "ffn=geglu"), ("model.d_model=96", "attn.n_heads=6", "pos=alibi"),
    ("attn=mla",), ("attn=mla", "attn.q_lora_rank=24", "attn.kv_lora_rank=40", "attn.v_head_dim=12", "ffn=swiglu"),
])
def test_forward_and_train_flops_match_flop_counter(make_cfg, overrides):
    # The `manual` kernel multiplies the full T×T score and value matrices and masks
    # afterwards, so it performs the non-causal count: compare with causal=False.
    # (A causal flash kernel skips about half; the analytic default counts the useful half.)
    cfg = make_cfg("stages=[bench]", "attn.impl=manual", *overrides)
    model = build_model(cfg)
    B, T = 2, 48
    idx = torch.randint(0, cfg.model.vocab_size, (B, T))
    with FlopCounterMode(display=False) as fwd:
        model(idx)
    assert fwd.get_total_flops() == pytest.approx(B * T * flops_per_token_fwd(cfg, T, causal=False), rel=1e-9)
    with FlopCounterMode(display=False) as train:
        model(idx).float().logsumexp(-1).sum().backward()
    # backward = 2 × forward exactly: every matmul has an input- and a weight-gradient matmul
    assert train.get_total_flops() == pytest.approx(3 * fwd.get_total_flops(), rel=1e-9)


MLA = ("attn=mla", "attn.q_lora_rank=24", "attn.kv_lora_rank=40", "attn.qk_nope_head_dim=12",
       "attn.rope_head_dim=6", "attn.v_head_dim=10")


def test_mla_flops_by_hand(make_cfg):
    cfg = make_cfg("stages=[bench]", *MLA)  # d=64, H=4, L=2, V=256, gelu ×4
    d, H, r, rq, dn, dr, dv, T = 64, 4, 40, 24, 12, 6, 10, 32
    attn = (2 * d * rq + 2 * rq * H * (dn + dr)  # low-rank query
            + 2 * d * (r + dr) + 2 * r * H * (dn + dv)  # latent + shared RoPE key, expanded once per token
            + 2 * H * (dn + dr) * (T + 1) / 2 + 2 * H * dv * (T + 1) / 2  # scores and AV, causal
            + 2 * H * dv * d)
    assert flops_per_token_fwd(cfg, T) == pytest.approx(2 * (attn + 2 * 2 * d * 4 * d) + 2 * d * 256)


@pytest.mark.parametrize("absorb", [False, True])
def test_mla_decode_flops_match_flop_counter(make_cfg, absorb):
    """Decode steps: without absorb every cached latent is expanded again on each step; with
    attn.absorb the scores run in latent space (kv_lora_rank + rope_head_dim per key)."""
    cfg = make_cfg("stages=[bench]", "attn.impl=manual", *MLA, f"attn.absorb={str(absorb).lower()}")
    model = build_model(cfg).eval()
    B, T, n_new = 2, 10, 4
    idx = torch.randint(0, cfg.model.vocab_size, (B, T + n_new))
    with torch.no_grad():
        cache = model.init_cache(B, T + n_new)
        model(idx[:, :T], cache)
        with FlopCounterMode(display=False) as counter:
            for t in range(T, T + n_new):
                model(idx[:, t : t + 1], cache)
    want = B * n_new * flops_per_token_decode(cfg, T, n_new)
    assert counter.get_total_flops() == pytest.approx(want, rel=1e-9)
    other = make_cfg("stages=[bench]", *MLA, f"attn.absorb={str(not absorb).lower()}")
    assert (flops_per_token_decode(cfg, 4096, 1) < flops_per_token_decode(other, 4096, 1)) == absorb
