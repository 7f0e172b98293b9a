"""Result cache of the v2 sources: bounded, per-entry TTL, thread-safe, with an injectable clock."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cachetools import TLRUCache

from wva.collector.v2.results import MetricResult
from wva.tasks import cancel_and_wait

__all__ = ["Cache", "CachedValue", "build_cache_key"]

logger = logging.getLogger(__name__)

# Characters with a meaning in the key syntax "name:k1=v1,k2=v2" ('%' so the encoding is reversible).
_KEY_ESCAPES = str.maketrans({"%": "%25", ",": "%2C", "=": "%3D", ":": "%3A"})


_NEEDS_ESCAPE = re.compile(r"[%,=:]").search


def encode_key_part(part: str) -> str:
    """Percent-encode the characters that have a meaning in a cache key (``%``, ``,``, ``=``, ``:``)."""
    # most names and values need no escaping; the check is far cheaper than translate() (hot path)
    return part.translate(_KEY_ESCAPES) if _NEEDS_ESCAPE(part) else part



def build_cache_key(name: str, params: Mapping[str, str] | None = None) -> str:
    """``name`` alone without params, else ``name:k1=v1,k2=v2`` with keys sorted.

    ``%``, ``,``, ``=`` and ``:`` in the name, keys and values are percent-encoded, so the key can
    be parsed back unambiguously: two different (name, params) pairs never share a key.
    """
    if not params:
        return encode_key_part(name)
    pairs = ",".join(f"{encode_key_part(k)}={encode_key_part(params[k])}" for k in sorted(params))
    return f"{encode_key_part(name)}:{pairs}"


@dataclass(frozen=True, slots=True)
class CachedValue:
    """A cached result; ``cached_at``/``expires_at`` are readings of the cache's clock (seconds)."""

    result: MetricResult
    cached_at: float
    expires_at: float

    @property
    def ttl(self) -> float:
        return self.expires_at - self.cached_at

    def age(self, now: float) -> float:
        return max(0.0, now - self.cached_at)

    def is_expired(self, now: float) -> bool:
        """Strictly after ``expires_at``: an entry is still served at exactly its TTL."""
        return now > self.expires_at


def _time_to_use(_key: str, value: CachedValue, _now: float) -> float:
    # cachetools drops an item once ``now >= expires``; the next float above ``expires_at`` turns
    # that into the strict ``now > expires_at`` this cache promises.
    return math.nextafter(value.expires_at, math.inf)


class Cache:
    """Bounded cache of :class:`CachedValue` with a TTL per entry (a ``cachetools.TLRUCache``).

    Expired entries are never returned. They are dropped on every write, by :meth:`cleanup` (run
    every ``cleanup_interval`` seconds once :meth:`start` is awaited), and first when room is
    needed; when the cache is full of live entries the least recently used one is evicted.
    ``ttl`` of ``None`` or ``0`` means ``default_ttl``.
    """

    def __init__(
        self,
        default_ttl: float = 30.0,
        cleanup_interval: float = 1.0,
        maxsize: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if default_ttl < 0:
            raise ValueError(f"default_ttl must be >= 0, got {default_ttl}")
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.default_ttl = default_ttl
        self.cleanup_interval = cleanup_interval
        self.maxsize = maxsize
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: TLRUCache[str, CachedValue] = TLRUCache(maxsize=maxsize, ttu=_time_to_use, timer=clock)
        self._task: asyncio.Task[None] | None = None

    def set(self, key: str, result: MetricResult, ttl: float | None = None) -> CachedValue:
        effective = ttl if ttl else self.default_ttl
        if effective < 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        with self._lock:
            now = self._clock()
            value = CachedValue(result=result, cached_at=now, expires_at=now + effective)
            self._entries[key] = value
            return value

    def set_many(self, items: Iterable[tuple[str, MetricResult]], ttl: float | None = None) -> int:
        """:meth:`set` for many entries under one lock and one clock reading; returns how many were set."""
        effective = ttl if ttl else self.default_ttl
        if effective < 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        count = 0
        with self._lock:
            now = self._clock()
            expires = now + effective
            entries = self._entries
            for key, result in items:
                entries[key] = CachedValue(result=result, cached_at=now, expires_at=expires)
                count += 1
        return count

    def get(self, key: str) -> CachedValue | None:
        """The live entry for ``key``, or None if absent or ``now > expires_at``."""
        with self._lock:
            value = self._entries.get(key)
        if value is None or value.is_expired(self._clock()):
            return None
        return value

    def delete(self, key: str) -> bool:
        with self._lock:
            try:
                del self._entries[key]
            except KeyError:  # absent, or present but already expired
                return False
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        """Live entries (expired ones are dropped first)."""
        with self._lock:
            return len(self._entries)

    def cleanup(self) -> int:
        """Remove every expired entry; returns how many were removed."""
        with self._lock:
            return len(self._entries.expire(self._clock()))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the periodic cleanup task (no-op if running or if ``cleanup_interval`` <= 0)."""
        if self.running or self.cleanup_interval <= 0:
            return
        self._task = asyncio.create_task(self._cleanup_loop(), name="wva-v2-cache-cleanup")

    async def stop(self) -> None:
        """Cancel the cleanup task and wait for it to finish. Safe to call more than once."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                removed = self.cleanup()
            except Exception:  # one failed sweep must not end the loop
                logger.exception("Cache cleanup failed")
                continue
            if removed:
                logger.debug("Cache cleanup removed %d expired entries", removed)
