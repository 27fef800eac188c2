"""Composition: find `conf/`, compose it exactly as the CLI does (`load_config`), and
turn Hydra's multi-line errors into one line naming the key."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError

CONF_DIR_CANDIDATES = (
    Path(__file__).resolve().parent.parent / "conf",  # wheel: conf/ shipped as attnbench.conf
    Path(__file__).resolve().parent.parent.parent / "conf",  # source checkout / editable install
)

# Each ablation axis is a Hydra config group whose chosen option is stored in `<group>.name`.
AXES = ("attn", "pos", "norm", "ffn", "model")
GROUPS = AXES + ("device", "bench", "train", "data", "logger", "experiment")


def conf_dir() -> Path:
    for cand in CONF_DIR_CANDIDATES:
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError("attnbench: cannot find conf/config.yaml next to the package")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def check_group_overrides(overrides: Sequence[str]) -> None:
    """Reject `group=unknown` (also inside sweep lists) with the allowed values."""
    for ov in overrides:
        key, sep, value = ov.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        allowed = group_options(key)
        for v in value.split(","):
            v = v.strip()
            if v and v != "null" and v not in allowed:
                raise ConfigError(f"{key}={v}: unknown option; choose from [{', '.join(allowed)}]")


def one_line_error(exc: BaseException) -> str:
    """Flatten a Hydra/OmegaConf exception chain into one line naming the key."""
    from omegaconf.errors import OmegaConfBaseException

    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            msg = str(getattr(e, "msg", e)).splitlines()[0]
            schema = getattr(e, "object_type", None)
            if msg.startswith("Key ") and dataclasses.is_dataclass(schema):  # a typo'd key: list the real ones
                msg = f"unknown key; choose from [{', '.join(f.name for f in dataclasses.fields(schema))}]"
            return f"{e.full_key}: {msg}"
    return " ".join(str(exc).split())


