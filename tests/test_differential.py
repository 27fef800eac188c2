"""attn=diff (Differential Transformer, Ye et al. 2024): the module equals a plain, written-out
implementation of the paper's formula with the same weights (two maps, λ re-parameterised, per-head
RMSNorm, the (1 − λ_init) scale); full = cached logits; λ_init schedule; sizes, FLOPs; errors."""
from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
from torch import nn

from attnbench import ConfigError, build_model, load_config
from attnbench.bench.flops import flops_per_token_fwd
from attnbench.model import kv_cache_bytes_per_token, recurrent_state_bytes
from attnbench.model.attention import AttnContext, KVCache, max_attention_logit
from decoding import assert_causal
from hf_llama import cached_logits
from attnbench.model.differential import DifferentialAttention, paper_lambda_init
from attnbench.model.kernels import MaskSpec, get_kernel
from attnbench.model.position import RoPE

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["stages=[]", "device=cpu", "attn=diff", "model.d_model=64", "attn.n_heads=4", "model.n_layers=3",
        "model.vocab_size=50", "model.context_length=64"]


@lru_cache(maxsize=None)
def cfg_of(*overrides: str):
    return load_config([*BASE, *overrides])


def randomise(module: nn.Module, seed: int = 1) -> None:
    """λ vectors large enough that λ ≠ λ_init, RMSNorm gains ≠ 1: a wrong λ or norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("lambda_"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("subln.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


def rope_half(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate-half RoPE of x (T, d), written out."""
    d = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, d, 2).float() / d)
    ang = pos[:, None].float() * inv[None, :]  # (T, d/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def paper_diff_attention(attn: DifferentialAttention, x: torch.Tensor, rope: bool = False) -> torch.Tensor:
    """Ye et al. 2024, eq. 1-3, head by head with explicit softmaxes; x (T, C) one sequence, causal."""
    T, C = x.shape
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    d = D // 2
    W, b = attn.qkv.weight, attn.qkv.bias
    proj = x @ W.T + (b if b is not None else 0)
    Q, K, V = proj.split([H * D, Hkv * D, Hkv * D], dim=-1)
    mask = torch.full((T, T), float("-inf")).triu(1)
    lam = (math.exp(float(attn.lambda_q1 @ attn.lambda_k1)) - math.exp(float(attn.lambda_q2 @ attn.lambda_k2))
           + attn.lambda_init)
    heads = []
    pos = torch.arange(T)
    for h in range(H):
        g = h // (H // Hkv)  # its KV head
        q, k, v = Q[:, h * D:(h + 1) * D], K[:, g * D:(g + 1) * D], V[:, g * D:(g + 1) * D]
        q1, q2, k1, k2 = q[:, :d], q[:, d:], k[:, :d], k[:, d:]
        if rope:
            q1, q2, k1, k2 = (rope_half(t, pos) for t in (q1, q2, k1, k2))
        a1 = torch.softmax(q1 @ k1.T / math.sqrt(d) + mask, dim=-1)
        a2 = torch.softmax(q2 @ k2.T / math.sqrt(d) + mask, dim=-1)
        o = (a1 - lam * a2) @ v  # (T, D)
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + attn.subln.eps) * attn.subln.weight  # RMSNorm
        heads.append(o * (1 - attn.lambda_init))
    y = torch.cat(heads, dim=-1)
    return y @ attn.out.weight.T + (attn.out.bias if attn.out.bias is not None else 0)


@pytest.mark.parametrize("impl", ["manual", "sdpa", "sdpa_math", "sdpa_flash", "wrapper", "flex"])
@pytest.mark.parametrize("n_kv, rope", [(4, False), (2, True)])
def test_module_equals_the_written_out_paper_formula(impl, n_kv, rope):
    torch.manual_seed(0)
    attn = DifferentialAttention(64, 4, n_kv, get_kernel(impl), lambda_init=paper_lambda_init(2), qkv_bias=True)
    randomise(attn)
    x = torch.randn(2, 11, 64)
    rot = RoPE(64, 4, 64, head_dim=8).rotary(torch.arange(11)) if rope else None
    with torch.no_grad():
        got = attn(x, AttnContext(spec=MaskSpec(), rot=rot))
        want = torch.stack([paper_diff_attention(attn, x[i], rope) for i in range(2)])
    assert attn.lam().item() != pytest.approx(attn.lambda_init, abs=1e-3)  # the λ path is exercised
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_lambda_init_follows_the_papers_depth_schedule_or_a_constant():
    model = build_model(cfg_of())
    assert [b.attn.lambda_init for b in model.blocks] == pytest.approx(
        [0.8 - 0.6 * math.exp(-0.3 * (layer - 1)) for layer in (1, 2, 3)])
    assert paper_lambda_init(0) == pytest.approx(0.2)
    const = build_model(cfg_of("attn.lambda_init=0.5"))
    assert [b.attn.lambda_init for b in const.blocks] == [0.5, 0.5, 0.5]
    a = model.blocks[0].attn  # λ vectors start N(0, 0.1), so λ starts near λ_init
    assert a.lambda_q1.shape == (8,) and abs(a.lam().item() - a.lambda_init) < 0.2


@pytest.mark.parametrize("overrides", [(), ("pos=rope", "attn.n_kv_heads=2"), ("pos=alibi", "attn.impl=manual"),
                                       ("attn.window=5", "pos=rope")])
def test_cached_decoding_equals_the_full_pass(overrides):
    model = build_model(cfg_of(*overrides)).eval()
    randomise(model)
    idx = torch.randint(0, 50, (2, 20))
    assert isinstance(model.init_cache(2, 20), KVCache)
    with torch.no_grad():
        torch.testing.assert_close(cached_logits(model, idx, 13), model(idx), atol=1e-5, rtol=1e-5)


def test_a_future_token_changes_no_earlier_logit():
    assert_causal(build_model(cfg_of("pos=rope")).eval(), torch.randint(0, 50, (1, 12)), 8, 50)


def test_sizes_kv_bytes_and_flops_against_mha():
    diff, mha = build_model(cfg_of()), build_model(cfg_of("attn=mha"))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(diff) - n(mha) == 3 * (4 * 8 + 16)  # per layer: λ_q1, λ_k1, λ_q2, λ_k2 (d=8) and the RMSNorm gain (D=16)
    assert kv_cache_bytes_per_token(cfg_of()) == kv_cache_bytes_per_token(cfg_of("attn=mha")) == 2 * 3 * 64 * 4
    assert recurrent_state_bytes(cfg_of()) == 0
    T = 64
    extra = flops_per_token_fwd(cfg_of(), T) - flops_per_token_fwd(cfg_of("attn=mha"), T)
    assert extra == pytest.approx(3 * 2 * 2 * 4 * 16 * (T + 1) / 2)  # twice MHA's score + AV term


def test_trains_a_step_and_reports_its_max_logit():
    model = build_model(cfg_of("pos=rope")).train()
    idx = torch.randint(0, 50, (2, 9))
    model(idx).logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.blocks[0].attn.lambda_q1.grad.abs().sum() > 0
    assert max_attention_logit(model, idx) > 0


@pytest.mark.parametrize("overrides, message", [
    (("attn.n_heads=8", "model.d_model=40"), "attn=diff: head_dim=5 (model.d_model / attn.n_heads) must be even"),
    (("pos=rope", "model.d_model=24"), "pos=rope: attn=diff rotates each q/k half of head_dim/2=3 dims"),
    (("norm.qk_norm=true",), "norm.qk_norm=true: not with attn=diff"),
    (("attn.impl=torch_mha", "attn.n_kv_heads=4"), "attn.impl=torch_mha: runs its own projections, so not attn=diff"),
    (("attn.lambda_init=1.5",), "attn.lambda_init=1.5: must be in [0, 1)"),
    (("attn.gate=headwise",), "attn.gate=headwise: not with attn=diff"),
    (("attn.sinks=true",), "attn.sinks=true: not with attn=diff"),
    (("attn.feature_map=relu",), "attn.feature_map=relu: only used by attn=linear (got attn=diff)"),
])
def test_bad_diff_configs_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config([*BASE, *overrides])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_lambda_init_without_attn_diff_is_rejected():
    with pytest.raises(ConfigError, match=r"^attn\.lambda_init=0\.5: only used by attn=diff \(got attn=mha\)"):
        load_config(["stages=[]", "attn.lambda_init=0.5"])
