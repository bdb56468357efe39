"""Scheduled garbage collection (02 §10 rule 5): every `retention_interval_sec`, at most one executor of the
application (a database maintenance lease decides which) runs `garbage_collect(cutoff=now - max_age,
keep_last=...)`. The first run happens within one interval after launch."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from .. import _management as mg
from .engine import Engine

_log = logging.getLogger("dbos")


class Retention:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        s = engine.settings
        self.interval_s = s.retention_interval_s
        self.enabled = s.retention_max_age_s is not None or s.retention_keep_last is not None
        self._thread = threading.Thread(target=self._run, name="dbos-retention", daemon=True)

    def start(self) -> None:
        if self.enabled:
            self._thread.start()
            self.engine.background.append(self._thread)

    def run_once(self) -> int | None:
        """Collect if this executor wins the interval's lease; the number deleted, or None if another ran it."""
        e = self.engine
        s = e.settings
        lease = f"retention:{s.name}"
        holder = f"{e.executor_id}/{e.incarnation}"
        # The lease outlives the interval slightly less than one interval: whoever wins runs once per interval.
        if not e.db.try_maintenance_lease(lease, holder, int(self.interval_s * 1000 * 0.9)):
            return None
        cutoff = None if s.retention_max_age_s is None else timedelta(seconds=s.retention_max_age_s)
        ops = mg.Ops(e.db, e.serializers, s.name, e.app_db)
        return mg.garbage_collect(ops, cutoff, s.retention_keep_last)

    def _run(self) -> None:
        e = self.engine
        while not e.stopping.wait(self.interval_s):
            try:
                deleted = self.run_once()
                if deleted:
                    _log.info("retention: deleted %d old workflow(s)", deleted)
            except Exception:
                if not e.stopping.is_set():
                    _log.warning("retention run failed; retrying next interval", exc_info=True)
