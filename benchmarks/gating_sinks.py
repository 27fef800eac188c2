"""Output gating and attention sinks: train-step time against the same model without them.

Each candidate is the same GPT (same seed, same config) but for `attn.gate` / `attn.sinks`; their
train steps (attnbench's `train_step` bench statement: forward, loss, backward, AdamW step) are
timed in interleaved rounds (A B C ..., then reversed), and each median is divided by its
baseline's median, measured in the same rounds. Targets (issue 19): gated ≤ 1.10× ungated, sinks
≤ 1.10× without. Sinks are measured on the default kernel (`sdpa`: one SDPA call on q/k/v padded by
a sink key) and on `manual` (one extra softmax column), full causal and with a sliding window (the
masked SDPA path), each against the same kernel and window without sinks.

    python -m benchmarks.gating_sinks                 # model=small (4 × 256), B=8, T=256
    python -m benchmarks.gating_sinks --small         # model=tiny, B=4, T=128 (seconds)
"""
from __future__ import annotations

import argparse
import time

import torch

from attnbench import build_model, load_config
from attnbench.bench.steps import make_step
from .common import CPU, add_common_args, interleaved, machine, print_table, setup, summarize

# name -> (overrides, the baseline it is divided by)
CANDIDATES = {
    "ungated": ([], "ungated"),
    "gate=headwise": (["attn.gate=headwise"], "ungated"),
    "gate=elementwise": (["attn.gate=elementwise"], "ungated"),
    "sinks": (["attn.sinks=true"], "ungated"),
    "window": (["attn.window=64"], "window"),
    "window+sinks": (["attn.window=64", "attn.sinks=true"], "window"),
    "manual": (["attn.impl=manual"], "manual"),
    "manual+sinks": (["attn.impl=manual", "attn.sinks=true"], "manual"),
}
TARGET = 1.10


def build(base: list[str], extra: list[str]):
    cfg = load_config([*base, *extra])
    return cfg, build_model(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, rounds=6, repeats=3)
    ap.add_argument("--small", action="store_true", help="model=tiny, B=4, T=128")
    ap.add_argument("--only", default=None, help="comma-separated candidate names (baselines are added)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: this process's CPU time (default; on a shared, loaded CPU other jobs do not inflate it; "
                         "use with --threads 1); wall: elapsed time")
    args = ap.parse_args()
    setup(args)
    B, T, preset = (4, 128, "tiny") if args.small else (8, 256, "small")
    base = ["stages=[]", "device=cpu", f"model={preset}", "pos=rope", "model.vocab_size=256"]
    names = list(CANDIDATES) if args.only is None else args.only.split(",")
    names = list(dict.fromkeys(n for name in names for n in (CANDIDATES[name][1], name)))
    fns = {}
    for name in names:
        cfg, model = build(base, CANDIDATES[name][0])
        fns[name] = make_step("train_step", cfg, model, B, T, CPU, torch.float32).fn
    timer = time.process_time if args.clock == "cpu" else time.perf_counter
    samples = interleaved(fns, args.rounds, args.repeats, args.warmup, timer=timer)
    stats = {name: summarize(s) for name, s in samples.items()}
    rows = []
    for name in names:
        ref = CANDIDATES[name][1]
        ratio = stats[name]["median_ms"] / stats[ref]["median_ms"]
        rows.append({"candidate": name, "vs": ref, **stats[name], "ratio": round(ratio, 3),
                     "target": "" if name == ref else ("ok" if ratio <= TARGET else f"> {TARGET}")})
    print(f"machine: {machine()}")
    print_table(rows, ["candidate", "vs", "median_ms", "p10_ms", "p90_ms", "n", "ratio", "target"],
                f"train step, model={preset} B={B} T={T} pos=rope, {args.clock} time "
                f"(interleaved rounds={args.rounds} x repeats={args.repeats})")


if __name__ == "__main__":
    main()
