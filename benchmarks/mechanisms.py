"""Differential and linear attention: the speed and memory targets of issue 19, ratios in one run.

1. diff: differential attention's attention proper (`DifferentialAttention.attend`: both maps in
   one kernel call, their difference, RMSNorm, scale) against one SDPA call of the same shape
   (B, H, T, D), forward and forward+backward. Target: ≤ 2.2×.
2. decode: per-token greedy decode time after a T-token prompt, T = 128 and 2048, for attn=linear
   (its recurrent state) and attn=mha (its KV cache), through attnbench's decode statement
   (bench/steps.py). Target: linear T=2048 / T=128 ≤ 1.3× while MHA's grows.
3. memory: train-step peak memory (attnbench's memory worker: RSS above the resident set on CPU,
   the allocator's peak on CUDA) at T = 256 … 2048 for attn=linear and attn=mha with sdpa and with
   the manual kernel; the ratio per doubling of T (2.0 = linear in T).

Timings are interleaved (A B, then B A, ...); ratios are between medians over all blocks.

    python -m benchmarks.mechanisms --small      # a quick run (seconds)
    python -m benchmarks.mechanisms              # the sizes of docs/measurement.md (minutes on 2 cores)
    python -m benchmarks.mechanisms --device cuda
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from attnbench import build_model, load_config
from attnbench.bench.memory import cuda_peak, measure_in_worker
from attnbench.bench.steps import make_step
from attnbench.model.differential import DifferentialAttention, paper_lambda_init
from attnbench.model.kernels import MaskSpec, get_kernel
from .common import add_common_args, interleaved, machine, print_table, setup, summarize


def diff_fns(B: int, H: int, T: int, D: int, device: torch.device, backward: bool) -> dict:
    attn = DifferentialAttention(H * D, H, H, get_kernel("sdpa"), paper_lambda_init(1)).to(device)
    q, k, v = (torch.randn(B, H, T, D, device=device, requires_grad=backward) for _ in range(3))  # (B, H, T, D)

    def sdpa():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if backward:
            out.sum().backward()

    def diff():
        out = attn.attend(q, k, v, MaskSpec(), None)
        if backward:
            out.sum().backward()

    if not backward:
        return {"sdpa": torch.no_grad()(sdpa), "diff": torch.no_grad()(diff)}
    return {"sdpa": sdpa, "diff": diff}


def diff_table(args, device: torch.device) -> None:
    B, H, T, D = args.batch, args.heads, args.seq_len, args.head_dim
    rows = []
    for label, backward in (("forward", False), ("fwd+bwd", True)):
        samples = interleaved(diff_fns(B, H, T, D, device, backward), args.rounds, args.repeats, args.warmup, device)
        base = summarize(samples["sdpa"])["median_ms"]
        for name, s in samples.items():
            rows.append({"attention": name, "pass": label, **summarize(s),
                         "vs_sdpa": summarize(s)["median_ms"] / base})
    print_table(rows, ["attention", "pass", "median_ms", "p10_ms", "p90_ms", "n", "vs_sdpa"],
                f"diff: attention proper vs one causal SDPA call of the same shape, B={B}, H={H}, T={T}, D={D}, "
                f"fp32, {device.type}; target diff/sdpa <= 2.2")


def model_cfg(attn: str, args, T: int, *extra: str):
    cfg = load_config(["stages=[bench]", "logger=none", f"attn={attn}", "pos=rope", f"model.n_layers={args.layers}",
                       f"model.d_model={args.d_model}", "attn.n_heads=4", f"model.context_length={T}",
                       f"bench.decode_tokens={args.decode_tokens}", f"bench.seq_lens=[{T}]", *extra])
    return cfg


def decode_table(args, device: torch.device) -> None:
    B, N, lens = args.decode_batch, args.decode_tokens, args.decode_lens
    fns = {}
    for attn in ("linear", "mha"):
        for T in lens:
            cfg = model_cfg(attn, args, T)
            model = build_model(cfg).eval().to(device)
            fns[(attn, T)] = make_step("decode", cfg, model, B, T, device, torch.float32).fn
    samples = interleaved(fns, args.rounds, args.repeats, 1, device)
    rows = []
    for (attn, T), s in samples.items():
        ms = summarize(s)["median_ms"] / N  # a sample covers N generated tokens
        first = summarize(samples[(attn, lens[0])])["median_ms"] / N
        rows.append({"attn": attn, "T": T, "ms_per_token": ms, f"vs_T{lens[0]}": ms / first})
    print_table(rows, ["attn", "T", "ms_per_token", f"vs_T{lens[0]}"],
                f"decode: {args.layers} layers, d={args.d_model}, 4 heads, pos=rope, B={B}, {N} new tokens after a "
                f"T-token prompt, fp32, {device.type}; target linear T={lens[-1]}/T={lens[0]} <= 1.3")


def memory_table(args, device: torch.device) -> None:
    B, lens, rows = args.mem_batch, args.mem_lens, []
    for label, attn, extra in (("linear", "linear", ()), ("mha sdpa", "mha", ()),
                               ("mha manual", "mha", ("attn.impl=manual",))):
        cfg = model_cfg(attn, args, max(lens), *extra)
        if device.type == "cuda":
            model = build_model(cfg).to(device)
            peaks = [cuda_peak(make_step("train_step", cfg, model, B, T, device, torch.float32).fn, device)
                     for T in lens]
        else:
            got = measure_in_worker(cfg, [("train_step", B, T) for T in lens], threads=torch.get_num_threads())
            peaks = [got.get(("train_step", B, T), {}).get("peak_mem_bytes") for T in lens]
        for i, (T, p) in enumerate(zip(lens, peaks)):
            prev = peaks[i - 1] if i else None
            rows.append({"attn": label, "T": T, "peak_MiB": p / 2**20 if p else None,
                         "per_doubling": p / prev if p and prev else None})
    print_table(rows, ["attn", "T", "peak_MiB", "per_doubling"],
                f"train-step peak memory: {args.layers} layers, d={args.d_model}, 4 heads, B={B}, fp32, {device.type}; "
                "per doubling of T: 2.0 = linear, 4.0 = quadratic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=4, help="diff: batch")
    ap.add_argument("--heads", type=int, default=8, help="diff: heads")
    ap.add_argument("--seq-len", type=int, default=1024, help="diff: T")
    ap.add_argument("--head-dim", type=int, default=64, help="diff: D")
    ap.add_argument("--layers", type=int, default=2, help="decode / memory model depth")
    ap.add_argument("--d-model", type=int, default=128, help="decode / memory model width")
    ap.add_argument("--decode-batch", type=int, default=4)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--decode-lens", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--mem-batch", type=int, default=4)
    ap.add_argument("--mem-lens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--skip", nargs="*", default=[], choices=["diff", "decode", "memory"])
    add_common_args(ap)
    args = ap.parse_args()
    if args.small:
        args.batch, args.heads, args.seq_len, args.head_dim = 2, 2, 128, 16
        args.d_model, args.decode_lens, args.decode_tokens, args.mem_lens = 32, [32, 256], 4, [64, 128]
        args.rounds, args.repeats = 2, 2
    setup(args)
    device = torch.device(args.device)
    print(f"machine: {machine()}")
    if "diff" not in args.skip:
        diff_table(args, device)
    if "decode" not in args.skip:
        decode_table(args, device)
    if "memory" not in args.skip:
        memory_table(args, device)


if __name__ == "__main__":
    main()
