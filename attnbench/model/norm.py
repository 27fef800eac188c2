"""Normalisation layers: LayerNorm and RMSNorm (torch.nn's own implementations)."""
from __future__ import annotations

from torch import nn

from ..registry import NORMS
from .tags import tag_group


def _tagged(module: nn.Module) -> nn.Module:
    """torch's own norm modules, tagged for param_breakdown (models/__init__.py) like our components."""
    return tag_group(module, "norm")


@NORMS.register("layernorm")
def layernorm(d_model: int, eps: float, bias: bool = True) -> nn.Module:
    """LayerNorm (Ba et al. 2016): centre and scale, learned gain and (unless model.bias=false) bias."""
    return _tagged(nn.LayerNorm(d_model, eps=eps, bias=bias))


@NORMS.register("rmsnorm")
def rmsnorm(d_model: int, eps: float, bias: bool = True) -> nn.Module:
    """RMSNorm (Zhang & Sennrich 2019): scale by the root mean square, learned gain, no bias
    (`bias` is accepted so every norm takes model.bias; RMSNorm never has one)."""
    return _tagged(nn.RMSNorm(d_model, eps=eps))
