"""Which keys each query may see: the mask spec and its boolean / additive masks.

A leaf of model/: kernels.py and sinks.py both build masks, and sinks.py is imported by kernels.py,
so the helpers live here rather than in kernels.py (no import cycle)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskSpec:
    """Which keys each query may see. Query i sits at absolute position q_offset + i;
    keys sit at 0..S-1 (the KV cache holds everything before the chunk)."""

    causal: bool = True
    window: int | None = None  # query p sees keys p-window+1 .. p
    q_offset: int = 0


def allowed_mask(T: int, S: int, spec: MaskSpec, device: torch.device) -> Tensor:
    """Boolean (T, S) mask, True = may attend. Vectorised: no Python loop per row."""
    q_pos = torch.arange(spec.q_offset, spec.q_offset + T, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    ok = k_pos <= q_pos if spec.causal else torch.ones(T, S, dtype=torch.bool, device=device)
    if spec.window is not None:
        ok = ok & (q_pos - k_pos < spec.window)
    return ok


def additive_mask(T: int, S: int, spec: MaskSpec, bias: Tensor | None, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
    """Float mask: bias where allowed, -inf elsewhere. (H, T, S) with a bias, else (T, S)."""
    ok = allowed_mask(T, S, spec, device)
    base = bias.to(dtype) if bias is not None else torch.zeros(T, S, dtype=dtype, device=device)
    return base.masked_fill(~ok, float("-inf"))
