"""Positional schemes: none, learned, sinusoidal, rope, alibi.

A scheme may embed (add to the token embeddings), rotate q/k, or add a bias to
the attention scores. Every hook is a no-op by default; the GPT computes the
rotary tables and the bias once per forward and hands them to every layer.
Positions are absolute (`pos`, a LongTensor (T,)), so KV-cache decoding
continues where the cache left off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..registry import POSITIONAL
from ..spec import Spec

Rotary = tuple[Tensor, Tensor]  # (cos, sin), each (T, D)


class PositionalScheme(nn.Module):
    needs_bias: ClassVar[bool] = False
    rotates: ClassVar[bool] = False
    max_len: int | None = None  # None = any length

    def __init__(self, d_model: int, n_heads: int, context_length: int, base: float = 10000.0):
        super().__init__()

    param_group: ClassVar[str] = "embedding"

    @classmethod
    def max_length(cls, context_length: int) -> int | None:
        """The longest sequence this scheme can place (None = any): what validation checks lengths against."""
        return None

    @classmethod
    def from_spec(cls, spec: Spec) -> PositionalScheme:
        """The scheme for a resolved spec (RoPE reads its pos.scaling fields here)."""
        return cls(spec.d_model, spec.n_heads, spec.context_length, base=spec.cfg.pos.base)

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:  # x (B, T, C)
        return x

    def rotary(self, pos: Tensor) -> Rotary | None:
        return None

    def bias(self, pos: Tensor, S: int) -> Tensor | None:  # -> (H, T, S)
        return None


@POSITIONAL.register("none")
class NoPE(PositionalScheme):
    """No positional information (NoPE; Kazemnejad et al. 2023): causal masking alone."""


@POSITIONAL.register("learned")
class Learned(PositionalScheme):
    """Learned absolute position embeddings (GPT-2; Radford et al. 2019)."""

    def __init__(self, d_model: int, n_heads: int, context_length: int, base: float = 10000.0) -> None:
        super().__init__(d_model, n_heads, context_length)
        self.wpe = nn.Embedding(context_length, d_model)
        self.max_len = self.max_length(context_length)

    @classmethod
    def max_length(cls, context_length: int) -> int | None:  # one row per position: nothing past the table
        return context_length

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:  # the GPT checks pos < max_len before calling (no device sync here)
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
    """Fixed sinusoidal absolute embeddings (Vaswani et al. 2017, "Attention Is All You Need").

    As in the paper (Sec. 3.4), the token embeddings are multiplied by sqrt(d_model) before the
    table is added: the table's RMS is 1/sqrt(2) = 0.707 at any width, while N(0, init_std) token
    embeddings have RMS init_std (0.02 at d=768), so unscaled the positions would drown the tokens
    (35x at d=256, init 0.02). Scaled, the token part has RMS init_std·sqrt(d_model) (1 with
    model.init_std=null). The tied LM head reads the unscaled weights, as in the paper."""

    def __init__(self, d_model: int, n_heads: int, context_length: int, base: float = 10000.0) -> None:
        super().__init__(d_model, n_heads, context_length)
        self.d_model, self.base = d_model, base
        self.token_scale = math.sqrt(d_model)

    def embed(self, x: Tensor, pos: Tensor) -> Tensor:
        return x * self.token_scale + sinusoid_table(pos, self.d_model, self.base).to(x.dtype)


ROPE_SCALINGS = ("none", "linear", "ntk", "yarn", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE context extension (`pos.scaling` and its parameters; see rope_frequencies)."""

    kind: str = "none"  # none | linear | ntk | yarn | llama3
    factor: float = 1.0  # target length / original length
    original_context: int = 512  # the length the unscaled model was trained at
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn: dims rotating more than beta_fast times in original_context extrapolate
    beta_slow: float = 1.0  # yarn: dims rotating fewer than beta_slow times are interpolated


def rope_base_freqs(head_dim: int, base: float = 10000.0) -> Tensor:
    """(D/2,) inverse frequencies base^(-2i/D), written as 1/base^(2i/D) exactly as transformers
    computes them (the two forms differ in the last float32 bit)."""
    return 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)


def rope_frequencies(head_dim: int, base: float = 10000.0,
                     scaling: RopeScaling | None = None) -> tuple[Tensor, float]:
    """(inv_freq (D/2,), attention factor) for RoPE with an optional context-extension rule.

    The attention factor multiplies cos and sin (so q·k by its square); it is 1 except for YaRN.
    - linear: position interpolation (Chen et al. 2023): every frequency / factor.
    - ntk: static NTK-aware scaling (bloc97 2023; Peng et al. 2023 Sec. 3.1): base · factor^(D/(D-2)),
      so the lowest frequency is interpolated by `factor` and the highest is nearly untouched.
    - yarn: YaRN (Peng et al. 2023): NTK-by-parts, a linear ramp between extrapolated (fast) and
      interpolated (slow) dims, set by beta_fast/beta_slow rotations in original_context, plus the
      attention temperature sqrt(1/t) = 0.1·ln(factor) + 1 applied to cos/sin as transformers does.
    - llama3: Meta's Llama 3.1 rule: wavelengths above original_context/low_freq_factor / factor,
      below original_context/high_freq_factor unchanged, a smooth blend in between."""
    s = scaling or RopeScaling()
    if s.kind == "ntk":
        base = base * s.factor ** (head_dim / (head_dim - 2))
    inv_freq = rope_base_freqs(head_dim, base)  # (D/2,)
    if s.kind in ("none", "ntk"):
        return inv_freq, 1.0
    if s.kind == "linear":
        return inv_freq / s.factor, 1.0
    if s.kind == "yarn":
        return _yarn(inv_freq, head_dim, base, s)
    if s.kind == "llama3":
        return _llama3(inv_freq, s), 1.0
    raise ValueError(f"pos.scaling={s.kind}: choose from [{', '.join(ROPE_SCALINGS)}]")


def _yarn(inv_freq: Tensor, dim: int, base: float, s: RopeScaling) -> tuple[Tensor, float]:
    def correction_dim(n_rot: float) -> float:  # the dim index that turns n_rot times in original_context
        return dim * math.log(s.original_context / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(s.beta_fast)), 0)
    high: float = min(math.ceil(correction_dim(s.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # a ramp of width 0 would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)  # 0 = fast dims
    extrapolate = 1 - ramp  # (D/2,): 1 keeps the frequency, 0 divides it by factor
    scaled = inv_freq / s.factor * (1 - extrapolate) + inv_freq * extrapolate
    mscale = 0.1 * math.log(s.factor) + 1.0 if s.factor > 1 else 1.0
    return scaled, mscale


def _llama3(inv_freq: Tensor, s: RopeScaling) -> Tensor:
    low_wavelen = s.original_context / s.low_freq_factor
    high_wavelen = s.original_context / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq  # (D/2,)
    out = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * out / s.factor + smooth * out
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, out)


@POSITIONAL.register("rope")
class RoPE(PositionalScheme):
    """Rotary position embedding (Su et al. 2021, RoFormer), rotate-half layout as in GPT-NeoX/LLaMA,
    with optional context extension (`pos.scaling`, see rope_frequencies).

    `train_scaled=False` rotates with the plain frequencies in training mode and the scaled ones in
    eval mode: a model trained at original_context and extended only at inference, which is the
    "without fine-tuning" setting of the PI/NTK/YaRN papers (pos.scaling_in_training=false)."""

    rotates = True
    inv_freq: Tensor  # buffers (D/2,)
    inv_freq_plain: Tensor

    def __init__(self, d_model: int, n_heads: int, context_length: int, base: float = 10000.0,
                 scaling: RopeScaling | None = None, train_scaled: bool = True, head_dim: int | None = None) -> None:
        super().__init__(d_model, n_heads, context_length)
        head_dim = head_dim or d_model // n_heads  # attn=mla rotates only its rope_head_dim channels
        inv_freq, self.mscale = rope_frequencies(head_dim, base, scaling)  # (D/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.train_scaled = train_scaled
        self.register_buffer("inv_freq_plain", rope_base_freqs(head_dim, base), persistent=False)

    @classmethod
    def from_spec(cls, spec: Spec) -> RoPE:
        p = spec.cfg.pos
        scaling = RopeScaling(
            kind=p.scaling, factor=float(p.factor),
            original_context=int(p.original_context if p.original_context is not None else spec.context_length),
            low_freq_factor=float(p.low_freq_factor), high_freq_factor=float(p.high_freq_factor),
            beta_fast=float(p.beta_fast), beta_slow=float(p.beta_slow),
        )
        return cls(spec.d_model, spec.n_heads, spec.context_length, base=p.base,
                   scaling=scaling, train_scaled=bool(p.scaling_in_training), head_dim=spec.rotary_dim)

    def rotary(self, pos: Tensor) -> Rotary | None:
        plain = self.training and not self.train_scaled
        inv_freq, mscale = (self.inv_freq_plain, 1.0) if plain else (self.inv_freq, self.mscale)
        ang = pos.float()[:, None] * inv_freq[None, :]  # (T, D/2)
        ang = torch.cat([ang, ang], dim=-1)  # (T, D): rotate-half pairs i and i + D/2
        if mscale == 1.0:
            return ang.cos(), ang.sin()
        return ang.cos() * mscale, ang.sin() * mscale  # YaRN: q·k scaled by mscale² (its temperature)


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
    slopes: Tensor  # buffer (H,)

    def __init__(self, d_model: int, n_heads: int, context_length: int, base: float = 10000.0) -> None:
        super().__init__(d_model, n_heads, context_length)
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def bias(self, pos: Tensor, S: int) -> Tensor | None:
        dist = pos.float()[:, None] - torch.arange(S, device=pos.device, dtype=torch.float32)[None, :]  # (T, S)
        return -self.slopes[:, None, None] * dist  # (H, T, S); future keys are masked separately
