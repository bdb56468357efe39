"""DBOSConfiguredInstance: instances registered by name so recovery can rebind `self` (01 §4.4 rule 5)."""

from __future__ import annotations

from ._registry import REGISTRY


class DBOSConfiguredInstance:
    def __init__(self, config_name: str) -> None:
        from ._validation import check_identifier

        self.config_name = check_identifier(config_name, "config_name")
        class_name = getattr(type(self), "__dbos_class_name__", type(self).__qualname__)
        REGISTRY.register_instance(f"{class_name}/{self.config_name}", self)
