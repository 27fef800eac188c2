"""The self-attention modules the project grew from, in textbook form.

After S. Raschka, *Build a Large Language Model (From Scratch)*, Manning 2024,
chapter 3 ("Coding attention mechanisms"): a self-attention with raw
`nn.Parameter` matrices (v1), the same with `nn.Linear` layers (v2), a causal
single-head attention with dropout, and the per-head wrapper. Written for this
project; they are not used by the GPT (its `wrapper` kernel is the batched
equivalent of `MultiHeadAttentionWrapper`) but pin the facts tested in
tests/test_textbook.py.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class SelfAttention_v1(nn.Module):
    """Scaled dot-product self-attention with weight matrices stored as nn.Parameter (d_in, d_out).

    x (T, d_in) -> context (T, d_out); no mask, no batch dimension (Raschka §3.4.1)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = x @ self.W_query, x @ self.W_key, x @ self.W_value  # (T, d_out) each
        weights = torch.softmax(q @ k.T / k.shape[-1] ** 0.5, dim=-1)  # (T, T)
        return weights @ v


class SelfAttention_v2(nn.Module):
    """The same computation with nn.Linear projections (Raschka §3.4.2).

    nn.Linear stores its weight as (d_out, d_in) and computes x Wᵀ, so v1 with
    `W_query = v2.W_query.weight.T` (and likewise k, v) gives identical outputs."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (T, d_out) each
        weights = torch.softmax(q @ k.T / k.shape[-1] ** 0.5, dim=-1)  # (T, T)
        return weights @ v


class CausalAttention(nn.Module):
    """One causal attention head over a batch, with dropout on the attention weights (Raschka §3.5).

    x (B, T, d_in) -> context (B, T, d_out); query t sees keys 0..t."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal = a future key, masked out. A buffer moves with .to(device).
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), 1))

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_out) each
        scores = (q @ k.transpose(1, 2)).masked_fill(self.mask[:T, :T], float("-inf"))  # (B, T, T)
        weights = self.dropout(torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1))
        return weights @ v  # (B, T, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """Multi-head attention as a list of independent CausalAttention heads whose outputs
    are concatenated (Raschka §3.6.1): simple, and slow because the heads run one by one.

    Here `d_out` is the TOTAL output width and each head has `d_out // num_heads`
    dimensions, so 2 heads with d_out=2 give 2-dimensional context vectors (the book's
    exercise 3.2). In the book's own listing `d_out` is per head, so the output is
    `num_heads * d_out` wide."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, num_heads: int = 2,
                 qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} must be divisible by num_heads={num_heads}")
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out // num_heads, context_length, dropout, qkv_bias) for _ in range(num_heads)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (B, T, d_out)
