"""Compatibility alias: DBOS Transact code imports errors from `dbos._error`."""

from .error import *  # noqa: F403
from .error import __all__  # noqa: F401
