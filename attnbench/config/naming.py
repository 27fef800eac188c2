"""Run labels and the config hash used by sweep resume."""
from __future__ import annotations

import hashlib
import json
import time
import uuid

from omegaconf import DictConfig, OmegaConf


def variant_name(cfg: DictConfig) -> str:
    """Stable run label, e.g. `gqa-alibi-rmsnorm-swiglu-L4-D256` (post-LN adds `_post`)."""
    norm = cfg.norm.name + ("_post" if cfg.norm.placement == "post" else "")
    return f"{cfg.attn.name}-{cfg.pos.name}-{norm}-{cfg.ffn.name}-L{cfg.model.n_layers}-D{cfg.model.d_model}"


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config minus bookkeeping keys, used by sweep resume."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)  # a DictConfig's container is a dict
    data.pop("hydra", None)
    data.pop("resume", None)
    data.get("train", {}).pop("resume", None)
    data.pop("logger", None)
    data.pop("launch_id", None)  # which launch ran it, not what it ran
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _variant_resolver(*, _root_: DictConfig) -> str:
    return variant_name(_root_)


if not OmegaConf.has_resolver("variant"):
    OmegaConf.register_new_resolver("variant", _variant_resolver)


def new_launch_id() -> str:
    """A launch id: the launching machine's time (readable) and 8 random hex digits (unique)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


# `launch_id: ${launch_id:}` (conf/config.yaml). Cached per config: Hydra copies the launching
# config's resolver cache into every job's config, so all jobs of one launch share the id
# (track/launch.py; sweep/callback.py resolves it in the launching process before any job starts).
if not OmegaConf.has_resolver("launch_id"):
    OmegaConf.register_new_resolver("launch_id", new_launch_id, use_cache=True)
