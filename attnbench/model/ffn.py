"""Feed-forward blocks: gelu, relu2, swiglu, geglu.

Gated FFNs use three matrices, so their hidden size is 2/3 of the plain MLP's
(rounded up to `ffn.multiple_of`) to keep parameters matched (Shazeer 2020).
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import FFNS


def gated_hidden(d_model: int, mult: float, multiple_of: int) -> int:
    hidden = 2 * mult * d_model / 3
    return int(math.ceil(hidden / multiple_of) * multiple_of)


class MLP(nn.Module):
    """Two-layer MLP with biases (GPT-2): up (d → mult·d), activation, down."""

    def __init__(self, d_model: int, mult: float = 4.0, multiple_of: int = 64, dropout: float = 0.0):
        super().__init__()
        hidden = int(mult * d_model)
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.down.residual_proj = True  # scaled init (GPT-2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C)
        return self.drop(self.down(self.act(self.up(x))))

    def act(self, h: Tensor) -> Tensor:
        return F.gelu(h, approximate="tanh")


@FFNS.register("gelu")
class GELUMLP(MLP):
    """GELU MLP (Hendrycks & Gimpel 2016; tanh approximation as in GPT-2)."""


@FFNS.register("relu2")
class ReLU2MLP(MLP):
    """Squared-ReLU MLP (So et al. 2021, "Primer")."""

    def act(self, h: Tensor) -> Tensor:
        return F.relu(h).square()


class GatedFFN(nn.Module):
    """act(x W_gate) ⊙ (x W_up) W_down, no biases (as in PaLM / LLaMA)."""

    def __init__(self, d_model: int, mult: float = 4.0, multiple_of: int = 64, dropout: float = 0.0):
        super().__init__()
        hidden = gated_hidden(d_model, mult, multiple_of)
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)
        self.down.residual_proj = True
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
    """GeGLU (Shazeer 2020)."""

    def act(self, h: Tensor) -> Tensor:
        return F.gelu(h)
