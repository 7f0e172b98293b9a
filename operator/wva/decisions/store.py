"""The operator's memory of recent decisions: a bounded ring of records per model group.

One record covers every variant of its model group, so the ring is kept once per group and each
VariantAutoscaling points at its group's ring: memory follows groups times the ring size, whatever
the number of variants per group. A VA that moves to another group (its model or accelerator
changed) starts with that group's history.
"""

from __future__ import annotations

from collections.abc import Iterable

from wva.decisions.record import DecisionRecord

DEFAULT_RING_SIZE = 4

Key = tuple[str, str]  # (namespace, VariantAutoscaling name)
GroupKey = tuple[Key, ...]


class DecisionStore:
    def __init__(self, ring_size: int = DEFAULT_RING_SIZE) -> None:
        if ring_size < 1:
            raise ValueError(f"decision ring size must be at least 1, got {ring_size}")
        self.ring_size = ring_size
        self._rings: dict[GroupKey, tuple[DecisionRecord, ...]] = {}  # oldest first; a tuple is the smallest ring
        self._group_of: dict[Key, GroupKey] = {}
        self._members: dict[GroupKey, int] = {}

    def add(self, record: DecisionRecord, variants: Iterable[Key]) -> None:
        group: GroupKey = tuple(sorted(variants))
        for key in group:
            previous = self._group_of.get(key)
            if previous != group:
                if previous is not None:
                    self._leave(previous)
                self._group_of[key] = group
                self._members[group] = self._members.get(group, 0) + 1
        ring = self._rings.get(group, ())
        self._rings[group] = (*ring[max(0, len(ring) + 1 - self.ring_size):], record)

    def records(self, namespace: str, name: str) -> list[DecisionRecord]:
        """Oldest first."""
        group = self._group_of.get((namespace, name))
        return list(self._rings.get(group, ())) if group is not None else []

    def latest(self, namespace: str, name: str) -> DecisionRecord | None:
        group = self._group_of.get((namespace, name))
        ring = self._rings.get(group, ()) if group is not None else ()
        return ring[-1] if ring else None

    def keys(self) -> list[Key]:
        return sorted(self._group_of)

    def forget(self, namespace: str, name: str) -> None:
        group = self._group_of.pop((namespace, name), None)
        if group is not None:
            self._leave(group)

    def _leave(self, group: GroupKey) -> None:
        left = self._members.get(group, 0) - 1
        if left > 0:
            self._members[group] = left
        else:
            self._members.pop(group, None)
            self._rings.pop(group, None)

    def __len__(self) -> int:
        return len(self._group_of)
