"""Which SDPA backend actually ran (flash / efficient / cudnn / math).

PyTorch picks the backend inside `F.scaled_dot_product_attention`. A torch-function
mode sees that SDPA was called; a dispatch mode sees what served it:
- with autograd on, SDPA decomposes before the dispatch mode and the fused aten op
  shows up by name (e.g. `_scaled_dot_product_flash_attention_for_cpu`); SDPA called
  with no fused op underneath means the math fallback (matmul + softmax);
- under `torch.inference_mode` the dispatch mode sees `aten::scaled_dot_product_attention`
  itself, and asks `torch._fused_sdp_choice` (the function SDPA consults, honouring
  `sdpa_kernel` pins) which backend these exact arguments get.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

FUSED = (("flash_attention", "flash"), ("efficient_attention", "efficient"), ("cudnn_attention", "cudnn"),
         ("fused_attention_overrideable", "overrideable"))
CHOICE = {SDPBackend.MATH: "math", SDPBackend.FLASH_ATTENTION: "flash", SDPBackend.EFFICIENT_ATTENTION: "efficient",
          SDPBackend.CUDNN_ATTENTION: "cudnn", SDPBackend.OVERRIDEABLE: "overrideable"}


def sdpa_fallback(impl: str, device_type: str, gqa: bool, masked: bool, dtype: torch.dtype) -> Optional[str]:
    """Why unpinned SDPA serves this attention with the math backend where MHA would get a fused
    kernel, or None. Decided from the capability flags, before anything runs.

    On CUDA, SDPA tries flash (cuDNN first on some GPUs), then memory-efficient, then math. Flash
    takes no mask and only fp16/bf16; torch 2.13's memory-efficient kernel has no GQA
    (`SDPAEfficientKernel.supports_gqa`). So GQA/MQA with a mask (a window, an ALiBi bias), or in
    fp32, ends in math (quadratic memory), while MHA with the same mask gets the efficient kernel:
    a GQA-vs-MHA latency comparison would compare two different kernels. On CPU every float-masked
    call is math for both layouts, so nothing differs there."""
    from ..registry import KERNELS  # the kernels fill the registry when the model package is imported

    if impl != "sdpa" or device_type != "cuda" or not gqa or KERNELS.get("sdpa_efficient").supports_gqa:
        return None
    if masked:
        why = "flash takes no mask"
    elif dtype == torch.float32:
        why = "flash needs fp16/bf16"
    else:
        return None
    return (f"attn.impl=sdpa on cuda: GQA/MQA falls back to the math backend ({why}; torch's efficient "
            "kernel has no GQA), while MHA gets the efficient kernel; pin attn.impl=sdpa_math for a like-for-like "
            "comparison, or compare against the sdpa_backend column")


def sdpa_fallback_for(spec: Any, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """`sdpa_fallback` for a resolved spec (config/spec.py), or a config."""
    from ..config.spec import as_spec
    from ..registry import POSITIONAL

    spec = as_spec(spec)
    cfg = spec.cfg
    masked = spec.window is not None or POSITIONAL.get(cfg.pos.name).needs_bias
    return sdpa_fallback(cfg.attn.impl, device.type, spec.n_kv_heads != spec.n_heads, masked, dtype)


class _SDPACalls(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.called = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Calls nested in another torch-function-aware function are not seen by the mode (it is
        # off inside this handler), so nn.MultiheadAttention's functional form counts as an SDPA
        # call itself (with need_weights=False, as the torch_mha kernel calls it, it ends in SDPA).
        if func in (F.scaled_dot_product_attention, F.multi_head_attention_forward):
            self.called = True
        return func(*args, **(kwargs or {}))


def _choice(args: tuple, kwargs: dict) -> str:
    try:
        kw = {k: v for k, v in kwargs.items() if k in ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")}
        return CHOICE.get(SDPBackend(int(torch._fused_sdp_choice(*args, **kw))), "unknown")
    except Exception:  # a private op: if its signature moves, say so rather than guess
        return "unknown"


class _FusedOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if name == "aten::scaled_dot_product_attention":
            self.seen.add(_choice(args, kwargs))
        for key, label in FUSED:
            if key in name:
                self.seen.add(label)
        return func(*args, **kwargs)


class BackendProbe:
    """Context manager; afterwards `.backend` is e.g. "flash", "math", "flash+math" or None (no SDPA call)."""

    def __init__(self) -> None:
        self._calls, self._ops = _SDPACalls(), _FusedOps()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "BackendProbe":
        self._stack.enter_context(self._calls)
        self._stack.enter_context(self._ops)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    @property
    def backend(self) -> Optional[str]:
        if self._ops.seen:
            return "+".join(sorted(self._ops.seen))
        return "math" if self._calls.called else None
