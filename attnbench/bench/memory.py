"""Peak memory of one call of a bench statement, in bytes above what was resident before it.

cuda        `torch.cuda.reset_peak_memory_stats` / `max_memory_allocated`, in process:
            the peak of the caching allocator minus what was allocated before the call.
subprocess  (CPU) every grid point is measured in one fresh worker process
            (`python -m attnbench.bench.worker`) that rebuilds the model from the config,
            runs one warm-up call, resets the kernel's resident-set high-water mark
            (`/proc/self/clear_refs` ← 5, Linux ≥ 4.0), reads VmRSS as the baseline,
            runs the measured call and reads VmHWM. The worker runs with glibc's mmap
            threshold pinned to 64 KiB, so every tensor larger than that is its own mmap
            that goes back to the OS when freed: RSS then follows live tensor memory, and a
            point is not flattered by pages an earlier point left resident in the heap.
            tests/test_bench.py checks it: the manual kernel's peak grows ~T², SDPA's ~T.
none        not measured (peak_mem_bytes = null).
`auto` = cuda on CUDA, subprocess on CPU, none elsewhere.

A reading below the method's resolution (RESOLUTION_BYTES) is not a measurement: `peak_mem_bytes`
is then null and `peak_mem_below_bytes` holds the resolution (the peak is under it). On CPU a tensor
under the 64 KiB mmap threshold comes from glibc's heap, whose pages may already be resident, so a
call that allocates less than that can read 0 (decode's one new token, a small forward); on CUDA
the caching allocator rounds to 512-byte blocks, so 0 means nothing was allocated.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import OmegaConf

from .. import device as dev
from ..errors import ConfigError

log = logging.getLogger(__name__)

MEMORY_METHODS = ("auto", "subprocess", "none")  # bench.memory; validate() checks against this
MMAP_THRESHOLD = 65536
Point = tuple[str, int, int]  # (mode, batch_size, seq_len)
RESOLUTION_BYTES = {"subprocess": MMAP_THRESHOLD, "cuda": 512}  # below these a peak reading means nothing


def reading(peak: int, method: str) -> dict[str, Optional[int]]:
    """The bench row keys for a peak read with `method`: {"peak_mem_bytes": peak}, or, below the method's
    resolution, {"peak_mem_bytes": None, "peak_mem_below_bytes": resolution}."""
    res = RESOLUTION_BYTES.get(method, 1)
    return {"peak_mem_bytes": int(peak)} if peak >= res else {"peak_mem_bytes": None, "peak_mem_below_bytes": res}


def resolve_method(method: str, device: torch.device) -> str:
    """The method `bench.memory` (already validated against MEMORY_METHODS) stands for on this device."""
    if method == "auto":
        return {"cuda": "cuda", "cpu": "subprocess"}.get(device.type, "none")
    if method == "subprocess" and device.type != "cpu":
        raise ConfigError(f"bench.memory=subprocess: measures CPU RSS, not {device.type} memory; use auto or none")
    return method


# ----------------------------------------------------------------------------- cuda, in process
def cuda_peak(fn: Callable[[], Any], device: torch.device) -> int:
    dev.synchronize(device)
    dev.reset_peak_memory(device)
    base = dev.memory_allocated_bytes(device)
    fn()
    dev.synchronize(device)
    return int(dev.peak_memory_bytes(device) - base)


# ----------------------------------------------------------------------------- CPU, resident set
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def reset_hwm() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hwm_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def rss_peak(fn: Callable[[], Any]) -> int:
    """Peak RSS of one call above the RSS just before it (call in a fresh worker)."""
    reset_hwm()
    base = rss_bytes()
    fn()
    return max(hwm_bytes() - base, 0)


def rss_supported() -> bool:
    return sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)


# ----------------------------------------------------------------------------- the worker
def worker_env() -> dict:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)  # fixed: also disables glibc's dynamic threshold
    env["MALLOC_TRIM_THRESHOLD_"] = str(MMAP_THRESHOLD)
    root = str(Path(__file__).resolve().parents[2])  # importable from a source checkout too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def measure_in_worker(cfg: Any, points: list[Point], threads: int,
                      timeout_s: Optional[float] = None) -> dict[Point, dict]:
    """{point: {"peak_mem_bytes": int} or {"error": str, "oom": bool}} measured in one fresh process.

    Points the worker did not reach (it crashed or was killed) are missing from the result."""
    if not rss_supported():
        log.warning("bench.memory=subprocess needs Linux /proc/self/clear_refs; peak memory not measured")
        return {}
    with tempfile.TemporaryDirectory(prefix="attnbench-mem-") as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        inp.write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True),
                                   "points": [list(p) for p in points], "threads": threads}))
        proc = subprocess.run([sys.executable, "-m", "attnbench.bench.worker", str(inp), str(out)],
                              env=worker_env(), capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-300:]
            log.warning("memory worker exited with %s (%s); unmeasured points get no peak memory",
                        proc.returncode, tail)
        try:
            rows = json.loads(out.read_text())
        except (OSError, ValueError):
            rows = []
    return {(r["mode"], r["batch_size"], r["seq_len"]): r for r in rows}
