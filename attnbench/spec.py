"""The frozen Spec of one job: what every component reads, resolved once by config/spec.py.

A leaf module (it imports nothing of attnbench at run time), so model/ and config/ both import it and
model/ never imports config/. `resolve_spec` in config/spec.py fills it in, asking each component for
its own facts; see config/spec.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    from .model.layout import MLADims


@dataclass(frozen=True)
class Spec:
    cfg: DictConfig  # read-only copy of the job's config, model.vocab_size resolved
    variant: str
    config_hash: str  # of the config as composed (what sweep resume and checkpoints compare)
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int  # MHA: n_heads; GQA: attn.n_kv_heads; MQA: 1 (attn=mla: n_heads, unused)
    head_dim: int  # d_model / n_heads
    rotary_dim: int  # channels per head RoPE rotates (attn=mla: its rope_head_dim)
    ffn_hidden: int
    ffn_matrices: int
    init_std: float  # model.init_std, or 1/sqrt(d_model) when null
    context_length: int
    max_positions: int | None  # the positional scheme's limit (learned: context_length); None = any
    window: int | None
    mla: MLADims | None = None  # attn=mla's resolved latent sizes
    gate_dim: int = 0  # attn.gate's projection width: 0 none, H headwise, H·D elementwise (model/gating.py)
