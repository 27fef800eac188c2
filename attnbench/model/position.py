"""Positional schemes: none, learned, sinusoidal, rope, alibi.

A scheme may embed (add to the token embeddings), rotate q/k, or add a bias to
the attention scores. Every hook is a no-op by default; the GPT computes the
rotary tables and the bias once per forward and hands them to every layer.
Positions are absolute (`pos`, a LongTensor (T,)), so KV-cache decoding
continues where the cache left off.
"""
from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from ..registry import POSITIONAL

Rotary = tuple[Tensor, Tensor]  # (cos, sin), each (T, D)


class PositionalScheme(nn.Module):
    needs_bias: ClassVar[bool] = False
    rotates: ClassVar[bool] = False
    max_len: Optional[int] = None  # None = any length

    def __init__(self, d_model: int, n_heads: int, context_length: int, base: float = 10000.0):
        super().__init__()

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:  # x (B, T, C)
        return x

    def rotary(self, pos: Tensor) -> Optional[Rotary]:
        return None

    def bias(self, pos: Tensor, S: int) -> Optional[Tensor]:  # -> (H, T, S)
        return None


@POSITIONAL.register("none")
class NoPE(PositionalScheme):
    """No positional information (NoPE; Kazemnejad et al. 2023): causal masking alone."""


@POSITIONAL.register("learned")
class Learned(PositionalScheme):
    """Learned absolute position embeddings (GPT-2; Radford et al. 2019)."""

    def __init__(self, d_model, n_heads, context_length, base=10000.0):
        super().__init__(d_model, n_heads, context_length)
        self.wpe = nn.Embedding(context_length, d_model)
        self.max_len = context_length

    def embed(self, x, pos):  # the GPT checks pos < max_len before calling (no device sync here)
        return x + self.wpe(pos)  # (B, T, C) + (T, C)


def sinusoid_table(pos: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """(T, dim) table of sin/cos at geometric frequencies (Vaswani et al. 2017)."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim)  # (dim/2,)
    ang = pos.float()[:, None] * inv_freq[None, :]  # (T, dim/2)
    table = torch.zeros(len(pos), dim, device=pos.device)
    table[:, 0::2] = torch.sin(ang)
    table[:, 1::2] = torch.cos(ang)[:, : dim // 2]
    return table


@POSITIONAL.register("sinusoidal")
class Sinusoidal(PositionalScheme):
    """Fixed sinusoidal absolute embeddings (Vaswani et al. 2017, "Attention Is All You Need")."""

    def __init__(self, d_model, n_heads, context_length, base=10000.0):
        super().__init__(d_model, n_heads, context_length)
        self.d_model, self.base = d_model, base

    def embed(self, x, pos):
        return x + sinusoid_table(pos, self.d_model, self.base).to(x.dtype)


@POSITIONAL.register("rope")
class RoPE(PositionalScheme):
    """Rotary position embedding (Su et al. 2021, RoFormer), rotate-half layout as in GPT-NeoX/LLaMA."""

    rotates = True

    def __init__(self, d_model, n_heads, context_length, base=10000.0):
        super().__init__(d_model, n_heads, context_length)
        head_dim = d_model // n_heads
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary(self, pos):
        ang = pos.float()[:, None] * self.inv_freq[None, :]  # (T, D/2)
        ang = torch.cat([ang, ang], dim=-1)  # (T, D): rotate-half pairs i and i + D/2
        return ang.cos(), ang.sin()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, rot: Rotary) -> Tensor:
    """x (B, H, T, D) rotated by position; computed in fp32 for accuracy."""
    cos, sin = rot  # (T, D)
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def alibi_slopes(n_heads: int) -> Tensor:
    """Press et al. 2022: geometric slopes 2^(-8k/n); for n not a power of two, the
    slopes of the closest lower power of two plus every other slope of twice that."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (k + 1) for k in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    m = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(power_of_two(m) + power_of_two(2 * m)[0::2][: n_heads - m])


@POSITIONAL.register("alibi")
class ALiBi(PositionalScheme):
    """Attention with Linear Biases (Press et al. 2022, "Train Short, Test Long"):
    score(i, j) -= slope_h · (i - j); causal."""

    needs_bias = True

    def __init__(self, d_model, n_heads, context_length, base=10000.0):
        super().__init__(d_model, n_heads, context_length)
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def bias(self, pos, S):
        dist = pos.float()[:, None] - torch.arange(S, device=pos.device, dtype=torch.float32)[None, :]  # (T, S)
        return -self.slopes[:, None, None] * dist  # (H, T, S); future keys are masked separately
