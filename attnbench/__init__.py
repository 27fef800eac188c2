"""attnbench: config-driven benchmarking and ablation harness for attention."""
import logging
from importlib import import_module

from .errors import ConfigError

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Imported on first use (PEP 562): `python -m attnbench.report` and `python -m attnbench.sweep` read result
# files and never build a model, so they do not pay torch's import (about 2 s and 250 MB).
_LAZY = {"load_config": ".config", "validate": ".config", "variant_name": ".config", "build_model": ".model",
         "load_task": ".task"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConfigError", "build_model", "load_config", "load_task", "validate", "variant_name"]
__version__ = "0.1.0"
