"""What a metrics source returns: values, per-query results, and refresh requests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["MetricResult", "MetricValue", "RefreshSpec", "finite_or_zero"]


def finite_or_zero(value: float) -> float:
    """NaN, +Inf and -Inf become 0.0; every other number passes through unchanged."""
    return value if math.isfinite(value) else 0.0


@dataclass(slots=True)
class MetricValue:
    """One sample. ``timestamp`` is seconds since the epoch (0.0 = unknown); NaN/±Inf are stored as 0.

    ``finite`` is False when the reported value was NaN or ±Inf: consumers that must not mistake a
    broken reading for an idle one (the saturation metrics) skip such samples.

    Treat it as read-only. It is not a frozen dataclass because a cycle builds one per series (14,000
    at 1,000 models), and a frozen dataclass' ``__init__`` costs three times as much.
    """

    value: float
    timestamp: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    finite: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        raw = self.value
        if type(raw) is float and raw - raw == 0.0:  # a finite float needs no work (hot path)
            return
        raw = float(raw)
        self.value = finite_or_zero(raw)
        if not math.isfinite(raw):
            self.finite = False

    def age(self, now: float) -> float:
        """Seconds since the sample; 0.0 when the timestamp is unknown."""
        return max(0.0, now - self.timestamp) if self.timestamp > 0 else 0.0

    def is_stale(self, threshold: float, now: float) -> bool:
        """An unknown timestamp counts as stale, as upstream does."""
        return self.timestamp <= 0 or now - self.timestamp > threshold


_ZERO = MetricValue(0.0)


@dataclass(frozen=True, slots=True)
class MetricResult:
    """The outcome of one query: its values, or ``error`` (a message) when it failed.

    ``collected_at`` is seconds since the epoch. An empty ``values`` with no error means the query
    ran and matched nothing.
    """

    query_name: str
    values: Sequence[MetricValue] = field(default_factory=list)
    collected_at: float = 0.0
    error: str | None = None

    @property
    def has_error(self) -> bool:
        return self.error is not None

    def first_value(self) -> MetricValue:
        """The first value, or a zero value (0.0, unknown timestamp, no labels) if there is none."""
        return self.values[0] if self.values else _ZERO

    def oldest_timestamp(self) -> float:
        """The oldest known sample timestamp; 0.0 if there is none."""
        known = [v.timestamp for v in self.values if v.timestamp > 0]
        return min(known) if known else 0.0

    def is_stale(self, threshold: float, now: float) -> bool:
        """True if there are no values or any value is stale."""
        return not self.values or any(v.is_stale(threshold, now) for v in self.values)


@dataclass(frozen=True, slots=True)
class RefreshSpec:
    """Which queries to run (empty = every registered query) with which parameters (unescaped).

    ``cache`` False: the results are returned but not kept in the source's cache (a batch's
    namespace-wide answers: the cycle reads them from its own table, and at 10,000 models keeping
    them would hold some 70 MB of decoded series between cycles)."""

    queries: Sequence[str] = field(default_factory=list)
    params: Mapping[str, str] = field(default_factory=dict)
    cache: bool = True
