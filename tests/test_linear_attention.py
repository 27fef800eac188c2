"""attn=linear (Katharopoulos et al. 2020): the chunked parallel form, the recurrent decode and a
plain O(T²) masked formula agree to 1e-5; full = cached logits of the whole model; the feature maps;
the constant state and its bytes; FLOPs; one-line errors."""
from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

from attnbench import ConfigError, build_model, load_config
from attnbench.bench.flops import flops_per_token_decode, flops_per_token_fwd
from attnbench.model import kv_cache_bytes_per_token, recurrent_state_bytes
from decoding import assert_causal, with_random_convs
from hf_llama import cached_logits
from attnbench.model.linear_attention import (EPS, FEATURE_MAPS, RecurrentState, chunked_linear_attention,
                                              recurrent_step, taylor2)

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["stages=[]", "device=cpu", "attn=linear", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=40", "model.context_length=64", "attn.chunk_size=8"]


@lru_cache(maxsize=None)
def cfg_of(*overrides: str):
    return load_config([*BASE, *overrides])


def quadratic_linear_attention(q, k, v):
    """The plain formula: y_i = Σ_{j≤i} (φq_i·φk_j) v_j / (Σ_{j≤i} φq_i·φk_j + ε), scores materialised (T, T)."""
    B, H, T, F = q.shape
    G = H // k.shape[1]
    k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)  # the plain way: every query head its own copy
    a = (q @ k.transpose(-1, -2)) * torch.ones(T, T).tril()  # (B, H, T, T)
    return (a @ v) / (a.sum(-1, keepdim=True) + EPS)


def features(fmap: str, *shape):
    phi = FEATURE_MAPS[fmap][0]
    return phi(torch.randn(*shape, dtype=torch.float64))


@pytest.mark.parametrize("fmap", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("chunk", [1, 5, 8, 64])
@pytest.mark.parametrize("H, Hkv", [(4, 4), (4, 2)])
def test_parallel_recurrent_and_quadratic_forms_agree(fmap, chunk, H, Hkv):
    torch.manual_seed(0)
    B, T, D = 2, 21, 8
    q, k = features(fmap, B, H, T, D), features(fmap, B, Hkv, T, D)
    v = torch.randn(B, Hkv, T, D, dtype=torch.float64)
    ref = quadratic_linear_attention(q, k, v)
    par, (S, z) = chunked_linear_attention(q.float(), k.float(), v.float(), chunk)
    Fd = q.shape[-1]
    state = (torch.zeros(B, Hkv, Fd, D), torch.zeros(B, Hkv, Fd))
    steps = []
    for t in range(T):
        y, state = recurrent_step(q[:, :, t:t + 1].float(), k[:, :, t:t + 1].float(), v[:, :, t:t + 1].float(), state)
        steps.append(y)
    torch.testing.assert_close(par.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 2).double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(S, state[0], atol=1e-5, rtol=1e-5)  # the parallel form's final state
    torch.testing.assert_close(z, state[1], atol=1e-5, rtol=1e-5)


def test_parallel_form_continues_from_a_state():
    B, H, T, D = 1, 2, 30, 4
    q, k = features("elu1", B, H, T, D).float(), features("elu1", B, H, T, D).float()
    v = torch.randn(B, H, T, D)
    whole, _ = chunked_linear_attention(q, k, v, 7)
    _, state = chunked_linear_attention(q[:, :, :11], k[:, :, :11], v[:, :, :11], 7)
    rest, _ = chunked_linear_attention(q[:, :, 11:], k[:, :, 11:], v[:, :, 11:], 7, state)
    torch.testing.assert_close(rest, whole[:, :, 11:], atol=1e-5, rtol=1e-5)


def test_taylor2_features_give_the_second_order_exp_kernel():
    q, k = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    s = (q * k).sum(-1) / math.sqrt(16)
    torch.testing.assert_close((taylor2(q) * taylor2(k)).sum(-1), 1 + s + s * s / 2)
    assert taylor2(q).shape[-1] == FEATURE_MAPS["taylor2"][1](16) == 1 + 16 + 256
    x = torch.randn(1000) * 3
    assert (FEATURE_MAPS["elu1"][0](x) > 0).all()  # (from x < -17 fp32 rounds elu(x) + 1 to 0: hence ε)
    assert (FEATURE_MAPS["relu"][0](x) >= 0).all() and (FEATURE_MAPS["relu"][0](x) == 0).any()


@pytest.mark.parametrize("overrides", [(), ("pos=rope", "attn.n_kv_heads=2"), ("attn.feature_map=relu",),
                                       ("attn.feature_map=taylor2", "norm.qk_norm=true", "pos=sinusoidal"),
                                       ("attn.chunk_size=64",)])
def test_cached_decoding_equals_the_full_pass(overrides):
    model = build_model(cfg_of(*overrides)).eval()
    idx = torch.randint(0, 40, (2, 30))
    assert isinstance(model.init_cache(2, 30), RecurrentState)
    with torch.no_grad():
        torch.testing.assert_close(cached_logits(model, idx, 19), model(idx), atol=1e-5, rtol=1e-5)


def test_a_future_token_changes_no_earlier_logit():
    assert_causal(build_model(cfg_of("pos=rope")).eval(), torch.randint(0, 40, (1, 20)), 13, 40)


def test_the_state_is_constant_and_its_bytes_are_reported_as_such():
    cfg = cfg_of("attn.n_kv_heads=2", "pos=none")
    model = build_model(cfg)
    assert kv_cache_bytes_per_token(cfg) == 0
    # L · Hkv · (F·D + F) · 4 bytes, F = D = 8
    assert recurrent_state_bytes(cfg) == 2 * 2 * (8 * 8 + 8) * 4
    small, big = model.init_cache(1, 16), model.init_cache(1, 4096)
    assert small.nbytes() == big.nbytes() == recurrent_state_bytes(cfg)
    assert recurrent_state_bytes(cfg_of("attn.feature_map=taylor2")) == 2 * 4 * (73 * 8 + 73) * 4
    assert recurrent_state_bytes(load_config(["stages=[]"])) == 0


def test_snapshot_restores_the_state():
    model = build_model(cfg_of()).eval()
    cache = model.init_cache(1, 40)
    idx = torch.randint(0, 40, (1, 12))
    with torch.no_grad():
        model(idx, cache)
        snap = cache.snapshot()
        a = model(idx[:, :1], cache)
        cache.restore(snap)
        b = model(idx[:, :1], cache)
    assert cache.pos == 13
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_decode_flops_do_not_grow_with_the_context():
    cfg = cfg_of()
    assert flops_per_token_decode(cfg, 128, 16) == flops_per_token_decode(cfg, 2048, 16)
    assert flops_per_token_fwd(cfg, 512) == flops_per_token_fwd(cfg, 2048)  # chunk 8: per token the same
    soft = load_config(["stages=[]", "device=cpu", "pos=none"])
    assert flops_per_token_decode(soft, 2048, 16) > flops_per_token_decode(soft, 128, 16)


def test_trains_a_step():
    model = build_model(cfg_of("attn.feature_map=relu")).train()
    idx = torch.randint(0, 40, (2, 17))
    model(idx).logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("overrides, message", [
    (("pos=alibi",), "pos=alibi: attn=linear has no score matrix to add a position bias to"),
    (("attn.window=8",), "attn.window=8: attn=linear has no sliding window"),
    (("attn.softcap=30",), "attn.softcap=30.0: attn=linear has no attention logits to cap"),
    (("attn.dropout=0.1",), "attn.dropout=0.1: attn=linear has no attention probabilities to drop"),
    (("attn.impl=flex",), "attn.impl=flex: attn=linear computes its own token mixing and calls no softmax kernel"),
    (("attn.impl=manual",), "attn.impl=manual: attn=linear computes its own token mixing"),
    (("attn.feature_map=softmax",), "attn.feature_map=softmax: not allowed; choose from [elu1, relu, taylor2]"),
    (("attn.chunk_size=0",), "attn.chunk_size=0: must be an integer >= 1"),
    (("attn.gate=elementwise",), "attn.gate=elementwise: not with attn=linear"),
    (("attn.sinks=true",), "attn.sinks=true: not with attn=linear"),
    (("attn.lambda_init=0.5",), "attn.lambda_init=0.5: only used by attn=diff (got attn=linear)"),
])
def test_bad_linear_configs_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config([*BASE, *overrides])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["attn.feature_map=elu1", "attn.chunk_size=16"])  # short_conv: softmax too
def test_linear_fields_without_attn_linear_are_rejected(override):
    with pytest.raises(ConfigError, match=rf"^{override.split('=')[0]}=.*only used by attn=linear \(got attn=gqa\)"):
        load_config(["stages=[]", "attn=gqa", override])


# ----------------------------------------------------------------------------- attn.short_conv (Based's short convolution)
def conv_model(*overrides: str):
    """A model with attn.short_conv=3 whose convolutions are random."""
    return with_random_convs(build_model(cfg_of("attn.short_conv=3", *overrides)))


def test_short_conv_starts_as_plain_linear_attention():
    plain, conv = build_model(cfg_of()), build_model(cfg_of("attn.short_conv=4"))
    conv.load_state_dict(plain.state_dict(), strict=False)  # the same weights, the conv at its init
    idx = torch.randint(0, 40, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(conv(idx), plain(idx), rtol=0, atol=0)


@pytest.mark.parametrize("overrides", [(), ("pos=rope", "attn.n_kv_heads=2")])
def test_short_conv_cached_decoding_equals_the_full_pass_and_is_causal(overrides):
    model = conv_model(*overrides)
    idx = torch.randint(0, 40, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(cached_logits(model, idx, 19), model(idx), atol=1e-5, rtol=1e-5)
    assert_causal(model, idx[:1, :20], 13, 40)


def test_short_conv_mixes_the_previous_tokens_only():
    """One channel: a conv with taps (a, b, c) gives y_t = a·x_{t-2} + b·x_{t-1} + c·x_t."""
    from attnbench.model.linear_attention import ShortConv

    conv = ShortConv(1, 3)
    with torch.no_grad():
        conv.weight[0, 0] = torch.tensor([2.0, 3.0, 5.0])
    x = torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(1, 4, 1)  # (B, T, C)
    assert conv(x).flatten().tolist() == [5.0, 53.0, 532.0, 5320.0]


def test_short_conv_state_bytes_snapshot_and_flops():
    cfg = cfg_of("attn.short_conv=3")
    model = conv_model()
    # L · (Hkv · (F·D + F) + (K - 1) · (H + 2·Hkv)·D) · 4, F = D = 8, H = Hkv = 4, K = 3
    assert recurrent_state_bytes(cfg) == 2 * (4 * (8 * 8 + 8) + 2 * 96) * 4 == model.init_cache(1, 16).nbytes()
    cache = model.init_cache(1, 40)
    idx = torch.randint(0, 40, (1, 12))
    with torch.no_grad():
        model(idx, cache)
        snap = cache.snapshot()
        a = model(idx[:, :1], cache)
        cache.restore(snap)
        b = model(idx[:, :1], cache)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    extra = 2 * 2 * 3 * 96  # L · 2 · K · (H + 2·Hkv)·D per token
    assert flops_per_token_decode(cfg, 2048, 16) - flops_per_token_decode(cfg_of(), 2048, 16) == extra
    assert flops_per_token_fwd(cfg, 64) - flops_per_token_fwd(cfg_of(), 64) == extra
    from torch.utils.flop_counter import FlopCounterMode

    counted = []
    for m in (model, build_model(cfg_of()).eval()):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(torch.randint(0, 40, (2, 16)))
        counted.append(fc.get_total_flops())
    assert counted[0] - counted[1] == 2 * 16 * extra  # torch counts the convolution as the formula does


@pytest.mark.parametrize("value, message", [
    ("1", "attn.short_conv=1: must be null (none) or an integer >= 2"),
    ("0", "attn.short_conv=0: must be null (none) or an integer >= 2"),
    ("true", "attn.short_conv: Value 'True' of type 'bool' could not be converted to Integer"),
])
def test_bad_short_conv_fails_with_one_line(value, message):
    with pytest.raises(ConfigError) as err:
        load_config([*BASE, f"attn.short_conv={value}"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
