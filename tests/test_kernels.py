"""Every kernel matches the `manual` reference (fp32, 1e-5) wherever it declares support,
and every combination it declares unsupported is rejected by validate() before building.

Two levels: the kernel functions on random q/k/v (including chunks after a KV cache,
where T != S), and whole models with the same weights (build with impl=manual, load the
state_dict into impl=X, compare logits)."""
from __future__ import annotations

import functools
import itertools

import pytest
import torch
from omegaconf import OmegaConf

from attnbench import ConfigError, build_model, load_config, validate
from attnbench.model.kernels import MaskSpec, get_kernel, manual_attention
from attnbench.model.position import ALiBi
from attnbench.config.validate import kernel_requirements
from attnbench.registry import KERNELS

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
TOL = dict(atol=1e-5, rtol=1e-5)
POS = ("none", "learned", "sinusoidal", "rope", "alibi")
LAYOUTS = {"mha": ["attn=mha"], "gqa": ["attn=gqa", "attn.n_kv_heads=2"], "mqa": ["attn=mqa"]}
WINDOWS = (None, 3)
TINY = ["stages=[]", "device=cpu", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=64", "model.context_length=32"]
CPU_KERNELS = [k for k in KERNELS.names() if "cpu" in KERNELS.get(k).devices]
OTHERS = [k for k in CPU_KERNELS if k != "manual"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@functools.lru_cache(maxsize=None)  # composing costs ~50 ms; callers never mutate the result
def base_cfg(pos: str, layout: str, window: int | None):
    win = [f"attn.window={window}"] if window is not None else []
    return load_config([*TINY, f"pos={pos}", *LAYOUTS[layout], *win, "attn.impl=manual"])


def with_impl(cfg, impl: str):
    c = OmegaConf.create(OmegaConf.to_container(cfg))  # a plain copy; impl is the only change
    c.attn.impl = impl
    return c


def supported(cfg, impl: str) -> bool:
    try:
        validate(with_impl(cfg, impl))
        return True
    except ConfigError as exc:
        assert str(exc).startswith(f"attn.impl={impl}: "), exc
        return False


def test_the_cpu_kernel_list_is_what_this_file_assumes():
    assert set(CPU_KERNELS) == {"manual", "sdpa", "sdpa_math", "sdpa_flash", "wrapper", "torch_mha", "flex"}


@pytest.mark.parametrize("impl", OTHERS)
def test_model_logits_match_manual_for_every_supported_combination(impl):
    idx = torch.randint(0, 64, (2, 12))
    served = 0
    for pos, layout, window in itertools.product(POS, LAYOUTS, WINDOWS):
        cfg = base_cfg(pos, layout, window)
        if not supported(cfg, impl):
            continue
        served += 1
        ref = build_model(cfg).eval()
        model = build_model(with_impl(cfg, impl)).eval()
        model.load_state_dict(ref.state_dict())
        with torch.no_grad():  # flex has no backward on CPU; the others are compared without grad too
            torch.testing.assert_close(model(idx), ref(idx), **TOL, msg=lambda m: f"{impl} {pos} {layout} w={window}: {m}")
    assert served > 0


# What each kernel cannot serve on CPU, from its capability flags: (pos, layout, window) -> rejected?
EXPECTED_REJECTIONS = {
    "sdpa_flash": lambda pos, layout, window: pos == "alibi",  # no float bias
    "torch_mha": lambda pos, layout, window: pos == "rope" or layout != "mha",  # projects itself
}


@pytest.mark.parametrize("impl", OTHERS)
def test_validate_rejects_exactly_the_declared_combinations(impl):
    rule = EXPECTED_REJECTIONS.get(impl, lambda *a: False)
    for pos, layout, window in itertools.product(POS, LAYOUTS, WINDOWS):
        cfg = base_cfg(pos, layout, window)
        assert supported(cfg, impl) != rule(pos, layout, window), (impl, pos, layout, window)


def test_rejected_combinations_fail_in_load_config_with_the_reason():
    with pytest.raises(ConfigError, match=r"^attn.impl=sdpa_flash: cannot add an attention bias, so not pos=alibi$"):
        load_config([*TINY, "pos=alibi", "attn.impl=sdpa_flash"])
    with pytest.raises(ConfigError, match=r"^attn.impl=torch_mha: needs n_kv_heads = n_heads, so not attn=gqa$"):
        load_config([*TINY, "attn=gqa", "attn.impl=torch_mha"])
    with pytest.raises(ConfigError, match=r"^attn.impl=torch_mha: cannot rotate q/k .* so not pos=rope$"):
        load_config([*TINY, "pos=rope", "attn.impl=torch_mha"])
    with pytest.raises(ConfigError, match=r"^attn.impl=torch_mha: has no KV cache"):
        load_config([*TINY, "stages=[bench]", "bench.modes=[decode]", "attn.impl=torch_mha"])
    with pytest.raises(ConfigError, match=r"^attn.impl=flex: has no backward on cpu"):
        load_config([*TINY, "stages=[train]", "device=cpu", "attn.impl=flex"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only rejection")
def test_sdpa_efficient_is_cuda_only():
    assert "cpu" not in KERNELS.get("sdpa_efficient").devices
    with pytest.raises(ConfigError, match=r"^attn.impl=sdpa_efficient: not available on cpu"):
        load_config([*TINY, "attn.impl=sdpa_efficient"])


# ----------------------------------------------------------------------------- kernel functions
def qkv(B: int, H: int, Hkv: int, T: int, S: int, D: int = 8):
    g = torch.Generator().manual_seed(T * 100 + S)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, Hkv, S, D, generator=g),
            torch.randn(B, Hkv, S, D, generator=g))


# (T, S, q_offset): a full sequence, a chunk after a cache, one decode step.
SHAPES = [(10, 10, 0), (4, 10, 6), (1, 10, 9)]
FUNCTION_KERNELS = [k for k in OTHERS if not KERNELS.get(k).owns_projection]  # torch_mha: model level only


@pytest.mark.parametrize("impl", FUNCTION_KERNELS)
@pytest.mark.parametrize("T,S,off", SHAPES)
def test_kernel_function_matches_manual(impl, T, S, off):
    kernel = get_kernel(impl)
    for Hkv, window, with_bias in itertools.product((4, 2, 1), WINDOWS, (False, True)):
        if with_bias and not kernel.supports_bias:
            continue
        q, k, v = qkv(2, 4, Hkv, T, S)
        spec = MaskSpec(causal=True, window=window, q_offset=off)
        bias = ALiBi(32, 4, 64).bias(torch.arange(off, off + T), S) if with_bias else None  # (H, T, S)
        ref = manual_attention(q, k, v, spec=spec, bias=bias, scale=0.3)
        with torch.no_grad():
            out = kernel(q, k, v, spec=spec, bias=bias, scale=0.3)
        assert out.shape == (2, 4, T, 8)
        torch.testing.assert_close(out, ref, **TOL, msg=lambda m: f"{impl} Hkv={Hkv} w={window} bias={with_bias}: {m}")


def test_manual_is_softmax_of_scaled_scores():
    """The reference itself, against the formula written out for one head."""
    q, k, v = qkv(1, 1, 1, 5, 5)
    scores = (q[0, 0] @ k[0, 0].T) * 0.5 + torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)
    want = torch.softmax(scores, dim=-1) @ v[0, 0]
    got = manual_attention(q, k, v, spec=MaskSpec(), bias=None, scale=0.5)[0, 0]
    torch.testing.assert_close(got, want, **TOL)


def test_window_one_attends_only_to_itself():
    q, k, v = qkv(1, 2, 2, 6, 6)
    out = manual_attention(q, k, v, spec=MaskSpec(window=1), bias=None, scale=1.0)
    torch.testing.assert_close(out, v, **TOL)


@pytest.mark.parametrize("impl", CPU_KERNELS)
def test_attention_dropout_trains_or_is_rejected_up_front(impl):
    """Where validate() accepts attn.dropout > 0, the kernel applies it in training and not in eval."""
    for pos, layout in (("rope", "gqa"), ("alibi", "mha")):
        win = ["attn.window=3"] if pos == "rope" else []  # a window on a GQA layout
        overrides = [*TINY, f"pos={pos}", *LAYOUTS[layout], *win, f"attn.impl={impl}", "attn.dropout=0.5"]
        try:
            cfg = load_config(overrides)
        except ConfigError as exc:  # sdpa_flash on CPU, flex: no attention dropout
            assert impl in ("sdpa_flash", "flex") or (impl == "torch_mha" and (pos == "rope" or layout != "mha"))
            assert str(exc).startswith(f"attn.impl={impl}: "), exc
            continue
        model = build_model(cfg).train()
        idx = torch.randint(0, 64, (2, 12))
        a = model(idx)
        a.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        assert not torch.allclose(a, model(idx))  # dropout masks differ between calls
        with torch.no_grad():
            model.eval()
            torch.testing.assert_close(model(idx), model(idx))


# ----------------------------------------------------------------------------- bf16 (issue 10.5)
# Under bf16 autocast every kernel is compared with softmax(q kᵀ·scale + bias) v computed in float64
# from the same bf16 q, k, v. Stated tolerance: 0.03 absolute on outputs of RMS ~1 (|out| up to ~3,
# where one bf16 step is 2^-6): what rounding the softmax probabilities to bf16 before P·V and the
# output to bf16 cost. Measured: sdpa 0.008-0.010, manual/flex/wrapper 0.013-0.021; manual with
# its scores q kᵀ rounded to bf16 (before the fix) 0.064-0.090.
BF16_TOL = 0.03


def bf16_qkv(H: int, Hkv: int, T: int, D: int = 32):
    g = torch.Generator().manual_seed(7)
    q, k = (torch.randn(2, n, T, D, generator=g) * 2 for n in (H, Hkv))  # scores of O(10): rounding shows
    return q.bfloat16(), k.bfloat16(), torch.randn(2, Hkv, T, D, generator=g).bfloat16()


@pytest.mark.parametrize("impl", ["manual", *FUNCTION_KERNELS])
def test_kernels_agree_under_bf16_autocast(impl):
    kernel = get_kernel(impl)
    T, scale = 128, 32**-0.5
    for Hkv, window, with_bias in ((4, None, True), (2, None, False), (2, 16, True)):
        if with_bias and not kernel.supports_bias:
            continue
        q, k, v = bf16_qkv(4, Hkv, T)
        spec = MaskSpec(window=window)
        bias = ALiBi(128, 4, T).bias(torch.arange(T), T) if with_bias else None  # fp32 (H, T, S)
        ref = manual_attention(q.double(), k.double(), v.double(), spec=spec,
                               bias=bias.double() if with_bias else None, scale=scale)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = kernel(q, k, v, spec=spec, bias=bias, scale=scale)
        err = (out.double() - ref).abs().max().item()
        assert out.dtype == torch.bfloat16 and err < BF16_TOL, (impl, Hkv, window, with_bias, err)


def test_manual_computes_its_scores_in_fp32_under_autocast():
    """The reference's scores are not rounded to bf16: the same q, k give the fp32 result to fp32 precision
    before P is rounded for P·V."""
    q, k, v = bf16_qkv(4, 4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = manual_attention(q, k, torch.eye(64).expand(2, 4, 64, 64).bfloat16(), spec=MaskSpec(), bias=None,
                               scale=0.2)  # v = I: the output is the probability matrix itself
    want = manual_attention(q.float(), k.float(), torch.eye(64).expand(2, 4, 64, 64), spec=MaskSpec(), bias=None,
                            scale=0.2)
    torch.testing.assert_close(got.float(), want, atol=2**-8, rtol=2**-8)  # one bf16 rounding of P, nothing more


def test_bf16_model_logits_agree_between_kernels():
    """Whole models under bf16 autocast (GQA, ALiBi, a window): every CPU kernel within 0.05 of manual's logits."""
    cfg = base_cfg("alibi", "gqa", 3)
    ref = build_model(cfg).eval()
    idx = torch.randint(0, 64, (2, 24))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = ref(idx).float()
        for impl in OTHERS:
            if not supported(cfg, impl):
                continue
            model = build_model(with_impl(cfg, impl)).eval()
            model.load_state_dict(ref.state_dict())
            torch.testing.assert_close(model(idx).float(), want, atol=0.05, rtol=0.05, msg=lambda m: f"{impl}: {m}")


# ----------------------------------------------------------------------------- capability flags (issue 10.4)
def test_sdpa_efficient_declares_no_gqa():
    """torch 2.13: enable_gqa works only with the flash and math SDPA backends."""
    gqa, mqa, mha = (load_config([*TINY, *LAYOUTS[name]]) for name in ("gqa", "mqa", "mha"))
    eff = get_kernel("sdpa_efficient")
    assert eff.unsupported(kernel_requirements(gqa, "cuda")) == "needs n_kv_heads = n_heads, so not attn=gqa"
    assert eff.unsupported(kernel_requirements(mqa, "cuda")) == "needs n_kv_heads = n_heads, so not attn=mqa"
    assert eff.unsupported(kernel_requirements(mha, "cuda")) is None
    gqa_bf16 = load_config([*TINY, *LAYOUTS["gqa"], "device.dtype=bfloat16"])
    for impl in ("sdpa", "sdpa_flash", "sdpa_math"):
        assert get_kernel(impl).unsupported(kernel_requirements(gqa_bf16, "cuda")) is None, impl


def test_sdpa_flash_rejects_float32_on_cuda():
    """CUDA's FlashAttention takes only fp16/bf16: a float32 job is rejected up front, not at the first call."""
    fp32 = load_config([*TINY, *LAYOUTS["mha"]])
    msg = get_kernel("sdpa_flash").unsupported(kernel_requirements(fp32, "cuda"))
    assert msg == "runs only in float16/bfloat16 on cuda (set device.dtype=bfloat16)"
    assert get_kernel("sdpa_flash").unsupported(kernel_requirements(fp32, "cpu")) is None
