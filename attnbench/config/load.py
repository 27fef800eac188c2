"""`load_config`: compose `conf/` as the CLI does, then validate (validation sits above composition)."""
from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from ..errors import ConfigError
from .compose import check_group_overrides, conf_dir, one_line_error
from .validate import validate


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `conf/` exactly as the CLI does, apply overrides, validate."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_group_overrides(overrides)
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside a Hydra app
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=list(overrides))
    except ConfigError:
        raise
    except Exception as exc:  # Hydra/OmegaConf errors are multi-line: keep one line
        raise ConfigError(one_line_error(exc)) from exc
    validate(cfg)
    return cfg
