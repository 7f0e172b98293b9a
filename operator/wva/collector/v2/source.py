"""The source abstraction of collector v2 and the registry that names sources."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from wva.collector.v2.cache import CachedValue
from wva.collector.v2.query import QueryList
from wva.collector.v2.results import MetricResult, RefreshSpec

__all__ = ["LifecycleSource", "MetricsSource", "SourceRegistry"]


@runtime_checkable
class MetricsSource(Protocol):
    """A backend that runs named queries and caches their results.

    ``refresh`` never raises for a single failed query: that query's result carries the error.
    ``get`` answers from the cache only (None when absent or expired); callers must not mutate it.
    """

    def query_list(self) -> QueryList: ...

    async def refresh(self, spec: RefreshSpec) -> dict[str, MetricResult]: ...

    def get(self, query_name: str, params: Mapping[str, str] | None = None) -> CachedValue | None: ...


@runtime_checkable
class LifecycleSource(Protocol):
    """A source with background work (e.g. cache cleanup) started and stopped by its owner."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SourceRegistry:
    """Thread-safe name -> source map."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, MetricsSource] = {}

    def register(self, name: str, source: MetricsSource) -> None:
        """ValueError for an empty name or a name already registered."""
        if not name:
            raise ValueError("source name is required")
        with self._lock:
            if name in self._sources:
                raise ValueError(f"source {name!r} already registered")
            self._sources[name] = source

    def get(self, name: str) -> MetricsSource | None:
        with self._lock:
            return self._sources.get(name)

    def names(self) -> list[str]:
        """Registered source names, sorted."""
        with self._lock:
            return sorted(self._sources)
