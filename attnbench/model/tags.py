"""Tags a component puts on torch's own modules, for the GPT to read back.

`param_group` says which group a module's parameters count under (param_breakdown in model/__init__.py);
`residual_proj` marks a projection that writes into the residual stream (the GPT-2 scaled init in gpt.py).
Our own components declare `param_group` as a class attribute; torch's modules (nn.Linear, nn.LayerNorm,
nn.Embedding) are tagged here, because nn.Module's typing declares no such attributes.
"""
from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)
PARAM_GROUP = "param_group"
RESIDUAL = "residual_proj"


def tag_group(module: M, group: str) -> M:
    """`module`'s parameters count as `group` (attention, ffn, norm, embedding, head)."""
    setattr(module, PARAM_GROUP, group)
    return module


def mark_residual(linear: nn.Linear) -> nn.Linear:
    """`linear` writes into the residual stream: its init std is scaled by 1/sqrt(2·layers)."""
    setattr(linear, RESIDUAL, True)
    return linear


def group_of(module: nn.Module) -> str | None:
    """The group `module` was tagged with, or None."""
    group = getattr(module, PARAM_GROUP, None)
    return str(group) if group is not None else None


def is_residual(module: nn.Module) -> bool:
    return bool(getattr(module, RESIDUAL, False))
