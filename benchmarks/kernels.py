"""Attention kernels side by side, and what GQA/MQA buy at decode time.

1. Kernel table (after the textbook's efficient multi-head attention comparison):
   one causal self-attention layer (fused QKV + kernel + output projection, identical
   weights for every kernel) at batch 8, T=1024, d=768, 12 heads; forward (no_grad) and
   forward+backward; each kernel's median and its ratio to `sdpa`. flex runs compiled
   (torch.compile; the first call compiles, about 45 s on 2 cores, excluded as warm-up)
   and forward only on CPU (FlexAttention has no CPU backward).
2. Decode: per-token latency of greedy decoding after a T-token prompt, and KV-cache
   bytes, for MHA vs GQA vs MQA (same d_model and query heads), T = 256, 1024, 4096.

Every table is measured in one run with interleaved rounds; ratios are medians over rounds.

    python -m benchmarks.kernels --small                     # a quick run (B=2, T=256; decode T=128..512)
    python -m benchmarks.kernels                             # the issue's sizes (several minutes on 2 cores)
    python -m benchmarks.kernels --skip-decode --kernels manual,sdpa --batch 4 --seq-len 2048
"""
from __future__ import annotations

import argparse

import torch

from attnbench import build_model, load_config
from attnbench.bench.backend import BackendProbe
from attnbench.bench.steps import make_step
from attnbench.model.attention import AttnContext, CausalSelfAttention
from attnbench.model.kernels import MaskSpec, get_kernel
from attnbench.registry import KERNELS
from .common import CPU, add_common_args, interleaved, machine, print_table, setup, summarize

KERNEL_ORDER = ["wrapper", "manual", "sdpa", "sdpa_math", "torch_mha", "flex"]


def attention_layers(names: list[str], d: int, H: int) -> dict[str, CausalSelfAttention]:
    layers = {}
    for name in names:
        kernel = get_kernel(name)
        if name == "flex":
            kernel.compile = True  # eager flex materialises the scores: only its compiled form is a real kernel
        layers[name] = CausalSelfAttention(d, H, H, kernel)
    ref = layers[names[0]].state_dict()
    for layer in layers.values():
        layer.load_state_dict(ref)  # identical weights: only the kernel differs
    return layers


def kernel_fns(layers: dict, x: torch.Tensor) -> tuple[dict, dict]:
    ctx = AttnContext(spec=MaskSpec())
    fwd, fwd_bwd = {}, {}
    for name, layer in layers.items():
        def f(layer=layer):
            with torch.no_grad():
                return layer(x, ctx)

        def fb(layer=layer):
            layer.zero_grad(set_to_none=True)
            layer(x, ctx).sum().backward()

        fwd[name] = f
        if "cpu" in KERNELS.get(name).backward_devices:
            fwd_bwd[name] = fb
    return fwd, fwd_bwd


def check_agree(layers: dict, x: torch.Tensor) -> dict[str, str | None]:
    """Every kernel gives manual's output (else the timing would compare different work); SDPA backend."""
    ctx, backends = AttnContext(spec=MaskSpec()), {}
    with torch.no_grad():
        ref = layers["manual"](x, ctx) if "manual" in layers else None
        for name, layer in layers.items():
            if name == "flex":
                out, backends[name] = layer(x, ctx), None
            else:
                with BackendProbe() as probe:
                    out = layer(x, ctx)
                backends[name] = probe.backend
            if ref is not None:
                torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    return backends


def kernel_table(args) -> None:
    names = [k for k in KERNEL_ORDER if k in args.kernels.split(",")]
    B, T, d, H = args.batch, args.seq_len, args.d_model, args.heads
    layers = attention_layers(names, d, H)
    x = torch.randn(B, T, d)  # (B, T, C)
    backends = check_agree(layers, x)
    fwd, fwd_bwd = kernel_fns(layers, x)
    rows = []
    for label, fns in (("forward", fwd), ("fwd+bwd", fwd_bwd)):
        samples = interleaved(fns, args.rounds, args.repeats, args.warmup)
        base = summarize(samples["sdpa"])["median_ms"] if "sdpa" in samples else None
        for name in names:
            if name not in samples:
                rows.append({"kernel": name, "pass": label, "median_ms": "n/a", "note": "no backward on cpu"})
                continue
            s = summarize(samples[name])
            rows.append({"kernel": name, "pass": label, **s, "vs_sdpa": s["median_ms"] / base if base else None,
                         "sdpa_backend": backends[name] or "-"})
    print_table(rows, ["kernel", "pass", "median_ms", "p10_ms", "p90_ms", "n", "vs_sdpa", "sdpa_backend"],
                f"kernels: one causal self-attention layer, B={B}, T={T}, d={d}, {H} heads, fp32")


def decode_model(layout: str, args, T: int):
    cfg = load_config(["stages=[bench]", "logger=none", f"attn={layout}", "pos=rope", f"model.n_layers={args.layers}",
                       f"model.d_model={args.d_model}", f"attn.n_heads={args.heads}", f"model.context_length={T}",
                       f"bench.decode_tokens={args.decode_tokens}", "bench.modes=[decode]", f"bench.seq_lens=[{T}]",
                       *([f"attn.n_kv_heads={args.gqa_kv_heads}"] if layout == "gqa" else [])])
    return cfg, build_model(cfg).eval()


def decode_table(args) -> None:
    B, N, rows = args.decode_batch, args.decode_tokens, []
    for T in args.decode_lens:
        models = {layout: decode_model(layout, args, T) for layout in ("mha", "gqa", "mqa")}
        fns = {k: make_step("decode", cfg, m, B, T, CPU, torch.float32).fn for k, (cfg, m) in models.items()}
        samples = interleaved(fns, args.rounds, args.repeats, 1)
        base_ms, base_kv = None, None
        for layout, (_cfg, model) in models.items():
            kv = model.init_cache(B, T + N).nbytes()  # the tensors decode writes into
            ms = summarize(samples[layout])["median_ms"] / N  # a sample covers N tokens
            base_ms, base_kv = base_ms or ms, base_kv or kv
            rows.append({"attn": layout, "n_kv_heads": model.n_kv_heads, "T": T, "ms_per_token": ms,
                         "vs_mha": ms / base_ms, "kv_cache_MB": kv / 2**20, "kv_vs_mha": kv / base_kv})
    print_table(rows, ["attn", "n_kv_heads", "T", "ms_per_token", "vs_mha", "kv_cache_MB", "kv_vs_mha"],
                f"decode: {args.layers} layers, d={args.d_model}, {args.heads} query heads, pos=rope, B={B}, "
                f"{N} new tokens after a T-token prompt, KV cache for T+{N} tokens, fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="B=2, T=256; decode T=128,256,512, 1 layer")
    ap.add_argument("--kernels", default=",".join(KERNEL_ORDER))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--layers", type=int, default=2, help="decode model depth")
    ap.add_argument("--gqa-kv-heads", type=int, default=4)
    ap.add_argument("--decode-batch", type=int, default=1)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--decode-lens", type=lambda s: [int(t) for t in s.split(",")], default=[256, 1024, 4096])
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    add_common_args(ap, rounds=3, repeats=2)
    args = ap.parse_args()
    if args.small:
        args.batch, args.seq_len, args.layers, args.decode_lens = 2, 256, 1, [128, 256, 512]
    setup(args)
    print(f"machine: {machine()}")
    if not args.skip_kernels:
        kernel_table(args)
    if not args.skip_decode:
        decode_table(args)


if __name__ == "__main__":
    main()
