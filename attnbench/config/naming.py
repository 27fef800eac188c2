"""Run labels and the config hash used by sweep resume."""
from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

def variant_name(cfg: DictConfig) -> str:
    """Stable run label, e.g. `gqa-alibi-rmsnorm-swiglu-L4-D256` (post-LN adds `_post`)."""
    norm = cfg.norm.name + ("_post" if cfg.norm.placement == "post" else "")
    return f"{cfg.attn.name}-{cfg.pos.name}-{norm}-{cfg.ffn.name}-L{cfg.model.n_layers}-D{cfg.model.d_model}"


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config minus bookkeeping keys, used by sweep resume."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    data.pop("resume", None)
    data.get("train", {}).pop("resume", None)
    data.pop("logger", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _variant_resolver(*, _root_: DictConfig) -> str:
    return variant_name(_root_)


if not OmegaConf.has_resolver("variant"):
    OmegaConf.register_new_resolver("variant", _variant_resolver)
