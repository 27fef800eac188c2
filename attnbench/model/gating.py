"""Output gating (attn.gate): a sigmoid gate on each head's attention output, before the output
projection (position G1 of Qiu et al. 2025, "Gated Attention for Large Language Models"; the
full-attention layers of Qwen3-Next use the elementwise form).

    y_h ← y_h ⊙ σ(x W_g + b_g)_h        x: the attention block's input (after its pre-norm)

`headwise` gives one gate per head (W_g: d_model → H), `elementwise` one per output channel
(W_g: d_model → H·D). The gate is its own Linear (`attn.gate.proj`), so a model without a gate
keeps the same state_dict keys; Qwen3-Next packs the same rows into its q_proj, interleaved per
head (docs/reference-models.md). It has a bias exactly when q does (attn.qkv_bias), as Qwen3-Next's
q_proj; it starts like every Linear (N(0, init std)), so every gate opens at about σ(0) = 1/2.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

# gate kind -> its width for H heads of D channels; "none" = no gate
GATES: dict[str, Callable[[int, int], int]] = {"none": lambda H, D: 0, "headwise": lambda H, D: H, "elementwise": lambda H, D: H * D}


def gate_dim(kind: str, n_heads: int, head_dim: int) -> int:
    """Output width of the gate projection: 0 (none), H (headwise) or H·D (elementwise)."""
    return GATES[kind](n_heads, head_dim)


class OutputGate(nn.Module):
    """σ(x W_g + b_g) applied to the attention output y (B, T, H, D), per head or per element."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, kind: str, bias: bool = False):
        super().__init__()
        self.kind, self.n_heads = kind, n_heads
        self.proj = nn.Linear(d_model, gate_dim(kind, n_heads, head_dim), bias=bias)
        self.record = False  # set by model.probes: keep the mean gate value of the last forward
        self.mean_gate: Tensor | None = None

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x (B, T, C) the block input, y (B, T, H, D) the heads' outputs → gated y (B, T, H, D)."""
        B, T, H, _ = y.shape
        g = torch.sigmoid(self.proj(x)).view(B, T, H, -1)  # (B, T, H, 1) headwise, (B, T, H, D) elementwise
        if self.record:
            self.mean_gate = g.detach().float().mean()
        return y * g


def build_gate(cfg: DictConfig, d_model: int, n_heads: int, head_dim: int) -> OutputGate | None:
    """The gate attn.gate asks for, or None (attn.gate=none)."""
    kind = cfg.attn.get("gate", "none")
    if kind == "none":
        return None
    return OutputGate(d_model, n_heads, head_dim, kind, bias=bool(cfg.attn.qkv_bias))


def config_problem(cfg: DictConfig) -> str | None:
    """One line naming the keys when attn.gate cannot work with this config, else None."""
    kind = cfg.attn.get("gate", "none")
    if kind not in GATES:
        return f"attn.gate={kind}: not allowed; choose from [{', '.join(GATES)}]"
    if kind != "none" and cfg.attn.name == "mla":  # MLA's module (model/mla.py) has no gate
        return f"attn.gate={kind}: not with attn=mla (no gate on latent attention); use attn=mha, gqa, mqa or local"
    return None
