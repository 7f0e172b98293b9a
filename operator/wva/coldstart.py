"""Each variant's cold-start time, learnt from the pod watch: how long its pods take from creation to Ready.

A pod's time is its Ready condition's ``lastTransitionTime`` minus its ``creationTimestamp``, taken
once, when the watch first sees it ready. The tracker keeps the last ``window`` times per Deployment
and answers their median: model loading dominates it and it varies little, so the median of a few
is stable, and one pod stuck on a slow node does not move it.
"""

from __future__ import annotations

import statistics
from collections import deque

DEFAULT_WINDOW = 9


class ColdStartTracker:
    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._times: dict[tuple[str, str], deque[float]] = {}
        self._seen: set[tuple[str, str]] = set()  # (namespace, pod) already counted

    def observe(self, namespace: str, deployment: str, pod: str, created: float | None,
                ready_since: float | None) -> None:
        """A pod seen ready: count its creation-to-Ready time once (nothing without both timestamps)."""
        if (namespace, pod) in self._seen or created is None or ready_since is None or ready_since <= created:
            return
        self._seen.add((namespace, pod))
        times = self._times.setdefault((namespace, deployment), deque(maxlen=self.window))
        times.append(ready_since - created)

    def forget_pod(self, namespace: str, pod: str) -> None:
        self._seen.discard((namespace, pod))

    def forget_deployment(self, namespace: str, deployment: str) -> None:
        self._times.pop((namespace, deployment), None)

    def median(self, namespace: str, deployment: str) -> float | None:
        times = self._times.get((namespace, deployment))
        return statistics.median(times) if times else None

    def samples(self, namespace: str, deployment: str) -> int:
        return len(self._times.get((namespace, deployment), ()))
