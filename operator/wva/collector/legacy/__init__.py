"""Collector v1 (legacy): direct Prometheus queries, a TTL cache with freshness, background refresh.

Selected when ``COLLECTOR_V2`` is off; see docs/collectors.md.
"""

from wva.collector.legacy.cache import CachedMetrics, MemoryCache, MetricsCache, NoOpCache
from wva.collector.legacy.collector import METRICS_STALENESS_LIMIT, PrometheusCollector
from wva.collector.legacy.config import CacheConfig, FreshnessThresholds, load_cache_config
from wva.collector.legacy.errors import MetricsCollectionError
from wva.collector.legacy.query import BlockingRunner, PromClient, QueryPolicy, run_in_thread
from wva.durations import format_go_duration, parse_go_duration

__all__ = [
    "METRICS_STALENESS_LIMIT",
    "BlockingRunner",
    "CacheConfig",
    "CachedMetrics",
    "FreshnessThresholds",
    "MemoryCache",
    "MetricsCache",
    "MetricsCollectionError",
    "NoOpCache",
    "PromClient",
    "PrometheusCollector",
    "QueryPolicy",
    "format_go_duration",
    "load_cache_config",
    "parse_go_duration",
    "run_in_thread",
]
