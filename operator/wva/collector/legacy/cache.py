"""The metrics cache of collector v1: a bounded, thread-safe TTL map with a periodic sweeper.

Values are stored as immutable copies (lists become tuples, dicts read-only mappings, sets frozensets;
frozen dataclasses and scalars are kept as they are; anything else is deep-copied on the way in and
out), so no caller can change what another caller reads from the cache.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from wva.collector.legacy.periodic import PeriodicJob

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_SCALARS = (str, bytes, int, float, complex, bool, type(None), enum.Enum, range)


def freeze(value: Any) -> Any:
    """Return an immutable equivalent of ``value`` (see the module docstring).

    Already-immutable values (scalars, tuples/frozensets/frozen dataclasses of immutable values) are
    returned as they are, so freezing them costs no copy.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        items = tuple(freeze(item) for item in value)
        if isinstance(value, tuple) and all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items
    if isinstance(value, (set, frozenset)):
        members = frozenset(freeze(item) for item in value)
        return value if isinstance(value, frozenset) and members == value else members
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if _is_frozen_dataclass(value) and all(
        freeze(getattr(value, f.name)) is getattr(value, f.name) for f in dataclasses.fields(value)
    ):
        return value
    return _Private(copy.deepcopy(value))


def _is_frozen_dataclass(value: Any) -> bool:
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return False
    params = getattr(type(value), "__dataclass_params__", None)
    return bool(params is not None and params.frozen)


@dataclass(frozen=True, slots=True)
class _Private:
    """A deep copy of a mutable value that has no immutable form; handed out as fresh copies only."""

    value: Any


def _thaw(stored: Any) -> Any:
    return copy.deepcopy(stored.value) if isinstance(stored, _Private) else stored


@dataclass(frozen=True, slots=True)
class CachedMetrics:
    """One cache entry: the (immutable) data, when it was stored (clock seconds) and its TTL."""

    data: Any
    collected_at: float
    ttl: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.collected_at)

    def is_expired(self, now: float) -> bool:
        # strictly greater, as upstream: an entry exactly ttl old is still valid
        return now - self.collected_at > self.ttl


class MetricsCache(Protocol):
    """What the collector needs from a cache; :class:`MemoryCache` and :class:`NoOpCache` provide it."""

    def get(self, key: str) -> CachedMetrics | None: ...

    def set(self, key: str, data: Any, ttl: float = 0.0) -> None: ...

    def invalidate(self, key: str) -> None: ...

    def invalidate_by_prefix(self, prefix: str) -> int: ...

    def clear(self) -> None: ...

    def size(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class MemoryCache:
    """In-memory TTL cache.

    - ``get`` deletes an expired entry when it reads it and reports a miss;
    - ``set`` with ``ttl == 0`` uses the configured TTL;
    - ``size`` counts every stored entry, expired ones not yet swept included;
    - when ``maxsize`` entries are stored, expired entries are dropped first, then the oldest.
    """

    def __init__(
        self,
        ttl: float,
        cleanup_interval: float,
        clock: Clock = time.monotonic,
        maxsize: int = 10000,
    ) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.ttl = ttl
        self.cleanup_interval = cleanup_interval
        self.maxsize = maxsize
        self._clock = clock
        self._entries: OrderedDict[str, CachedMetrics] = OrderedDict()
        self._lock = threading.Lock()
        self._sweeper = PeriodicJob("metrics-cache-cleanup", cleanup_interval, self._sweep)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedMetrics | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            if entry.is_expired(now):
                del self._entries[key]
                self.misses += 1
                return None
            self.hits += 1
        if isinstance(entry.data, _Private):
            return CachedMetrics(_thaw(entry.data), entry.collected_at, entry.ttl)
        return entry

    def set(self, key: str, data: Any, ttl: float = 0.0) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        entry = CachedMetrics(freeze(data), self._clock(), ttl or self.ttl)
        with self._lock:
            self._entries.pop(key, None)
            if len(self._entries) >= self.maxsize:
                self._remove_expired_locked(entry.collected_at)
            while len(self._entries) >= self.maxsize:
                evicted, _ = self._entries.popitem(last=False)
                logger.debug("metrics cache full, evicted %s", evicted)
            self._entries[key] = entry

    def invalidate(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def invalidate_by_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [key for key in self._entries if key.startswith(prefix)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def size(self) -> int:
        with self._lock:
            return len(self._entries)

    def cleanup(self) -> int:
        """Remove every expired entry now; return how many were removed."""
        now = self._clock()
        with self._lock:
            return self._remove_expired_locked(now)

    async def start(self) -> None:
        """Start the periodic sweeper (only when ``cleanup_interval > 0``)."""
        await self._sweeper.start()

    async def stop(self) -> None:
        """Cancel and await the sweeper. Safe to call more than once."""
        await self._sweeper.stop()

    def _remove_expired_locked(self, now: float) -> int:
        doomed = [key for key, entry in self._entries.items() if entry.is_expired(now)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def _sweep(self) -> None:
        removed = self.cleanup()
        if removed:
            logger.debug("metrics cache cleanup removed %d expired entries", removed)


class NoOpCache:
    """The cache used when caching is disabled: stores nothing, every ``get`` is a miss."""

    def get(self, key: str) -> CachedMetrics | None:
        return None

    def set(self, key: str, data: Any, ttl: float = 0.0) -> None:
        return None

    def invalidate(self, key: str) -> None:
        return None

    def invalidate_by_prefix(self, prefix: str) -> int:
        return 0

    def clear(self) -> None:
        return None

    def size(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
