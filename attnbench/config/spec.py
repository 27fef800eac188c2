"""The resolved spec: every figure derived from a job's config, computed once.

A composed config says what the user asked for (`attn: gqa`, `model.init_std: null`); the
spec says what that means for this job (4 query heads sharing 2 KV heads of 16 dims, an
FFN of 256 hidden units in 2 matrices, init std 0.125, a vocabulary of 17 from the data).
`resolve_spec` is the one place these are derived; the model, the FLOPs counter, the bench
and the W&B sink read them from here. The config is never changed in place: the spec keeps
a read-only copy whose `model.vocab_size` is the resolved vocabulary.

Components own their facts (an FFN class knows its hidden size and matrix count, a
positional scheme its maximum length, the head layout its KV heads); this module only asks them.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..model.gating import gate_dim
from ..model.layout import MLADims, resolve_layout, rotary_dim
from ..registry import FFNS, POSITIONAL
from ..spec import Spec as Spec  # defined in the leaf module attnbench/spec.py; public here too
from .naming import config_hash, variant_name


def resolve_init_std(cfg: DictConfig) -> float:
    """model.init_std, or 1/sqrt(model.d_model) when it is null, so the init follows the width."""
    std = cfg.model.get("init_std")
    return float(std) if std is not None else float(cfg.model.d_model) ** -0.5


def resolve_spec(cfg: DictConfig, vocab_size: int | None = None) -> Spec:
    """The spec of a composed, validated config; `vocab_size` is the data's when it is known."""
    m, a = cfg.model, cfg.attn
    vocab = int(vocab_size if vocab_size is not None else m.vocab_size)
    frozen = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(frozen, DictConfig)  # a DictConfig's container is a dict
    frozen.model.vocab_size = vocab
    OmegaConf.set_readonly(frozen, True)
    ffn = FFNS.get(cfg.ffn.name)
    d = int(m.d_model)
    return Spec(
        cfg=frozen, variant=variant_name(cfg), config_hash=config_hash(cfg), vocab_size=vocab,
        d_model=d, n_layers=int(m.n_layers), n_heads=int(a.n_heads), n_kv_heads=resolve_layout(cfg),
        head_dim=d // int(a.n_heads), rotary_dim=rotary_dim(cfg),
        ffn_hidden=ffn.hidden_size(d, float(cfg.ffn.mult), int(cfg.ffn.multiple_of)), ffn_matrices=ffn.n_matrices,
        init_std=resolve_init_std(cfg), context_length=int(m.context_length),
        max_positions=POSITIONAL.get(cfg.pos.name).max_length(int(m.context_length)),
        window=a.window, mla=MLADims.from_cfg(cfg) if a.name == "mla" else None,
        gate_dim=gate_dim(a.get("gate", "none"), int(a.n_heads), d // int(a.n_heads)),
    )


def as_spec(cfg_or_spec: Any) -> Spec:
    """A Spec as it is, or the spec of a config (public functions take either)."""
    return cfg_or_spec if isinstance(cfg_or_spec, Spec) else resolve_spec(cfg_or_spec)
