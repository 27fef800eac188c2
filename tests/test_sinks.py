"""attn.sinks: a learned sink logit per head in every softmax (gpt-oss). Checked against transformers'
gpt-oss with the same weights and sink parameters (full pass and cached, full and sliding-window
layers), and every kernel that declares `supports_sinks` against the manual reference, values and
gradients; kernels that cannot add the logit are rejected before anything is built."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from attnbench import ConfigError, build_model, load_config
from attnbench.bench.flops import flops_per_token_fwd
from attnbench.model import kv_cache_bytes_per_token
from attnbench.model.kernels import MaskSpec, get_kernel, manual_attention
from attnbench.model.position import ALiBi
from attnbench.registry import KERNELS

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["stages=[]", "device=cpu", "model.d_model=32", "model.n_layers=2", "attn.n_heads=4", "model.vocab_size=64",
        "model.context_length=64", "pos=rope"]
GPT_OSS = ["attn.sinks=true", "norm=rmsnorm", "attn.qkv_bias=true", "attn=gqa", "attn.n_kv_heads=2",
           "model.tie_embeddings=false", "norm.eps=1e-5"]
ATOL = 1e-4
CHUNKS = (7, 1, 5, 1, 10)  # uneven prefill + decode steps, longer than the windows below


class ZeroMLP(nn.Module):
    """gpt-oss's MLP is a mixture of experts attnbench does not build: both models get a zero MLP
    (attnbench: its down projection zeroed), so the comparison covers everything else."""

    def forward(self, h):
        return torch.zeros_like(h), None


def _perturbed(*overrides: str):
    cfg = load_config([*TINY, *overrides])
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every tensor away from its init (the sinks from 0)
            p.zero_() if ".ffn.down." in name else p.add_(0.3 * torch.randn(p.shape, generator=g))
    return cfg, model


def gpt_oss(cfg, model, layer_type: str):
    transformers = pytest.importorskip("transformers")
    m, a = cfg.model, cfg.attn
    H, Hkv, D = a.n_heads, model.n_kv_heads, model.head_dim
    conf = transformers.GptOssConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers, num_attention_heads=H,
        num_key_value_heads=Hkv, head_dim=D, intermediate_size=32, num_local_experts=2, num_experts_per_tok=1,
        layer_types=[layer_type] * m.n_layers, sliding_window=a.window or 128, attention_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.pos.base)}, rms_norm_eps=cfg.norm.eps,
        max_position_embeddings=m.context_length, tie_word_embeddings=False, attention_dropout=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    conf._attn_implementation = "eager"
    hf = transformers.GptOssForCausalLM(conf).eval()
    s = model.state_dict()
    out = {"model.embed_tokens.weight": s["wte.weight"], "model.norm.weight": s["norm_f.weight"],
           "lm_head.weight": s["lm_head.weight"]}
    for i in range(m.n_layers):
        hf.model.layers[i].mlp = ZeroMLP()
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = s[f"{b}attn.qkv.{kind}"].split([H * D, Hkv * D, Hkv * D], dim=0)
            out.update({f"{h}self_attn.q_proj.{kind}": q, f"{h}self_attn.k_proj.{kind}": k,
                        f"{h}self_attn.v_proj.{kind}": v, f"{h}self_attn.o_proj.{kind}": s[f"{b}attn.out.{kind}"]})
        out.update({h + "self_attn.sinks": s[b + "attn.sinks"], h + "input_layernorm.weight": s[b + "norm1.weight"],
                    h + "post_attention_layernorm.weight": s[b + "norm2.weight"]})
    hf.load_state_dict(out, strict=True)
    return hf


def _chunked(model, idx):
    cache = model.init_cache(idx.shape[0], idx.shape[1])
    out, start = [], 0
    for n in CHUNKS:
        out.append(model(idx[:, start : start + n], cache))
        start += n
    return torch.cat(out, dim=1)


def _hf_chunked(hf, idx):
    kw = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"  # transformers 5.x
    out, start, past = [], 0, None
    for n in CHUNKS:
        res = hf(idx[:, start : start + n], use_cache=True, **{kw: past})
        out.append(res.logits)
        past, start = getattr(res, kw), start + n
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("extra,layer_type", [
    ([], "full_attention"),
    (["attn.window=5"], "sliding_attention"),
    (["attn.window=5", "attn.impl=manual"], "sliding_attention"),
    (["attn=mha", "attn.n_kv_heads=null"], "full_attention"),
], ids=["gqa-full", "gqa-window5", "gqa-window5-manual", "mha-full"])
def test_sinks_match_transformers_gpt_oss(extra, layer_type):
    cfg, model = _perturbed(*GPT_OSS, *extra)
    hf = gpt_oss(cfg, model, layer_type)
    idx = torch.randint(0, 64, (2, sum(CHUNKS)), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(idx, use_cache=False).logits
        torch.testing.assert_close(model(idx), ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(_chunked(model, idx), ref, atol=ATOL, rtol=0)  # attnbench's KV cache
        torch.testing.assert_close(_hf_chunked(hf, idx), ref, atol=ATOL, rtol=0)  # HF's cache
        for block in model.blocks:  # the comparison sees the sinks: without them the logits differ
            block.attn.sinks = None
        assert (model(idx) - ref).abs().max() > 1e-2


SINK_KERNELS = sorted(n for n in KERNELS.names() if KERNELS.get(n).supports_sinks and "cpu" in KERNELS.get(n).devices)


@pytest.mark.parametrize("T,S,off,window", [(8, 8, 0, None), (3, 9, 6, None), (1, 9, 8, None), (8, 8, 0, 3),
                                             (3, 9, 6, 4), (1, 9, 8, 2)],
                         ids=["full", "chunk", "decode", "full-w3", "chunk-w4", "decode-w2"])
@pytest.mark.parametrize("Hkv", [4, 2])
def test_every_sink_kernel_matches_manual_values_and_gradients(T, S, off, window, Hkv):
    g = torch.Generator().manual_seed(T + S + Hkv)
    q = torch.randn(2, 4, T, 8, generator=g).requires_grad_()
    k, v = (torch.randn(2, Hkv, S, 8, generator=g).requires_grad_() for _ in range(2))
    sinks = torch.randn(4, generator=g).requires_grad_()
    spec = MaskSpec(q_offset=off, window=window)
    for bias in (None, ALiBi(32, 4, 0).bias(torch.arange(off, off + T), S)):
        ref = manual_attention(q, k, v, spec=spec, bias=bias, scale=8**-0.5, sinks=sinks)
        ref_grads = torch.autograd.grad(ref.square().sum(), [q, k, v, sinks])
        for impl in SINK_KERNELS:
            kernel = get_kernel(impl)
            if bias is not None and not kernel.supports_bias:
                continue
            out = kernel(q, k, v, spec=spec, bias=bias, scale=8**-0.5, sinks=sinks)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0, msg=impl)
            for got, want in zip(torch.autograd.grad(out.square().sum(), [q, k, v, sinks]), ref_grads):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=impl)


def test_manual_sinks_are_the_formula():
    """p_ij = exp(s_ij) / (exp(sink_h) + Σ_j exp(s_ij)), written out per head."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g) for _ in range(3))
    sinks = torch.tensor([1.5, -0.5])
    got = manual_attention(q, k, v, spec=MaskSpec(), bias=None, scale=0.5, sinks=sinks)
    for h in range(2):
        s = (q[0, h] @ k[0, h].T * 0.5).masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf")).exp()
        p = s / (s.sum(-1, keepdim=True) + sinks[h].exp())
        torch.testing.assert_close(got[0, h], p @ v[0, h], atol=1e-6, rtol=0)


def test_sink_parameters_flops_and_kv_bytes():
    base, cfg = load_config(TINY), load_config([*TINY, "attn.sinks=true"])
    model = build_model(cfg)
    assert model.blocks[0].attn.sinks.shape == (4,) and not model.blocks[0].attn.sinks.any()  # 0 at init
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in build_model(base).parameters()) == 2 * 4
    assert flops_per_token_fwd(cfg, 64) == flops_per_token_fwd(base, 64)  # O(H) per token, left out
    assert kv_cache_bytes_per_token(cfg) == kv_cache_bytes_per_token(base)  # nothing cached per token


def test_sinks_learn_in_a_train_step():
    model = build_model(load_config([*TINY, "attn.sinks=true"]))
    idx = torch.randint(0, 64, (2, 16))
    nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    assert all(b.attn.sinks.grad is not None and b.attn.sinks.grad.abs().sum() > 0 for b in model.blocks)


@pytest.mark.parametrize("overrides,message", [
    (["attn.impl=torch_mha", "pos=learned"], r"^attn.impl=torch_mha: cannot add a per-head sink logit, so not attn.sinks=true \(use attn.impl=manual, sdpa"),
    (["attn.impl=flex"], r"^attn.impl=flex: cannot add a per-head sink logit"),
    (["attn=mla"], r"^attn.sinks=true: not with attn=mla"),
])
def test_kernels_that_cannot_add_a_sink_are_rejected_up_front(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config([*TINY, "attn.sinks=true", *overrides])


def test_sdpa_flash_on_cuda_is_rejected_with_sinks():
    from attnbench.model.kernels import Requirements

    reason = get_kernel("sdpa_flash").unsupported(Requirements(device="cuda", sinks=True, dtype="bfloat16"))
    assert reason and "attn.sinks" in reason
    assert get_kernel("sdpa_flash").unsupported(Requirements(device="cpu", sinks=True)) is None


def test_sinks_window_preset_trains_dense_and_evaluates_through_a_window():
    from omegaconf import OmegaConf

    from attnbench.config.compose import conf_dir

    raw = OmegaConf.load(conf_dir() / "experiment" / "sinks_window.yaml")
    params = {k: [v.strip() for v in str(val).split(",")] for k, val in raw.hydra.sweeper.params.items()}
    assert params["attn.sinks"] == ["false", "true"] and params["seed"] == ["0", "1", "2"]
    for sinks in params["attn.sinks"]:
        for lr in params["train.lr"]:
            cfg = load_config(["experiment=sinks_window", f"attn.sinks={sinks}", f"train.lr={lr}", "logger=none"])
            assert cfg.attn.window is None and cfg.train.eval_window < cfg.train.seq_len
            assert min(cfg.train.eval_seq_lens) > cfg.train.eval_window  # every evaluation is past the window
