"""Parameter count of a spec without building the model: the components count themselves.

`count_params` builds the model with its parameters on PyTorch's `meta` device (shapes, no
storage), with one and with two layers; the blocks are identical, so the count for L layers is
exact: params(1) + (L - 1) · (params(2) - params(1)). Every component (attention, MLA, gates,
sinks, FFN, norms, positional tables, tied embeddings) thus contributes what its own constructor
makes, and a component registered from outside the package is counted with no formula of its own.
tests/test_size.py compares it with `param_breakdown` of real models.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch.overrides import TorchFunctionMode

from ..spec import Spec
from . import param_breakdown
from .gpt import GPT

_FILLS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_}


class _ParamsOnMeta(TorchFunctionMode):
    """`torch.empty` (what nn.Linear, nn.Embedding and the norms make their parameters with) on `meta`;
    initialising a meta tensor does nothing. Why not `with torch.device("meta")`: the meta versions of
    arange and of the random fills are Python decompositions whose first use imports torch._dynamo
    and sympy (2 to 4 s here), and the count must take milliseconds. Small buffers (RoPE frequencies)
    stay on the CPU."""

    def __torch_function__(self, func: Callable[..., Any], types: object, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:  # torch's override protocol
        kwargs = kwargs or {}
        if func is torch.empty:
            kwargs["device"] = "meta"
        elif func in _FILLS or getattr(func, "__module__", "") == "torch.nn.init":
            target = args[0] if args else kwargs.get("tensor")
            if getattr(target, "is_meta", False):
                return target
        return func(*args, **kwargs)


_CACHE: dict[tuple[str, int], tuple[int, int]] = {}  # (model sections, vocab) -> counts at 1 and 2 layers


def count_params(spec: Spec) -> int:
    """Parameters of `GPT(spec)` (tied weights once), allocating nothing the size of the model."""
    one, two = _small_counts(spec)
    return one + (spec.n_layers - 1) * (two - one)


def _small_counts(spec: Spec) -> tuple[int, int]:
    """Parameters with one and with two layers; cached, since a sweep's jobs mostly share their model
    (they differ in seed, learning rate, ...)."""
    key = (_model_sections(spec.cfg), spec.vocab_size)
    if key not in _CACHE:
        with _ParamsOnMeta():
            one, two = (param_breakdown(GPT(dataclasses.replace(spec, n_layers=n)))["total"] for n in (1, 2))
            _CACHE[key] = one, two
    return _CACHE[key]


def _model_sections(cfg: DictConfig) -> str:
    """What the model is built from: the config minus the sections the model never reads, and minus
    model.n_layers (the count is linear in it)."""
    from omegaconf import OmegaConf

    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("attn", "pos", "norm", "ffn", "model")}
    model = parts["model"]
    assert isinstance(model, dict)
    model.pop("n_layers", None)
    return json.dumps(parts, sort_keys=True, default=str)


__all__ = ["count_params"]
