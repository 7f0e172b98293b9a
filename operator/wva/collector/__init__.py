"""Metrics collection: the interface the engine sees and the selection between collector v1 and v2."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from wva.collector.types import (
    MetricsValidationResult,
    OptimizerMetrics,
    ReplicaMetrics,
    VariantRef,
)
from wva.flags import flag_word

if TYPE_CHECKING:
    from wva.collector.legacy import CacheConfig
    from wva.collector.types import PodResolver
    from wva.collector.v2.recording import RecordingMode

log = logging.getLogger(__name__)

__all__ = [
    "MetricsCollector",
    "collector_v2_enabled",
    "new_metrics_collector",
]

def collector_v2_enabled(value: str | None) -> bool:
    """Parse the ``COLLECTOR_V2`` flag: true/1/yes/on (any case) select v2; unset/false/0/no/off v1."""
    if value is None or not value.strip():
        return False
    enabled = flag_word(value)
    if enabled is not None:
        return enabled
    raise ValueError(
        f"COLLECTOR_V2={value!r} is not a boolean; use one of true/1/yes/on or false/0/no/off"
    )


@runtime_checkable
class MetricsCollector(Protocol):
    """What the saturation engine needs from a metrics backend. Both collectors implement it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def validate_metrics_availability(
        self, model_id: str, namespace: str
    ) -> MetricsValidationResult: ...

    async def collect_optimizer_metrics(
        self, model_id: str, namespace: str, va_name: str
    ) -> OptimizerMetrics: ...

    async def collect_replica_metrics(
        self, model_id: str, namespace: str, variants: Sequence[VariantRef]
    ) -> list[ReplicaMetrics]: ...


def new_metrics_collector(
    v2: bool,
    prom: Any,
    resolver: PodResolver,
    *,
    cache_config: CacheConfig | None = None,
    query_timeout: float = 10.0,
    batch_queries: bool | None = None,
    recording_rules: RecordingMode | None = None,
) -> MetricsCollector:
    """Build the collector ``COLLECTOR_V2`` selects; both answer all three engine calls.

    ``prom`` is a ``prometheus_api_client.PrometheusConnect``; ``resolver`` maps pods to VAs from
    watched state. ``batch_queries`` (v2 only; None: env ``WVA_BATCH_QUERIES``) turns batching on or off;
    ``recording_rules`` (v2 only; None: env ``WVA_RECORDING_RULES``) whether the batch reads recorded series.
    """
    if v2:
        from wva.collector.v2 import PrometheusSource, PrometheusSourceConfig, SourceRegistry, V2MetricsCollector

        registry = SourceRegistry()
        registry.register("prometheus", PrometheusSource(prom, PrometheusSourceConfig(query_timeout=query_timeout)))
        log.info("Metrics collector selected collector=v2 source=prometheus")
        return V2MetricsCollector(registry, resolver, batch_queries=batch_queries, recording_rules=recording_rules)
    from wva.collector.legacy import PrometheusCollector, QueryPolicy

    log.info("Metrics collector selected collector=v1")
    return PrometheusCollector(prom, cache_config, resolver, query_policy=QueryPolicy(timeout=query_timeout))
