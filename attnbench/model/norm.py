"""Normalisation layers: LayerNorm and RMSNorm (torch.nn's own implementations)."""
from __future__ import annotations

from torch import nn

from ..registry import NORMS


@NORMS.register("layernorm")
def layernorm(d_model: int, eps: float) -> nn.Module:
    """LayerNorm (Ba et al. 2016): centre and scale, learned gain and bias."""
    return nn.LayerNorm(d_model, eps=eps)


@NORMS.register("rmsnorm")
def rmsnorm(d_model: int, eps: float) -> nn.Module:
    """RMSNorm (Zhang & Sennrich 2019): scale by the root mean square, learned gain, no bias."""
    return nn.RMSNorm(d_model, eps=eps)
