"""The operator's memory of recent decisions: a bounded ring of records per VariantAutoscaling.

The variants of one model group share each record (one object, referenced from every variant's
ring), so memory follows groups times the ring size, whatever the number of variants per group.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from wva.decisions.record import DecisionRecord

DEFAULT_RING_SIZE = 8

Key = tuple[str, str]  # (namespace, VariantAutoscaling name)


class DecisionStore:
    def __init__(self, ring_size: int = DEFAULT_RING_SIZE) -> None:
        if ring_size < 1:
            raise ValueError(f"decision ring size must be at least 1, got {ring_size}")
        self.ring_size = ring_size
        self._rings: dict[Key, deque[DecisionRecord]] = {}

    def add(self, record: DecisionRecord, variants: Iterable[Key]) -> None:
        for key in variants:
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = deque(maxlen=self.ring_size)
            ring.append(record)

    def records(self, namespace: str, name: str) -> list[DecisionRecord]:
        """Oldest first."""
        return list(self._rings.get((namespace, name), ()))

    def latest(self, namespace: str, name: str) -> DecisionRecord | None:
        ring = self._rings.get((namespace, name))
        return ring[-1] if ring else None

    def keys(self) -> list[Key]:
        return sorted(self._rings)

    def forget(self, namespace: str, name: str) -> None:
        self._rings.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._rings)
