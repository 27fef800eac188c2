"""Feed-forward blocks: gelu, relu2, swiglu, geglu.

Gated FFNs use three matrices, so their hidden size is 2/3 of the plain MLP's
(rounded up to `ffn.multiple_of`) to keep parameters matched (Shazeer 2020).

`ffn.approximate` picks the GELU of gelu and geglu: `none` is the exact
x·Φ(x) (PyTorch's default, nanoGPT), `tanh` the tanh approximation of GPT-2's
`gelu_new` (Hendrycks & Gimpel 2016, Sec. 2). On CPU the tanh form is the slower
one (docs/configuration.md). `model.bias=false` drops the MLP's biases; the gated
FFNs never have any (PaLM / LLaMA).
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import FFNS
from .tags import mark_residual

GELU_APPROXIMATIONS = ("none", "tanh")  # F.gelu's `approximate` argument


def gated_hidden(d_model: int, mult: float, multiple_of: int) -> int:
    hidden = 2 * mult * d_model / 3
    return int(math.ceil(hidden / multiple_of) * multiple_of)


class MLP(nn.Module):
    """Two-layer MLP, with biases unless bias=False (GPT-2): up (d → mult·d), activation, down."""

    n_matrices: ClassVar[int] = 2  # up, down: what the FLOPs counter multiplies by
    param_group: ClassVar[str] = "ffn"

    @classmethod
    def hidden_size(cls, d_model: int, mult: float, multiple_of: int) -> int:
        return int(mult * d_model)

    def __init__(self, d_model: int, mult: float = 4.0, multiple_of: int = 64, dropout: float = 0.0,
                 approximate: str = "none", bias: bool = True):
        super().__init__()
        hidden = self.hidden_size(d_model, mult, multiple_of)
        self.approximate = approximate
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        mark_residual(self.down)  # scaled init (GPT-2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C)
        return self.drop(self.down(self.act(self.up(x))))

    def act(self, h: Tensor) -> Tensor:
        return F.gelu(h, approximate=self.approximate)


@FFNS.register("gelu")
class GELUMLP(MLP):
    """GELU MLP (Hendrycks & Gimpel 2016): exact by default, ffn.approximate=tanh for GPT-2's."""


@FFNS.register("relu2")
class ReLU2MLP(MLP):
    """Squared-ReLU MLP (So et al. 2021, "Primer")."""

    def act(self, h: Tensor) -> Tensor:
        return F.relu(h).square()


class GatedFFN(nn.Module):
    """act(x W_gate) ⊙ (x W_up) W_down, no biases (as in PaLM / LLaMA)."""

    n_matrices: ClassVar[int] = 3  # gate, up, down
    param_group: ClassVar[str] = "ffn"

    @classmethod
    def hidden_size(cls, d_model: int, mult: float, multiple_of: int) -> int:
        return gated_hidden(d_model, mult, multiple_of)

    def __init__(self, d_model: int, mult: float = 4.0, multiple_of: int = 64, dropout: float = 0.0,
                 approximate: str = "none", bias: bool = True):
        super().__init__()
        hidden = self.hidden_size(d_model, mult, multiple_of)
        self.approximate = approximate  # GeGLU's GELU; `bias` is accepted but gated FFNs have none
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)
        mark_residual(self.down)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C)
        return self.drop(self.down(self.act(self.gate(x)) * self.up(x)))

    def act(self, h: Tensor) -> Tensor:
        raise NotImplementedError


@FFNS.register("swiglu")
class SwiGLU(GatedFFN):
    """SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def act(self, h: Tensor) -> Tensor:
        return F.silu(h)


@FFNS.register("geglu")
class GeGLU(GatedFFN):
    """GeGLU (Shazeer 2020): exact GELU by default, ffn.approximate=tanh for the approximation."""

    def act(self, h: Tensor) -> Tensor:
        return F.gelu(h, approximate=self.approximate)
