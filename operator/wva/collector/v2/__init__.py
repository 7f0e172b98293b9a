"""Collector v2: named query templates run by pluggable, caching metrics sources.

A :class:`MetricsSource` (today :class:`PrometheusSource`) owns a :class:`QueryList` of
:class:`QueryTemplate` s, runs them on :meth:`~MetricsSource.refresh` and caches every
:class:`MetricResult` under :func:`build_cache_key`. :class:`ReplicaMetricsCollector` and
:class:`V2MetricsCollector` turn results into what the saturation engine consumes, resolving pods
to VariantAutoscalings with :class:`PodVAMapper`.
"""

from wva.collector.promql import escape_promql_value
from wva.collector.v2.cache import Cache, CachedValue, build_cache_key
from wva.collector.v2.collector import V2MetricsCollector
from wva.collector.v2.errors import MetricsCollectionError
from wva.collector.v2.mapper import PodVAMapper
from wva.collector.v2.pod_scraping import (
    METRICS_PORT_ANNOTATION,
    METRICS_SOURCE_ANNOTATION,
    InventoryPodDiscovery,
    PodDiscovery,
    PodMetricResult,
    PodScrapingConfig,
    PodScrapingSource,
    PodTarget,
    ScrapeOutcome,
)
from wva.collector.v2.prometheus import (
    PrometheusQueryClient,
    PrometheusSource,
    PrometheusSourceConfig,
    QueryOutcome,
    SourceStats,
    is_transient_error,
    parse_query_result,
)
from wva.collector.v2.query import QueryList, QueryTemplate, QueryType
from wva.collector.v2.registration import (
    register_availability_queries,
    register_default_queries,
    register_optimizer_queries,
    register_saturation_queries,
)
from wva.collector.v2.replica import ReplicaMetricsCollector
from wva.collector.v2.results import MetricResult, MetricValue, RefreshSpec
from wva.collector.v2.source import LifecycleSource, MetricsSource, SourceRegistry

__all__ = [
    "METRICS_PORT_ANNOTATION",
    "METRICS_SOURCE_ANNOTATION",
    "Cache",
    "CachedValue",
    "InventoryPodDiscovery",
    "LifecycleSource",
    "MetricResult",
    "MetricValue",
    "MetricsCollectionError",
    "MetricsSource",
    "PodDiscovery",
    "PodMetricResult",
    "PodScrapingConfig",
    "PodScrapingSource",
    "PodTarget",
    "PodVAMapper",
    "PrometheusQueryClient",
    "PrometheusSource",
    "PrometheusSourceConfig",
    "QueryList",
    "QueryOutcome",
    "QueryTemplate",
    "QueryType",
    "RefreshSpec",
    "ReplicaMetricsCollector",
    "ScrapeOutcome",
    "SourceRegistry",
    "SourceStats",
    "V2MetricsCollector",
    "build_cache_key",
    "escape_promql_value",
    "is_transient_error",
    "parse_query_result",
    "register_availability_queries",
    "register_default_queries",
    "register_optimizer_queries",
    "register_saturation_queries",
]
