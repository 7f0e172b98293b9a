"""Value types shared by both collectors, the engine and the analyzer.

Plain frozen dataclasses: they are created per pod per cycle (thousands at scale), carry no
validation logic of their own, and must be cheap to build and compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

DEFAULT_VARIANT_COST = 10.0


class FreshnessStatus(StrEnum):
    FRESH = "fresh"
    STALE = "stale"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ReplicaMetricsMetadata:
    """Where a replica's numbers came from and how old they are (seconds since the epoch / seconds)."""

    collected_at: float
    age: float = 0.0
    freshness_status: FreshnessStatus = FreshnessStatus.FRESH
    source: str = "prometheus"


@dataclass(frozen=True, slots=True)
class ReplicaMetrics:
    """Saturation signals of one serving pod (replica) of one variant."""

    pod_name: str
    kv_cache_usage: float
    queue_length: int
    variant_name: str
    namespace: str
    model_id: str
    accelerator_name: str = ""
    cost: float = DEFAULT_VARIANT_COST
    metadata: ReplicaMetricsMetadata | None = field(default=None, compare=False)
    # the older of the two samples' own timestamps (0: not known), and which signals had a series
    # at all: a missing one reads as 0 in the rules (upstream) but is recorded as unknown
    sample_time: float = field(default=0.0, compare=False)
    kv_known: bool = field(default=True, compare=False)
    queue_known: bool = field(default=True, compare=False)


@dataclass(frozen=True, slots=True)
class OptimizerMetrics:
    """Model-level load and latency, as shown in ``status.currentAlloc``.

    ``arrival_rate`` is in requests per minute; latencies are in seconds.
    """

    arrival_rate: float = 0.0
    avg_input_tokens: float = 0.0
    avg_output_tokens: float = 0.0
    ttft_seconds: float = 0.0
    itl_seconds: float = 0.0


class AvailabilityReason(StrEnum):
    METRICS_FOUND = "MetricsFound"
    METRICS_MISSING = "MetricsMissing"
    METRICS_STALE = "MetricsStale"
    PROMETHEUS_ERROR = "PrometheusError"


@dataclass(frozen=True, slots=True)
class MetricsValidationResult:
    available: bool
    reason: AvailabilityReason
    message: str


@dataclass(frozen=True, slots=True)
class VariantRef:
    """One variant of a model as the collectors need it: which VA, which Deployment, what it costs.

    ``name`` is the VariantAutoscaling name; it becomes ``ReplicaMetrics.variant_name``.
    """

    name: str
    namespace: str
    deployment_name: str
    accelerator_name: str = ""
    cost: float = DEFAULT_VARIANT_COST


class PodResolver(Protocol):
    """Answers which VariantAutoscaling (by name) a pod serves, from watched state (no API call)."""

    def get_va_for_pod(self, pod_name: str, namespace: str) -> str | None: ...
