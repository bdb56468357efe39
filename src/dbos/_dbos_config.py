"""Compatibility alias for `from dbos._dbos_config import DBOSConfig`."""

from ._config import DBOSConfig

__all__ = ["DBOSConfig"]
