"""Errors raised by collector v1."""

from __future__ import annotations


class MetricsCollectionError(RuntimeError):
    """Prometheus could not deliver the metrics a collector call needs (the message says which)."""
