"""Errors of collector v2."""

from __future__ import annotations

__all__ = ["MetricsCollectionError"]


class MetricsCollectionError(RuntimeError):
    """A query the caller cannot do without failed (or its source is missing)."""
