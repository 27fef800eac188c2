"""Does the harness measure what a direct call measures?

Target (issue 3): attnbench's reported forward latency (the `median_ms` of a
`bench.modes=[forward]` row from `run_bench`, i.e. exactly what results.json gets)
for a one-layer model is within 5% of `torch.utils.benchmark.Timer` timing the same
module directly (`model(idx)` under inference_mode, `blocked_autorange`). The two are
measured in alternating rounds (A B, B A, ...); the ratio is between the medians of
the per-round medians.

    python -m benchmarks.harness_overhead
    python -m benchmarks.harness_overhead --d-model 768 --heads 12 --seq-len 1024 --batch 4 --rounds 6
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils import benchmark

from attnbench import build_model, load_config
from attnbench.bench.suite import run_bench
from .common import CPU, add_common_args, machine, print_table, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--impl", default="sdpa")
    ap.add_argument("--min-run-time", type=float, default=0.5, help="seconds per blocked_autorange")
    add_common_args(ap, rounds=8, repeats=10)
    args = ap.parse_args()
    setup(args)
    print(f"machine: {machine()}")
    T, B = args.seq_len, args.batch
    cfg = load_config(["stages=[bench]", "logger=none", f"attn.impl={args.impl}", "model.n_layers=1",
                       f"model.d_model={args.d_model}", f"attn.n_heads={args.heads}",
                       f"model.context_length={max(T, 64)}", "bench.modes=[forward]", f"bench.seq_lens=[{T}]",
                       f"bench.batch_size={B}", f"bench.repeats={args.repeats}", f"bench.warmup={args.warmup}",
                       "bench.memory=none", "bench.peak_flops=1e12"])  # peak given: no probe in the loop
    model = build_model(cfg).eval()
    idx = torch.randint(0, cfg.model.vocab_size, (B, T))

    def direct() -> float:
        timer = benchmark.Timer("with torch.inference_mode(): model(idx)", globals={"model": model, "idx": idx},
                                num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3

    def harness() -> float:
        rows, _ = run_bench(cfg, model, CPU, torch.float32)
        return rows[0]["median_ms"]

    fns = {"attnbench run_bench": harness, "torch.utils.benchmark": direct}
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            per_round[name].append(fns[name]())
    rows = [{"timer": k, "median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "rounds": len(v)}
            for k, v in per_round.items()]
    ratio = rows[0]["median_ms"] / rows[1]["median_ms"]
    print_table(rows, ["timer", "median_ms", "min_ms", "max_ms", "rounds"],
                f"forward, 1 layer, d={args.d_model}, {args.heads} heads, B={B}, T={T}, impl={args.impl}: "
                f"ratio harness/direct = {ratio:.3f} (target within 0.95..1.05)")


if __name__ == "__main__":
    main()
