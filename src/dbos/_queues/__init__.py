"""Durable queues: declaration, enqueue, limits and the dispatcher (03)."""
