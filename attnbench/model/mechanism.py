"""Attention mechanisms other than one softmax map: what each can be combined with, declared as
capability flags (the way kernels declare theirs in kernels.py), and the facts the harness asks
of it (its module, cache, FLOPs, bytes per token and constant state bytes).

`attn=<name>` picks a mechanism from `MECHANISMS`; plain softmax attention (mha, gqa, mqa, local)
and attn=mla are not in it. A mechanism's own `attn.*` fields (`fields`) are null in the schema
and set by its conf/attn/<name>.yaml, so a field set without its mechanism is rejected, not ignored.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from omegaconf import DictConfig
from torch import nn

from ..spec import Spec
from .cache import Cache
from .kernels import Kernel


class Mechanism:
    """Base class: every flag defaults to "can"; a mechanism says what it cannot do."""

    name: ClassVar[str] = "base"
    fields: ClassVar[tuple[str, ...]] = ()  # attn.* fields only this mechanism reads
    supports_bias: ClassVar[bool] = True  # an additive score bias (pos=alibi)
    supports_window: ClassVar[bool] = True
    supports_softcap: ClassVar[bool] = True
    supports_qk_norm: ClassVar[bool] = True
    supports_dropout: ClassVar[bool] = True  # attention dropout (attn.dropout)
    supports_gate: ClassVar[bool] = True  # attn.gate (model/gating.py)
    supports_sinks: ClassVar[bool] = True  # attn.sinks (model/sinks.py)
    uses_kernel: ClassVar[bool] = True  # False: computes its own mixing; attn.impl is not used
    kernel_needs_gqa: ClassVar[bool] = False  # its kernel call groups query heads on fewer KV heads

    @classmethod
    def unsupported(cls, cfg: DictConfig, kernel: Kernel) -> str | None:
        """One line naming the keys of a combination this mechanism cannot serve, or None."""
        a, me = cfg.attn, f"attn={cls.name}"
        from ..registry import POSITIONAL

        if POSITIONAL.get(cfg.pos.name).needs_bias and not cls.supports_bias:
            return f"pos={cfg.pos.name}: {me} has no score matrix to add a position bias to; use pos=none, learned, sinusoidal or rope"
        if a.window is not None and not cls.supports_window:
            return f"attn.window={a.window}: {me} has no sliding window (attn.window must be null)"
        if a.softcap is not None and not cls.supports_softcap:
            return f"attn.softcap={a.softcap}: {me} has no attention logits to cap (attn.softcap must be null)"
        if cfg.norm.qk_norm and not cls.supports_qk_norm:
            return f"norm.qk_norm=true: not with {me}"
        if a.dropout > 0 and not cls.supports_dropout:
            return f"attn.dropout={a.dropout}: {me} has no attention probabilities to drop (attn.dropout must be 0)"
        if a.get("gate", "none") != "none" and not cls.supports_gate:
            return f"attn.gate={a.gate}: not with {me} (its module has no output gate); use attn=mha, gqa, mqa or local"
        if a.get("sinks", False) and not cls.supports_sinks:
            return f"attn.sinks=true: not with {me} (no sink logit in its maps); use attn=mha, gqa, mqa or local"
        if not cls.uses_kernel and a.impl != "sdpa":
            return (f"attn.impl={a.impl}: {me} computes its own token mixing and calls no softmax kernel; "
                    "leave attn.impl at its default (sdpa)")
        if cls.uses_kernel and kernel.owns_projection:
            return f"attn.impl={a.impl}: runs its own projections, so not {me}"
        if cls.kernel_needs_gqa and not kernel.supports_gqa:
            return f"attn.impl={a.impl}: {me} calls the kernel with query heads grouped on shared KV heads (needs GQA support)"
        return cls._extra_unsupported(cfg, kernel)

    @classmethod
    def _extra_unsupported(cls, cfg: DictConfig, kernel: Kernel) -> str | None:
        return None

    @classmethod
    def build(cls, spec: Spec, kernel: Kernel, layer: int) -> nn.Module:
        """The attention module of layer `layer` (0-based) of a resolved spec."""
        raise NotImplementedError

    @classmethod
    def attention_flops(cls, spec: Spec, keys: float, decode: bool) -> float:
        """Forward FLOPs per token and layer of the token mixing (the projections are counted by flops.py)."""
        raise NotImplementedError

    @classmethod
    def kv_bytes_per_token(cls, spec: Spec, bytes_per_element: int) -> int:
        """Cache bytes that grow with every token (all layers)."""
        return 2 * spec.n_layers * spec.n_kv_heads * spec.head_dim * bytes_per_element

    @classmethod
    def state_bytes(cls, spec: Spec, bytes_per_element: int) -> int:
        """Cache bytes per sequence that do not grow with its length (all layers)."""
        return 0

    @classmethod
    def init_cache(cls, model: nn.Module, batch_size: int, max_len: int, device: torch.device,
                   dtype: torch.dtype) -> Cache | None:
        """The decoding cache of `model`, or None for the plain KV cache."""
        return None


MECHANISMS: dict[str, type[Mechanism]] = {}


def register(cls: type[Mechanism]) -> type[Mechanism]:
    MECHANISMS[cls.name] = cls
    return cls


def mechanism_of(cfg: DictConfig) -> type[Mechanism] | None:
    """The mechanism `attn.name` picks, or None (softmax attention, attn=mla)."""
    return MECHANISMS.get(cfg.attn.name)


def config_problem(cfg: DictConfig, kernel: Kernel) -> str | None:
    """A mechanism's field set without it, or a combination the chosen mechanism rejects; else None."""
    chosen = mechanism_of(cfg)
    for mech in MECHANISMS.values():
        if mech is chosen:
            continue
        for key in mech.fields:
            if cfg.attn.get(key) is not None:
                return f"attn.{key}={cfg.attn[key]}: only used by attn={mech.name} (got attn={cfg.attn.name}); leave it unset"
    return chosen.unsupported(cfg, kernel) if chosen is not None else None
