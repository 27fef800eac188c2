"""Whole-model checks shared by the attention-mechanism tests: no logit sees a later token; random short convs."""
from __future__ import annotations

import torch
from torch import nn


def assert_causal(model: nn.Module, idx: torch.Tensor, t: int, vocab: int) -> None:
    """Changing token t changes no logit before it."""
    other = idx.clone()
    other[:, t] = (idx[:, t] + 1) % vocab
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[:, :t], model(other)[:, :t])


def with_random_convs(model: nn.Module) -> nn.Module:
    """attn.short_conv's taps drawn at random, in eval mode (at init each conv is the identity, which
    would hide a conv state that decoding fails to carry)."""
    with torch.no_grad():
        for block in model.blocks:
            block.attn.conv.weight.normal_()
    return model.eval()
