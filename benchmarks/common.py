"""Shared helpers for the benchmark scripts: interleaved timing and table printing.

Every comparison times its candidates in alternating blocks (A B A B ..., the order
reversed every other round), so slow drift and other load on a shared machine hit
all of them alike; ratios are taken between medians over all blocks.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch

from attnbench.bench.timing import time_call
from attnbench.report.console import table

CPU = torch.device("cpu")


def add_common_args(ap: argparse.ArgumentParser, rounds: int = 5, repeats: int = 3) -> None:
    ap.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (A B, then B A, ...)")
    ap.add_argument("--repeats", type=int, default=repeats, help="timed calls per candidate per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate before the first round")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, repeats: int, warmup: int,
                device: torch.device = CPU, timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """name → all timed samples (ms), candidates alternating block by block (`timer`: see time_call)."""
    for fn in fns.values():
        time_call(fn, device, warmup=warmup, repeats=1)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            # warmup=1: one untimed call after switching candidates (caches, thread pools)
            samples[name] += time_call(fns[name], device, warmup=1, repeats=repeats, timer=timer).samples_ms
    return samples


def summarize(samples: list[float]) -> dict:
    qs = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else samples * 9
    return {"median_ms": statistics.median(samples), "p10_ms": qs[0], "p90_ms": qs[-1], "n": len(samples)}


def print_table(rows: list[dict], cols: list[str], title: str) -> None:
    print(f"\n{title}\n{table(rows, cols)}", flush=True)


def compare_train_steps(cfg, models: dict, B: int, T: int, args: argparse.Namespace) -> tuple[list[dict], float]:
    """Time attnbench's train_step statement on each model, interleaved; rows (first model first) and the
    ratio first / second of the medians."""
    from attnbench.bench.steps import make_step

    cpu = torch.device("cpu")
    fns = {name: make_step("train_step", cfg, model, B, T, cpu, torch.float32).fn for name, model in models.items()}
    samples = interleaved(fns, args.rounds, args.repeats, args.warmup)
    rows = [{"model": m, **summarize(s)} for m, s in samples.items()]
    return rows, rows[0]["median_ms"] / rows[1]["median_ms"]

