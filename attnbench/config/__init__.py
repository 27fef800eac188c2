"""Configuration: the typed schema, composition (`load_config`), cross-axis validation and run naming.

    schema.py    one dataclass per config group (registered with Hydra as `attnbench_schema`)
    compose.py   where conf/ is, the groups, one-line Hydra errors
    validate.py  `validate(cfg)`: every check, before anything is allocated
    load.py      `load_config(overrides)`: compose + validate, as the CLI does
    naming.py    `variant_name`, `config_hash`
"""
from ..errors import ConfigError
from ..model.layout import resolve_layout
from .compose import AXES, GROUPS, check_group_overrides, conf_dir, group_options, one_line_error
from .load import load_config
from .naming import config_hash, variant_name
from .schema import Config, register_schema
from .validate import validate

__all__ = ["AXES", "GROUPS", "Config", "ConfigError", "check_group_overrides", "conf_dir", "config_hash",
           "group_options", "load_config", "one_line_error", "register_schema", "resolve_layout", "validate",
           "variant_name"]
