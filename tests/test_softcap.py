"""attn.softcap and model.final_softcap: Gemma 2's soft-capping, cap · tanh(x / cap) (Gemma Team 2024),
on the attention scores q kᵀ · scale (before bias and mask) and on the LM logits. Only kernels that can
modify scores accept attn.softcap (manual, wrapper, flex); the rest are rejected before building."""
from __future__ import annotations

import pytest
import torch

from attnbench import ConfigError, build_model, load_config
from attnbench.model.kernels import MaskSpec, allowed_mask, get_kernel, manual_attention
from attnbench.model.position import ALiBi
from attnbench.registry import KERNELS

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
TINY = ["stages=[]", "device=cpu", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=64", "model.context_length=32", "attn.impl=manual"]
TOL = dict(atol=1e-5, rtol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def qkv(T: int, S: int, H: int = 4, Hkv: int = 2, D: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = 3 * torch.randn(2, H, T, D, generator=g)  # large scores, so the cap bites
    return q, 3 * torch.randn(2, Hkv, S, D, generator=g), torch.randn(2, Hkv, S, D, generator=g)


def hand(q, k, v, cap, spec, bias=None):
    """softmax(cap·tanh(q kᵀ·scale / cap) + bias, masked) v, one head at a time, GQA by index."""
    H, Hkv, T, S, D = q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    out = torch.empty_like(q)
    ok = allowed_mask(T, S, spec, q.device)
    for h in range(H):
        kh, vh = k[:, h // (H // Hkv)], v[:, h // (H // Hkv)]
        s = q[:, h] @ kh.transpose(-2, -1) / D**0.5
        s = cap * torch.tanh(s / cap) + (bias[h] if bias is not None else 0)
        out[:, h] = torch.softmax(s.masked_fill(~ok, float("-inf")), dim=-1) @ vh
    return out


@pytest.mark.parametrize("T,S,off", [(6, 6, 0), (2, 7, 5)])
def test_manual_softcap_is_the_formula(T, S, off):
    q, k, v = qkv(T, S)
    spec = MaskSpec(q_offset=off)
    bias = ALiBi(32, 4, 0).bias(torch.arange(off, off + T), S)  # (H, T, S)
    for b in (None, bias):
        got = manual_attention(q, k, v, spec=spec, bias=b, scale=8**-0.5, softcap=5.0)
        torch.testing.assert_close(got, hand(q, k, v, 5.0, spec, b), **TOL)
    # the cap changes the result (the scores here reach well past 5)
    assert not torch.allclose(manual_attention(q, k, v, spec=spec, bias=None, scale=8**-0.5, softcap=5.0),
                              manual_attention(q, k, v, spec=spec, bias=None, scale=8**-0.5), atol=1e-3)


@pytest.mark.parametrize("impl", ["flex", "wrapper"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_softcap_kernels_match_manual(impl, with_bias):
    T, S, off = 3, 8, 5  # a chunk after a KV cache
    q, k, v = qkv(T, S, seed=1)
    spec = MaskSpec(q_offset=off, window=6)
    bias = ALiBi(32, 4, 0).bias(torch.arange(off, off + T), S) if with_bias else None
    ref = manual_attention(q, k, v, spec=spec, bias=bias, scale=8**-0.5, softcap=4.0)
    with torch.no_grad():
        got = get_kernel(impl)(q, k, v, spec=spec, bias=bias, scale=8**-0.5, softcap=4.0)
    torch.testing.assert_close(got, ref, **TOL)


def test_model_with_softcap_flex_matches_manual():
    cfg = load_config([*TINY, "pos=alibi", "attn.softcap=2.0"])
    ref = build_model(cfg).eval()
    flex = build_model(load_config([*TINY, "pos=alibi", "attn.softcap=2.0", "attn.impl=flex"])).eval()
    flex.load_state_dict(ref.state_dict())
    idx = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(flex(idx), ref(idx), **TOL)


def test_only_score_modifying_kernels_accept_softcap():
    accepts = {k for k in KERNELS.names() if KERNELS.get(k).supports_softcap}
    assert accepts == {"manual", "wrapper", "flex"}


@pytest.mark.parametrize("impl", ["sdpa", "sdpa_math", "sdpa_flash", "torch_mha"])
def test_other_kernels_are_rejected_up_front_with_one_line(impl):
    with pytest.raises(ConfigError) as exc:
        load_config([*TINY, "attn.softcap=30", f"attn.impl={impl}"])
    msg = str(exc.value)
    assert msg == f"attn.impl={impl}: cannot modify attention scores, so no attn.softcap (use attn.impl=manual or flex)"
    assert "\n" not in msg


@pytest.mark.parametrize("key", ["attn.softcap", "model.final_softcap"])
def test_non_positive_caps_are_rejected(key):
    with pytest.raises(ConfigError, match=rf"^{key}=0.0: must be > 0 \(or null = off\)$"):
        load_config([*TINY, f"{key}=0.0"])


def test_final_softcap_caps_the_lm_logits():
    plain = build_model(load_config([*TINY, "model.init_std=1.0"])).eval()  # large logits
    capped = build_model(load_config([*TINY, "model.init_std=1.0", "model.final_softcap=3.0"])).eval()
    capped.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        raw, got = plain(idx), capped(idx)
    assert raw.abs().max() > 3
    torch.testing.assert_close(got, 3.0 * torch.tanh(raw / 3.0), **TOL)
    assert got.abs().max() < 3


def test_attention_softcap_changes_the_model():
    plain = build_model(load_config([*TINY, "model.init_std=1.0"])).eval()
    capped = build_model(load_config([*TINY, "model.init_std=1.0", "attn.softcap=1.0"])).eval()
    capped.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        assert not torch.allclose(plain(idx), capped(idx), atol=1e-3)


@pytest.mark.parametrize("extra", [["attn.softcap=2.0", "pos=rope"], ["model.final_softcap=5.0", "pos=alibi"],
                                   ["attn.softcap=2.0", "model.final_softcap=5.0", "attn=gqa", "attn.n_kv_heads=2",
                                    "attn.window=5", "pos=learned"]])
def test_causal_and_cached_decoding_equal_the_full_pass(extra):
    model = build_model(load_config([*TINY, "model.init_std=0.5", *extra])).eval()
    idx = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        full = model(idx)
        changed = idx.clone()
        changed[:, 11:] = (changed[:, 11:] + 1) % 64
        torch.testing.assert_close(model(changed)[:, :11], full[:, :11], atol=0, rtol=0)
        cache = model.init_cache(2, 20)
        chunks = [model(idx[:, :7], cache)] + [model(idx[:, t : t + 1], cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-4, rtol=1e-4)  # logits of size ~10 here


def test_softcap_trains_with_gradients():
    model = build_model(load_config([*TINY, "attn.softcap=2.0", "model.final_softcap=5.0"]))
    logits = model(torch.randint(0, 64, (2, 8)))
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
