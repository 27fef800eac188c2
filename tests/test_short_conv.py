"""attn.short_conv on softmax attention (attn=mha, gqa, mqa, local; model/short_conv.py): it starts as
the identity, cached decoding (its last inputs in the KV cache) equals the full pass, the parameter,
state-byte and FLOP counts include it, and it is refused in one line where it cannot apply."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from attnbench import ConfigError, build_model, load_config
from attnbench.bench.flops import flops_per_token_decode, flops_per_token_fwd
from attnbench.config.spec import resolve_spec
from attnbench.model import param_breakdown, recurrent_state_bytes
from attnbench.model.size import count_params
from decoding import assert_causal, with_random_convs
from hf_llama import cached_logits

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["stages=[]", "device=cpu", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=40", "model.context_length=64"]
GQA = ("attn=gqa", "attn.n_kv_heads=2")


@lru_cache(maxsize=None)
def cfg_of(*overrides: str):
    return load_config([*BASE, *overrides])


def conv_model(*overrides: str):
    """A model with attn.short_conv=3 whose convolutions are random."""
    return with_random_convs(build_model(cfg_of("attn.short_conv=3", *overrides)))


@pytest.mark.parametrize("attn", [("attn=mha",), GQA], ids=["mha", "gqa"])
def test_starts_as_attention_without_it(attn):
    plain, conv = build_model(cfg_of(*attn)), build_model(cfg_of(*attn, "attn.short_conv=4"))
    conv.load_state_dict(plain.state_dict(), strict=False)  # the same weights, the conv at its init
    idx = torch.randint(0, 40, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(conv(idx), plain(idx), rtol=1e-5, atol=1e-5)  # conv1d sums in its own order


@pytest.mark.parametrize("attn", [("attn=mha",), (*GQA, "pos=rope"), ("attn=mqa", "pos=learned")],
                         ids=["mha", "gqa-rope", "mqa-learned"])
def test_cached_decoding_equals_the_full_pass_and_is_causal(attn):
    model = conv_model(*attn)
    idx = torch.randint(0, 40, (2, 30))
    with torch.no_grad():
        full = model(idx)
        torch.testing.assert_close(cached_logits(model, idx, 19), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cached_logits(model, idx, 1), full, atol=1e-5, rtol=1e-5)
    assert_causal(model, idx[:1, :20], 13, 40)


def test_without_the_conv_state_in_the_cache_decoding_would_differ():
    """The conv's last inputs must be carried: zeroing them between steps changes the logits."""
    model = conv_model()
    idx = torch.randint(0, 40, (1, 12))
    cache = model.init_cache(1, 12)
    with torch.no_grad():
        model(idx[:, :11], cache)
        cache.conv.zero_()
        assert not torch.allclose(model(idx[:, 11:], cache)[:, -1], model(idx)[:, -1], atol=1e-3)


def test_snapshot_restores_the_conv_state():
    model = conv_model(*GQA)
    cache = model.init_cache(1, 40)
    idx = torch.randint(0, 40, (1, 12))
    with torch.no_grad():
        model(idx, cache)
        snap = cache.snapshot()
        a = model(idx[:, :1], cache)
        model(idx[:, 1:3], cache)
        cache.restore(snap)
        b = model(idx[:, :1], cache)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("attn", [("attn=mha",), GQA], ids=["mha", "gqa"])
def test_params_state_bytes_and_flops_count_it(attn):
    cfg, plain = cfg_of(*attn, "attn.short_conv=3"), cfg_of(*attn)
    H, Hkv, D, L, K = 4, (2 if attn == GQA else 4), 8, 2, 3
    channels = (H + 2 * Hkv) * D
    model = conv_model(*attn)
    conv_params = L * K * channels
    assert sum(p.numel() for p in model.parameters()) == count_params(resolve_spec(cfg)) \
        == count_params(resolve_spec(plain)) + conv_params
    assert param_breakdown(model)["attention"] == param_breakdown(build_model(plain))["attention"] + conv_params
    state = L * (K - 1) * channels * 4  # fp32: the last K - 1 projections per layer
    assert recurrent_state_bytes(cfg) == state and recurrent_state_bytes(plain) == 0
    assert model.init_cache(1, 16).nbytes() == build_model(plain).init_cache(1, 16).nbytes() + state
    extra = L * 2 * K * channels  # per token
    assert flops_per_token_fwd(cfg, 64) - flops_per_token_fwd(plain, 64) == extra
    assert flops_per_token_decode(cfg, 100, 8) - flops_per_token_decode(plain, 100, 8) == extra
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randint(0, 40, (2, 16)))
    conv = sum(n for op, n in fc.get_flop_counts()["Global"].items() if "convolution" in str(op))
    assert conv == 2 * 16 * extra  # torch counts the convolutions as the formula does (B = 2, T = 16)


@pytest.mark.parametrize("overrides, message", [
    (("attn=diff", "attn.short_conv=3"), "attn.short_conv=3: not with attn=diff (its module projects q, k, v its own way)"),
    (("attn=mla", "attn.short_conv=3"), "attn.short_conv=3: not with attn=mla"),
    (("attn=mha", "attn.impl=torch_mha", "attn.short_conv=3"), "attn.short_conv=3: not with attn.impl=torch_mha"),
    (("attn=mha", "attn.short_conv=1"), "attn.short_conv=1: must be null (none) or an integer >= 2"),
    ((*GQA, "attn.short_conv=0"), "attn.short_conv=0: must be null (none) or an integer >= 2"),
])
def test_refused_in_one_line_where_it_cannot_apply(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config([*BASE, *overrides])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
