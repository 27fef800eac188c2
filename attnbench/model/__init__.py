"""Model construction from a composed config."""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from . import ffn, ffn_none, kernels, norm, position  # noqa: F401  (importing a component registers it)
from .gpt import GPT
from .mechanism import mechanism_of
from .tags import group_of


def build_model(cfg: DictConfig, vocab_size: int | None = None) -> GPT:
    """The GPT for a composed (and validated) config, or for a resolved spec, on CPU in fp32.

    `vocab_size` is the data's vocabulary when the data is known (train.data.prepare_data).
    Device placement and dtype belong to the caller (bench / train stages)."""
    from ..config.spec import Spec, resolve_spec  # a config is turned into its spec by config/, never here

    spec = cfg if isinstance(cfg, Spec) else resolve_spec(cfg, vocab_size)
    torch.manual_seed(int(spec.cfg.seed))
    return GPT(spec)


def param_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters by component; tied weights are counted once (under embedding).

    A component says which group it belongs to (`param_group`: attention, ffn, norm, embedding,
    head); a parameter goes to the outermost tagged module it sits in, so q/k norms inside the
    attention count as attention. Untagged parameters count as head."""
    groups = {"embedding": 0, "attention": 0, "ffn": 0, "norm": 0, "head": 0}
    seen: set[int] = set()
    for _prefix, module in _outermost_tagged(model):
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                groups[str(group_of(module))] += p.numel()
    groups["head"] += sum(p.numel() for p in model.parameters() if id(p) not in seen)
    groups["total"] = sum(groups.values())
    groups["non_embedding"] = groups["total"] - groups["embedding"]
    return groups


def _outermost_tagged(model: nn.Module) -> list[tuple[str, nn.Module]]:
    tagged: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():  # parents come before their children
        if group_of(module) is not None and not any(name.startswith(p + ".") for p, _ in tagged):
            tagged.append((name, module))
    return tagged


def kv_cache_bytes_per_token(cfg: DictConfig, bytes_per_element: int = 4) -> int:
    """2 (k and v) · layers · n_kv_heads · head_dim · bytes per element;
    attn=mla: layers · (kv_lora_rank + rope_head_dim) · bytes (the latent and the shared RoPE key).
    Takes a resolved spec or a config."""
    from ..config.spec import as_spec

    spec = as_spec(cfg)
    if spec.mla is not None:
        return spec.n_layers * (spec.mla.kv_rank + spec.mla.rope) * bytes_per_element
    mech = mechanism_of(spec.cfg)
    if mech is not None:  # attn=linear: 0 (its state does not grow); attn=diff: MHA's
        return mech.kv_bytes_per_token(spec, bytes_per_element)
    return 2 * spec.n_layers * spec.n_kv_heads * spec.head_dim * bytes_per_element


def recurrent_state_bytes(cfg: DictConfig, bytes_per_element: int = 4) -> int:
    """Decoding-state bytes per sequence that do not grow with its length (all layers): attn=linear's
    S and z; for attention with a KV cache 0, or attn.short_conv's last inputs. Takes a resolved spec or a config."""
    from ..config.spec import as_spec
    from .short_conv import state_elements

    spec = as_spec(cfg)
    mech = mechanism_of(spec.cfg)
    if mech is not None:
        return mech.state_bytes(spec, bytes_per_element)
    return state_elements(spec) * bytes_per_element if spec.mla is None else 0
