"""The device's peak matmul throughput (FLOP/s), the denominator of MFU.

Measured once per (device, dtype, threads, torch) by timing a large square matmul
with `torch.utils.benchmark.Timer.blocked_autorange`, and cached in
`$ATTNBENCH_CACHE/peak_flops.json` (default `~/.cache/attnbench`). The fastest
block is taken: on a shared machine other load only ever slows a block down, so
the minimum is the best estimate of what the hardware can do. `bench.peak_flops`
overrides the probe (e.g. a vendor figure).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark

from .. import device as dev
from ..track.results import write_json_atomic

log = logging.getLogger(__name__)

PROBE_N = {"cpu": 2048, "mps": 4096, "cuda": 8192}  # large enough to reach the GEMM plateau
PROBE_SECONDS = 0.5


def cache_file() -> Path:
    root = os.environ.get("ATTNBENCH_CACHE") or Path.home() / ".cache" / "attnbench"
    return Path(root) / "peak_flops.json"


def cache_key(device: torch.device, dtype: torch.dtype) -> str:
    return "|".join([device.type, dev.device_name(device), str(dtype).removeprefix("torch."),
                     f"threads={torch.get_num_threads()}", f"torch={torch.__version__}"])


def probe_matmul_flops(device: torch.device, dtype: torch.dtype, n: int | None = None,
                       seconds: float = PROBE_SECONDS) -> float:
    """FLOP/s of an n×n @ n×n matmul in `dtype` (2·n³ FLOPs), fastest block."""
    n = n or PROBE_N.get(device.type, 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    timer = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=seconds)  # syncs CUDA itself; warms up first
    return 2 * n**3 / min(m.times)


def peak_flops(bench_cfg: Any, device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(FLOP/s, source) with source one of config | cache | probe."""
    if bench_cfg.get("peak_flops"):
        return float(bench_cfg.peak_flops), "config"
    path, key = cache_file(), cache_key(device, dtype)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key]), "cache"
    value = probe_matmul_flops(device, dtype)
    log.info("peak matmul probe on %s: %.3g FLOP/s (cached in %s)", key, value, path)
    try:
        write_json_atomic(path, {**cached, key: value})
    except OSError as exc:  # a read-only home must not stop the bench
        log.warning("could not cache the peak FLOP/s probe in %s: %s", path, exc)
    return value, "probe"
