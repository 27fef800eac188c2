"""Name → component registries, one per ablation axis.

Registered names are the public interface (config values, result labels, W&B
groups), so a lookup failure says which field was wrong and what is allowed.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str):
        self.key = key  # the config key users set, e.g. "attn.impl"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.key}: '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"{self.key}={name}: unknown option; choose from [{', '.join(self.names())}]") from None

    def names(self) -> list[str]:
        return sorted(self._items)


# Registry[Any]: this module is a leaf (tests/test_imports.py), so it cannot name the component types;
# the lookup sites in model/ say what they get (get_kernel -> Kernel, ...).
KERNELS: Registry[Any] = Registry("attn.impl")
POSITIONAL: Registry[Any] = Registry("pos")
NORMS: Registry[Any] = Registry("norm")
FFNS: Registry[Any] = Registry("ffn")
LOGGERS: Registry[Any] = Registry("logger")  # filled by attnbench.track.loggers: name -> (cfg, run_dir) -> Sink | None

# The model package imports its components, which register themselves here; this module imports none.
REGISTRIES: dict[str, Registry[Any]] = {"kernel": KERNELS, "positional": POSITIONAL, "norm": NORMS, "ffn": FFNS}

