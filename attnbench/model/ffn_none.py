"""ffn=none: attention-only blocks (Zoology's MQAR models have no MLP).

The block then has one sublayer: pre-LN x + attn(norm(x)), post-LN norm(x + attn(x)); no second
norm is made, so the parameter count, FLOPs and memory estimates see no FFN at all.
"""
from __future__ import annotations

from typing import ClassVar

from ..registry import FFNS


@FFNS.register("none")
class NoFFN:
    """Not a module: `Block` sees `absent` and builds no FFN sublayer (model/gpt.py)."""

    absent: ClassVar[bool] = True
    n_matrices: ClassVar[int] = 0  # bench/flops.py: no FFN FLOPs

    @classmethod
    def hidden_size(cls, d_model: int, mult: float, multiple_of: int) -> int:
        return 0

    def __init__(self, *args: object, **kwargs: object):
        pass
