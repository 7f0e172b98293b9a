"""Which VAs and models collector v1 keeps warm in the background, and when each was last fetched.

Unlike upstream, tracking an item again keeps its last-fetch time (upstream reset it on every call, so
every tracked item was re-fetched on every tick). Times are event-loop seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from wva.collector.types import VariantRef


@dataclass(frozen=True, slots=True)
class TrackedVA:
    model_id: str
    namespace: str
    va_name: str
    last_fetch: float | None = None

    @property
    def key(self) -> str:
        return f"{self.model_id}/{self.namespace}/{self.va_name}"

    def needs_fetch(self, now: float, interval: float) -> bool:
        return self.last_fetch is None or now - self.last_fetch >= interval


@dataclass(frozen=True, slots=True)
class TrackedModel:
    model_id: str
    namespace: str
    variants: tuple[VariantRef, ...] = ()
    last_fetch: float | None = None

    @property
    def key(self) -> str:
        return f"{self.model_id}/{self.namespace}"

    def needs_fetch(self, now: float, interval: float) -> bool:
        return self.last_fetch is None or now - self.last_fetch >= interval


class Tracker:
    """Thread-safe registry of tracked VAs and models."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vas: dict[tuple[str, str, str], TrackedVA] = {}
        self._models: dict[tuple[str, str], TrackedModel] = {}

    def track_va(self, model_id: str, namespace: str, va_name: str, fetched_at: float | None = None) -> None:
        key = (model_id, namespace, va_name)
        with self._lock:
            old = self._vas.get(key)
            last = fetched_at if fetched_at is not None else (old.last_fetch if old else None)
            self._vas[key] = TrackedVA(model_id, namespace, va_name, last)

    def untrack_va(self, model_id: str, namespace: str, va_name: str) -> None:
        with self._lock:
            self._vas.pop((model_id, namespace, va_name), None)

    def track_model(
        self,
        model_id: str,
        namespace: str,
        variants: Sequence[VariantRef],
        fetched_at: float | None = None,
    ) -> None:
        key = (model_id, namespace)
        frozen = tuple(sorted(variants, key=lambda v: (v.namespace, v.name)))
        with self._lock:
            old = self._models.get(key)
            last = fetched_at if fetched_at is not None else (old.last_fetch if old else None)
            self._models[key] = TrackedModel(model_id, namespace, frozen, last)

    def untrack_model(self, model_id: str, namespace: str) -> None:
        with self._lock:
            self._models.pop((model_id, namespace), None)

    def mark_va_fetched(self, item: TrackedVA, at: float) -> None:
        """Record a fetch, unless the VA was untracked meanwhile."""
        key = (item.model_id, item.namespace, item.va_name)
        with self._lock:
            current = self._vas.get(key)
            if current is not None:
                self._vas[key] = replace(current, last_fetch=at)

    def mark_model_fetched(self, item: TrackedModel, at: float) -> None:
        key = (item.model_id, item.namespace)
        with self._lock:
            current = self._models.get(key)
            if current is not None:
                self._models[key] = replace(current, last_fetch=at)

    def vas(self) -> list[TrackedVA]:
        with self._lock:
            return sorted(self._vas.values(), key=lambda t: t.key)

    def models(self) -> list[TrackedModel]:
        with self._lock:
            return sorted(self._models.values(), key=lambda t: t.key)
