"""attnbench: config-driven benchmarking and ablation harness for attention."""
import logging

from .config import ConfigError, load_config, validate, variant_name
from .model import build_model
from .task import load_task

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["ConfigError", "build_model", "load_config", "load_task", "validate", "variant_name"]
__version__ = "0.1.0"
