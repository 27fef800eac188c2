"""Errors every module may raise: a leaf with no imports from the package."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the field."""
