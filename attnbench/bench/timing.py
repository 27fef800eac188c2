"""Latency of a callable: warm-up excluded, a fixed number of timed repeats.

The samples come from the standard library's `timeit.Timer.repeat` (a fixed
count; the garbage collector is switched off while timing, as timeit does). The
device is synchronised inside the timed statement, so asynchronous GPU work is
counted in the sample it belongs to. `torch.utils.benchmark.Timer` would add its
own warm-up to every `timeit` call and picks repeat counts itself; a fixed count
keeps `bench.warmup` / `bench.repeats` meaning exactly what they say.
"""
from __future__ import annotations

import time
import timeit
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import device as dev


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    first_ms: float  # the very first call (includes torch.compile's compilation when compiled)
    samples_ms: tuple[float, ...]


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    def run() -> None:
        fn()
        dev.synchronize(device)

    return run


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
              first: Callable[[], object] | None = None, timer: Callable[[], float] = time.perf_counter) -> Timing:
    """Run `first` (default `fn`) once, then `warmup - 1` more untimed calls, then `repeats` timed ones.

    `first` lets the caller wrap the first call (e.g. to see which SDPA backend ran). `timer` is the
    clock of the timed samples: wall time by default; `time.process_time` counts only this process's
    CPU time (benchmarks on a shared CPU, one thread), which other jobs' load does not inflate."""
    if repeats < 1:
        raise ValueError(f"bench.repeats={repeats}: must be >= 1")
    run = synced(fn, device)
    t0 = time.perf_counter()
    synced(first or fn, device)()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(max(warmup - 1, 0)):
        run()
    samples = [s * 1e3 for s in timeit.Timer(run, timer=timer).repeat(repeat=repeats, number=1)]
    p10, med, p90 = np.percentile(samples, [10, 50, 90])
    return Timing(float(med), float(p10), float(p90), repeats, first_ms, tuple(samples))
