"""Attention behaviour at the model level, for every combination of head layout,
positional scheme, window, norm placement and kernel that validate() accepts:
causality, KV-cache decoding, and the layout facts (state_dicts move between kernels
and layouts; GQA with n_kv_heads = n_heads is MHA; a window >= T is full attention)."""
from __future__ import annotations

import functools
import itertools

import pytest
import torch
from omegaconf import OmegaConf

from attnbench import ConfigError, build_model, load_config, validate
from attnbench.registry import KERNELS

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
TOL = dict(atol=1e-5, rtol=1e-5)
POS = ("none", "learned", "sinusoidal", "rope", "alibi")
LAYOUTS = {"mha": ["attn=mha"], "gqa": ["attn=gqa", "attn.n_kv_heads=2"], "mqa": ["attn=mqa"]}
WINDOWS = (None, 3)
PLACEMENTS = ("pre", "post")
TINY = ["stages=[]", "device=cpu", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=64", "model.context_length=32"]
CPU_KERNELS = [k for k in KERNELS.names() if "cpu" in KERNELS.get(k).devices]
T = 10


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@functools.lru_cache(maxsize=None)
def base_cfg(pos: str, layout: str, window, placement: str = "pre", norm: str = "layernorm"):
    win = [f"attn.window={window}"] if window is not None else []
    return load_config([*TINY, f"pos={pos}", *LAYOUTS[layout], *win, f"norm={norm}",
                        f"norm.placement={placement}", "attn.impl=manual"])


def variant(cfg, **attn):
    c = OmegaConf.create(OmegaConf.to_container(cfg))
    for key, value in attn.items():
        c.attn[key] = value
    return c


def accepted(cfg) -> bool:
    try:
        validate(cfg)
        return True
    except ConfigError:
        return False


def combinations(kernels=CPU_KERNELS):
    """(label, cfg) for every combination on CPU that validate() accepts."""
    # rmsnorm with pre, layernorm with post: both norms and both placements appear.
    for pos, layout, window, placement in itertools.product(POS, LAYOUTS, WINDOWS, PLACEMENTS):
        norm = "rmsnorm" if placement == "pre" else "layernorm"
        base = base_cfg(pos, layout, window, placement, norm)
        for impl in kernels:
            cfg = variant(base, impl=impl)
            if accepted(cfg):
                yield f"{impl}-{pos}-{layout}-w{window}-{placement}", cfg


def tokens(B: int = 2, n: int = T, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (B, n), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("impl", CPU_KERNELS)
def test_causality_every_combination(impl):
    idx = tokens()
    n = 0
    for label, cfg in combinations([impl]):
        model = build_model(cfg).eval()
        t = 4
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + torch.arange(T - t - 1)) % 64  # every later token differs
        with torch.no_grad():
            a, b = model(torch.cat([idx, changed])).chunk(2)  # one batch: rows never see each other
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], **TOL, msg=lambda m: f"{label}: {m}")
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :]), f"{label}: later logits did not change at all"
        n += 1
    assert n >= 16, f"only {n} combinations ran for {impl}"  # torch_mha: 4 pos x mha x 2 windows x 2 norms


# ----------------------------------------------------------------------------- KV cache
CACHE_KERNELS = [k for k in CPU_KERNELS if KERNELS.get(k).supports_cache]


@pytest.mark.parametrize("impl", CACHE_KERNELS)
def test_kv_cache_decoding_reproduces_full_forward(impl):
    """Prefill 4 tokens, decode 3 one at a time, then a chunk of 3: the logits of the full pass."""
    idx = tokens()
    n = 0
    for label, cfg in combinations([impl]):
        model = build_model(cfg).eval()
        with torch.no_grad():
            full = model(idx)  # (B, T, V)
            cache = model.init_cache(batch_size=2, max_len=T)
            parts = [model(idx[:, :4], cache=cache)]
            parts += [model(idx[:, i : i + 1], cache=cache) for i in range(4, 7)]
            parts.append(model(idx[:, 7:], cache=cache))
        assert [p.shape[1] for p in parts] == [4, 1, 1, 1, 3]
        assert cache.pos == T
        torch.testing.assert_close(torch.cat(parts, dim=1), full, **TOL, msg=lambda m: f"{label}: {m}")
        n += 1
    assert n >= 20


@pytest.mark.parametrize("layout,n_kv", [("mha", 4), ("gqa", 2), ("mqa", 1)])
def test_cache_holds_only_the_kv_heads(layout, n_kv):
    model = build_model(base_cfg("rope", layout, None))
    cache = model.init_cache(batch_size=3, max_len=16)
    head_dim = 32 // 4
    assert cache.k.shape == cache.v.shape == (2, 3, n_kv, 16, head_dim)  # (L, B, Hkv, max_len, D)
    assert cache.nbytes() == 2 * 2 * 3 * n_kv * 16 * head_dim * 4
    with torch.no_grad():
        model(tokens(3, 5), cache=cache)
    assert cache.pos == 5 and cache.k[:, :, :, :5].abs().sum() > 0 and cache.k[:, :, :, 5:].abs().sum() == 0


def test_cache_overflow_and_uncached_kernels_raise():
    model = build_model(base_cfg("rope", "mha", None)).eval()
    cache = model.init_cache(batch_size=2, max_len=6)
    with torch.no_grad():
        model(tokens(2, 4), cache=cache)
        with pytest.raises(ValueError, match="KV cache full"):
            model(tokens(2, 3), cache=cache)
    mha = build_model(variant(base_cfg("none", "mha", None), impl="torch_mha"))
    with pytest.raises(ValueError, match="attn.impl=torch_mha has no KV cache"):
        mha.init_cache(batch_size=1, max_len=4)


# ----------------------------------------------------------------------------- layout facts
SWAPPABLE = [k for k in CPU_KERNELS if k == "manual" or k.startswith("sdpa") or k == "flex"]


@pytest.mark.parametrize("pos", ["alibi", "rope"])  # sdpa_flash takes no bias: rope covers it
def test_state_dict_moves_between_kernels(pos):
    cfg = base_cfg(pos, "gqa", 3)
    src = build_model(variant(cfg, impl="sdpa")).eval()
    idx = tokens()
    with torch.no_grad():
        want = src(idx)
    n = 0
    for impl in SWAPPABLE:
        if not accepted(variant(cfg, impl=impl)):
            continue
        dst = build_model(variant(cfg, impl=impl))
        dst.load_state_dict(src.state_dict(), strict=True)  # the same keys and shapes
        with torch.no_grad():
            torch.testing.assert_close(dst.eval()(idx), want, **TOL, msg=lambda m: f"{impl}: {m}")
        n += 1
    assert n == len(SWAPPABLE) - (pos == "alibi")


@pytest.mark.parametrize("pos", POS)
def test_gqa_with_all_heads_is_mha(pos):
    mha = build_model(base_cfg(pos, "mha", None)).eval()
    gqa = build_model(load_config([*TINY, f"pos={pos}", "attn=gqa", "attn.n_kv_heads=4", "attn.impl=manual"]))
    gqa.load_state_dict(mha.state_dict(), strict=True)
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(gqa.eval()(idx), mha(idx), **TOL)


@pytest.mark.parametrize("pos", POS)
def test_window_at_least_T_is_full_causal_attention(pos):
    mha = build_model(base_cfg(pos, "mha", None)).eval()
    idx = tokens()
    for window in (T, T + 5):
        local = build_model(load_config([*TINY, f"pos={pos}", "attn=local", f"attn.window={window}",
                                         "attn.impl=manual"]))
        local.load_state_dict(mha.state_dict(), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(local.eval()(idx), mha(idx), **TOL)
    small = build_model(load_config([*TINY, f"pos={pos}", "attn=local", "attn.window=2", "attn.impl=manual"]))
    small.load_state_dict(mha.state_dict())
    with torch.no_grad():  # and a window < T really is a different function
        assert not torch.allclose(small.eval()(idx), mha(idx), atol=1e-4)


def test_window_limits_what_a_query_can_see():
    """With window w, logits at t depend only on tokens t-w+1..t in a 1-layer model
    without absolute positions (deeper layers widen the receptive field)."""
    cfg = load_config([*TINY, "model.n_layers=1", "pos=rope", "attn=local", "attn.window=3", "attn.impl=manual"])
    model = build_model(cfg).eval()
    idx = tokens(1, T)
    changed = idx.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 64  # token 2 is visible from queries 2, 3, 4 only
    with torch.no_grad():
        a, b = model(idx), model(changed)
    diff = (a - b).abs().amax(dim=-1)[0]  # (T,)
    assert (diff[[2, 3, 4]] > 1e-6).all() and (diff[5:] == 0).all() and (diff[:2] == 0).all()
