"""Whole-model check shared by the attention-mechanism tests: no logit sees a later token."""
from __future__ import annotations

import torch
from torch import nn


def assert_causal(model: nn.Module, idx: torch.Tensor, t: int, vocab: int) -> None:
    """Changing token t changes no logit before it."""
    other = idx.clone()
    other[:, t] = (idx[:, t] + 1) % vocab
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[:, :t], model(other)[:, :t])
