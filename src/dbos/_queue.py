"""Compatibility alias for `from dbos._queue import Queue`."""

from ._queues.queue import Queue, QueueRateLimit

__all__ = ["Queue", "QueueRateLimit"]
