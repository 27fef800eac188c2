"""The one module that touches torch.cuda / torch.backends.mps.

Resolves `device=auto`, dtypes, autocast, synchronisation and peak-memory
counters so that model, bench and train code stay device-agnostic.
"""
from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Optional

import torch

from .errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(dev_cfg: Any) -> torch.device:
    """`device.name` → torch.device; `auto` prefers cuda, then mps, then cpu."""
    name = dev_cfg.name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: CUDA is not available on this machine; choose from [auto, cpu]")
    if name == "mps" and not _mps_available():
        raise ConfigError("device=mps: MPS is not available on this machine; choose from [auto, cpu]")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name}: unknown option; choose from [auto, cpu, cuda, mps]")
    return torch.device(name)


@dataclass(frozen=True)
class Target:
    """The machine a job will run on, as a launching process that submits it elsewhere sees it
    (sweep/precheck.py): its device type, and its memory when known (None: each job checks on its node)."""

    device_type: str
    memory_bytes: Optional[int] = None


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_bytes(device: torch.device) -> Optional[int]:
    """What a job on `device` may use: CUDA's total memory; on CPU (and MPS, whose memory is the
    machine's) the RAM, lowered to this process's cgroup limit or address-space rlimit when those are
    smaller (a container or `ulimit -v`). None when it cannot be told. Allocates nothing."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(device.index or torch.cuda.current_device()).total_memory)
    import psutil
    import resource

    limits = [int(psutil.virtual_memory().total)]
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        limits.append(int(soft))
    return min(limits)


def resolve_dtype(dev_cfg: Any) -> torch.dtype:
    return DTYPES[dev_cfg.dtype]


# A bench grid compiles one graph per shape (flex is compiled with dynamic=False); at dynamo's default
# limit of 8 the rest of the grid would silently run eagerly and be timed as if compiled.
RECOMPILE_LIMIT = 64


def setup(dev_cfg: Any) -> torch.device:
    """Resolve the device and apply the thread count; returns the device.

    With `device.compile`, dynamo's caches are reset: jobs of a multirun share the process, and graphs
    (and recompile counts) left by an earlier job would otherwise push this one past the recompile
    limit into eager mode (seen: the second job of a compiled flex sweep ran eagerly)."""
    if dev_cfg.threads:
        torch.set_num_threads(int(dev_cfg.threads))
    if dev_cfg.compile:
        # `import torch._dynamo` here would make `torch` a local name of this function, and the
        # set_num_threads call above would then raise UnboundLocalError whenever device.threads is set.
        import torch._dynamo as dynamo

        dynamo.reset()
        dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return resolve_device(dev_cfg)


def autocast(device: torch.device, dtype: torch.dtype) -> ContextManager:
    """Mixed precision for bf16/fp16 (weights stay fp32); a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_allocated_bytes(device: torch.device) -> int | None:
    """Bytes currently allocated by torch on the device (CUDA); None where torch has no counter."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return None


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak allocated bytes since the last reset (CUDA); None where torch has no counter."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # CPU allocator failures are plain RuntimeErrors: "DefaultCPUAllocator: can't allocate memory"
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name where the OS gives it (Linux), so results say which CPU they were measured on;
    else what `platform` knows (often only the architecture)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def describe(device: torch.device, dtype: torch.dtype) -> dict:
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
    }
