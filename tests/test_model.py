"""Norms and FFNs against their formulas, and the GPT's structure: logits shape, tied
head, parameter accounting, KV bytes per token, pre/post placement, variant names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attnbench import ConfigError, build_model, load_config, variant_name
from attnbench.model import kv_cache_bytes_per_token, param_breakdown
from attnbench.model.ffn import GELUMLP, GeGLU, ReLU2MLP, SwiGLU, gated_hidden
from attnbench.registry import FFNS, NORMS

TINY = ["stages=[]", "device=cpu", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=64", "model.context_length=16", "attn.impl=manual"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- norms
def randomised(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    return norm


def test_rmsnorm_matches_its_formula():
    """y = x / sqrt(mean(x²) + eps) · g (Zhang & Sennrich 2019): no centring, no bias."""
    norm = randomised(NORMS.get("rmsnorm")(16, 1e-5))
    x = torch.randn(3, 5, 16) * 4 + 2
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), want, atol=1e-5, rtol=1e-5)
    assert n_params(norm) == 16


def test_layernorm_matches_its_formula():
    """y = (x - mean) / sqrt(var + eps) · g + b, with the biased variance (Ba et al. 2016)."""
    norm = randomised(NORMS.get("layernorm")(16, 1e-5))
    x = torch.randn(3, 5, 16) * 4 + 2
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), want, atol=1e-5, rtol=1e-5)
    assert n_params(norm) == 32


def test_norm_eps_comes_from_the_config():
    model = build_model(load_config([*TINY, "norm=rmsnorm", "norm.eps=0.125"]))
    assert model.blocks[0].norm1.eps == 0.125 and model.norm_f.eps == 0.125


# ----------------------------------------------------------------------------- FFNs
@pytest.mark.parametrize("d", [768, 1024])
@pytest.mark.parametrize("gated", [SwiGLU, GeGLU])
def test_gated_ffn_params_match_the_gelu_mlp_within_2_percent(d, gated):
    plain, glu = n_params(GELUMLP(d)), n_params(gated(d))
    assert abs(glu - plain) / plain < 0.02, (glu, plain)


def test_gated_hidden_size_rule():
    assert gated_hidden(768, 4.0, 64) == 2048  # 2/3 · 4 · 768 = 2048 exactly
    assert gated_hidden(1024, 4.0, 64) == 2752  # 2730.7 rounded up to a multiple of 64
    assert gated_hidden(64, 4.0, 64) == 192  # 170.7 -> 192
    assert gated_hidden(64, 4.0, 1) == 171


def test_at_tiny_width_rounding_to_64_breaks_the_match_and_multiple_of_restores_it():
    """d=64: the 2/3 rule gives 170.7, rounded up to 192 (+12% parameters); ffn.multiple_of=1 gives 171."""
    plain = n_params(GELUMLP(64))
    assert n_params(SwiGLU(64)) / plain > 1.10
    assert abs(n_params(SwiGLU(64, multiple_of=1)) - plain) / plain < 0.02
    model = build_model(load_config([*TINY, "model.d_model=64", "ffn=swiglu", "ffn.multiple_of=1"]))
    assert model.blocks[0].ffn.up.out_features == 171


def test_ffn_activations():
    x = torch.randn(4, 8)
    relu2 = ReLU2MLP(8)
    torch.testing.assert_close(relu2.act(x), torch.relu(x) ** 2)
    swiglu = SwiGLU(8, multiple_of=8)
    want = swiglu.down(nn.functional.silu(swiglu.gate(x)) * swiglu.up(x))
    torch.testing.assert_close(swiglu(x), want)
    assert swiglu.up.bias is None and GELUMLP(8).up.bias is not None  # LLaMA vs GPT-2 conventions


def test_ffn_mult_comes_from_the_config():
    model = build_model(load_config([*TINY, "ffn=relu2", "ffn.mult=2"]))
    assert model.blocks[0].ffn.up.out_features == 64
    assert set(FFNS.names()) == {"gelu", "relu2", "swiglu", "geglu", "none"}  # none: attention-only blocks


# ----------------------------------------------------------------------------- GPT
def test_logits_shape_and_tied_head():
    model = build_model(load_config(TINY))
    assert model(torch.zeros(3, 7, dtype=torch.long)).shape == (3, 7, 64)
    assert model.lm_head.weight is model.wte.weight
    untied = build_model(load_config([*TINY, "model.tie_embeddings=false"]))
    assert untied.lm_head.weight is not untied.wte.weight
    assert n_params(untied) == n_params(model) + 64 * 32


def test_param_breakdown_adds_up():
    model = build_model(load_config([*TINY, "attn=gqa", "attn.n_kv_heads=2", "pos=learned", "ffn=swiglu"]))
    parts = param_breakdown(model)
    assert parts["total"] == n_params(model)  # tied weights counted once
    assert parts["embedding"] == 64 * 32 + 16 * 32  # wte + wpe
    head_dim = 8
    qkv = 32 * (4 + 2 * 2) * head_dim
    assert parts["attention"] == 2 * (qkv + 32 * 32 + 32)
    assert parts["non_embedding"] == parts["total"] - parts["embedding"]


@pytest.mark.parametrize("layout,n_kv", [("attn=mha", 4), ("attn=mqa", 1)])
def test_kv_cache_bytes_per_token(layout, n_kv):
    cfg = load_config([*TINY, layout])
    assert kv_cache_bytes_per_token(cfg) == 2 * 2 * n_kv * 8 * 4  # k,v · layers · heads · head_dim · fp32
    cache = build_model(cfg).init_cache(batch_size=1, max_len=10)
    assert cache.nbytes() == 10 * kv_cache_bytes_per_token(cfg)


def test_post_norm_has_no_final_norm_and_differs_from_pre():
    pre = build_model(load_config(TINY))
    post = build_model(load_config([*TINY, "norm.placement=post"]))
    assert isinstance(post.norm_f, nn.Identity) and isinstance(pre.norm_f, nn.LayerNorm)
    post.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith("norm_f")})
    idx = torch.randint(0, 64, (1, 6))
    assert not torch.allclose(pre(idx), post(idx))


def test_residual_projections_get_the_scaled_init():
    for init in (0.02, 0.05):
        model = build_model(load_config([*TINY, "model.d_model=256", "model.n_layers=8", f"model.init_std={init}"]))
        std = init / (2 * 8) ** 0.5
        assert model.blocks[0].attn.out.weight.std().item() == pytest.approx(std, rel=0.05)
        assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(init, rel=0.05)
        assert model.wte.weight.std().item() == pytest.approx(init, rel=0.05)


def test_build_is_seeded():
    a, b = build_model(load_config(TINY)), build_model(load_config(TINY))
    c = build_model(load_config([*TINY, "seed=1"]))
    assert torch.equal(a.wte.weight, b.wte.weight) and not torch.equal(a.wte.weight, c.wte.weight)


def test_variant_name():
    cfg = load_config([*TINY, "attn=gqa", "pos=alibi", "norm=rmsnorm", "ffn=swiglu",
                       "model.n_layers=4", "model.d_model=256"])
    assert variant_name(cfg) == "gqa-alibi-rmsnorm-swiglu-L4-D256"
    assert variant_name(load_config([*TINY, "norm.placement=post"])) == "mha-learned-layernorm_post-gelu-L2-D32"


# ----------------------------------------------------------------------------- pinned formulas (issue 10.6)
def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / 2**0.5))  # x·Φ(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))  # GPT-2's gelu_new


@pytest.mark.parametrize("ffn", ["gelu", "geglu"])
def test_gelu_is_exact_by_default_and_tanh_on_request(ffn):
    x = torch.linspace(-6, 6, 1001)
    assert (gelu_exact(x) - gelu_tanh(x)).abs().max() > 1e-4  # the two are distinguishable here
    exact = build_model(load_config([*TINY, f"ffn={ffn}"])).blocks[0].ffn
    tanh = build_model(load_config([*TINY, f"ffn={ffn}", "ffn.approximate=tanh"])).blocks[0].ffn
    torch.testing.assert_close(exact.act(x), gelu_exact(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(tanh.act(x), gelu_tanh(x), atol=1e-6, rtol=1e-6)


def test_gpt2_small_preset_uses_the_tanh_gelu_and_others_the_exact_one():
    assert load_config(["stages=[]", "model=gpt2_small"]).ffn.approximate == "tanh"
    assert load_config(["stages=[]", "model=gpt2_small", "ffn.approximate=none"]).ffn.approximate == "none"
    for preset in ("tiny", "small", "deep_narrow", "shallow_wide"):
        assert load_config(["stages=[]", f"model={preset}"]).ffn.approximate == "none"


def test_bad_gelu_approximation_is_one_line():
    with pytest.raises(ConfigError, match=r"^ffn.approximate=fast: not allowed; choose from \[none, tanh\]$"):
        load_config([*TINY, "ffn.approximate=fast"])


def layer_norm_by_hand(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_is_the_exact_residual_formula(placement):
    """post: y = LN2(h + FFN(h)), h = LN1(x + Attn(x)) (Vaswani et al.); pre: h = x + Attn(LN1(x)),
    y = h + FFN(LN2(h)) (GPT-2). Norms computed by hand, with non-trivial gains and biases."""
    from attnbench.model.attention import AttnContext
    from attnbench.model.kernels import MaskSpec

    model = build_model(load_config([*TINY, f"norm.placement={placement}"]))
    block = model.blocks[0]
    randomised(block.norm1), randomised(block.norm2)
    x = torch.randn(2, 6, 32)
    ctx = AttnContext(spec=MaskSpec())
    with torch.no_grad():
        if placement == "post":
            h = layer_norm_by_hand(x + block.attn(x, ctx), block.norm1)
            want = layer_norm_by_hand(h + block.ffn(h), block.norm2)
        else:
            h = x + block.attn(layer_norm_by_hand(x, block.norm1), ctx)
            want = h + block.ffn(layer_norm_by_hand(h, block.norm2))
        torch.testing.assert_close(block(x, ctx), want, atol=1e-5, rtol=1e-5)


def test_every_bias_is_zero_and_every_gain_one_at_init():
    model = build_model(load_config([*TINY, "attn.qkv_bias=true"]))
    biases = {n: p for n, p in model.named_parameters() if n.endswith(".bias")}
    # qkv, out, ffn up/down per layer; two norms per layer and the final norm
    assert len(biases) == 2 * 4 + 2 * 2 + 1, sorted(biases)
    assert all(torch.all(p == 0) for p in biases.values()), [n for n, p in biases.items() if p.any()]
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 5 and all(torch.all(m.weight == 1) for m in norms)


# ----------------------------------------------------------------------------- model.bias (issue 10.7)
def test_model_bias_false_leaves_no_bias_anywhere():
    """nanoGPT's bias=False: no bias in any Linear or LayerNorm (nn.LayerNorm(bias=False))."""
    # attn=mla takes no bias flag: its projections lose their biases in GPT's post-pass
    for extra in ([], ["ffn=swiglu"], ["ffn=relu2", "norm.placement=post"], ["attn=mla"], ["norm.qk_norm=true"]):
        model = build_model(load_config([*TINY, "model.bias=false", *extra]))
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))]
        assert layers and all(m.bias is None for m in layers), extra
        assert not [n for n, _ in model.named_parameters() if "bias" in n]
    with_bias, without = build_model(load_config(TINY)), build_model(load_config([*TINY, "model.bias=false"]))
    d, L = 32, 2
    assert n_params(with_bias) - n_params(without) == L * (d + 4 * d + d) + L * 2 * d + d  # out, up, down; norms
    idx = torch.randint(0, 64, (2, 5))
    without.load_state_dict({k: v for k, v in with_bias.state_dict().items() if not k.endswith(".bias")})
    torch.testing.assert_close(without(idx), with_bias(idx))  # zero biases at init: the same function


def test_model_bias_false_with_a_qkv_bias_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^attn.qkv_bias=true: not with model.bias=false .*; set attn.qkv_bias=false or model.bias=true$"):
        load_config([*TINY, "model.bias=false", "attn.qkv_bias=true"])


# ----------------------------------------------------------------------------- model.init_std=null (issue 10.8)
def test_init_std_null_follows_the_width():
    from attnbench.bench.figures import model_figures
    from attnbench.config.spec import resolve_init_std as resolved_init_std

    tiny = load_config(["stages=[]", "model=tiny"])
    assert tiny.model.init_std is None and resolved_init_std(tiny) == 0.125  # the preset's old 0.125 at d=64
    wide = load_config(["stages=[]", "model=tiny", "model.d_model=256", "model.n_layers=8"])
    assert resolved_init_std(wide) == 1 / 16
    model = build_model(wide)
    assert model.wte.weight.std().item() == pytest.approx(1 / 16, rel=0.05)
    assert model.blocks[0].attn.out.weight.std().item() == pytest.approx(1 / 16 / 4, rel=0.05)  # / sqrt(2·8)
    assert model_figures(wide, model)["init_std"] == 1 / 16  # results.json model.init_std
    explicit = load_config(["stages=[]", "model=tiny", "model.d_model=256", "model.init_std=0.02"])
    assert resolved_init_std(explicit) == 0.02


@pytest.mark.parametrize("value", ["0", "-0.1"])
def test_init_std_must_be_positive_or_null(value):
    with pytest.raises(ConfigError, match=rf"^model.init_std={float(value)}: must be > 0 \(or null = 1/sqrt\(model.d_model\)\)$"):
        load_config([*TINY, f"model.init_std={value}"])
