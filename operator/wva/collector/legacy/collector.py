"""Collector v1: ``PrometheusCollector`` queries Prometheus directly, caches, and refreshes in the background.

Upstream's legacy collector semantics with its bugs fixed: every substituted value is escaped; cached data is
immutable and metadata is attached to copies; a tracked item is not re-fetched on every tick; the
background tasks belong to the collector and ``stop()`` cancels and awaits all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wva.collector import promql as catalogue
from wva.collector.legacy import promql as q
from wva.collector.legacy.cache import MemoryCache, MetricsCache, NoOpCache
from wva.collector.legacy.config import CacheConfig
from wva.collector.legacy.errors import MetricsCollectionError
from wva.collector.legacy.periodic import PeriodicJob
from wva.collector.legacy.query import BlockingRunner, PromClient, PromQueryRunner, QueryPolicy, run_in_thread
from wva.collector.legacy.replicas import collect_replica_metrics as query_replica_metrics
from wva.collector.legacy.tracking import TrackedModel, TrackedVA, Tracker
from wva.collector.types import (
    AvailabilityReason,
    MetricsValidationResult,
    OptimizerMetrics,
    PodResolver,
    ReplicaMetrics,
    ReplicaMetricsMetadata,
    VariantRef,
)
from wva.durations import format_go_duration

logger = logging.getLogger(__name__)

METRICS_STALENESS_LIMIT = 300.0
"""A sample older than this (seconds) makes ``validate_metrics_availability`` report MetricsStale."""

DEFAULT_FETCH_TIMEOUT = 30.0

# (upstream name used in error messages, query name in the catalogue)
_OPTIMIZER_QUERIES: tuple[tuple[str, str], ...] = (
    ("ArrivalRate", catalogue.Q_ARRIVAL_RATE),
    ("AvgInputTokens", catalogue.Q_AVG_INPUT_TOKENS),
    ("AvgOutputTokens", catalogue.Q_AVG_OUTPUT_TOKENS),
    ("TTFTAverageTime", catalogue.Q_TTFT_AVERAGE),
    ("ITLAverage", catalogue.Q_ITL_AVERAGE),
)

MSG_FOUND = "vLLM metrics are available and up-to-date"


@dataclass(frozen=True, slots=True)
class _ReplicaSnapshot:
    """What the replica key caches: the rows and the variants they were attributed against."""

    variants: tuple[VariantRef, ...]
    rows: tuple[ReplicaMetrics, ...]


def _normalise_variants(variants: Sequence[VariantRef]) -> tuple[VariantRef, ...]:
    return tuple(sorted(variants, key=lambda v: (v.namespace, v.name)))


class PrometheusCollector:
    """Collector v1 (implements :class:`wva.collector.MetricsCollector`).

    ``prom`` is a ``prometheus_api_client.PrometheusConnect`` (or anything with ``custom_query``);
    ``clock`` gives epoch seconds for cache ages, freshness and sample ages. Keyword-only extras:
    ``query_policy`` (timeouts/retries/concurrency), ``run_blocking`` (how blocking calls leave the
    event loop; a worker thread by default) and ``fetch_timeout`` (bound of one background fetch).
    """

    def __init__(
        self,
        prom: PromClient,
        cache_config: CacheConfig | None = None,
        resolver: PodResolver | None = None,
        clock: Callable[[], float] = time.time,
        *,
        query_policy: QueryPolicy | None = None,
        run_blocking: BlockingRunner = run_in_thread,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
    ) -> None:
        self.cache_config = cache_config or CacheConfig()
        self.resolver = resolver
        self._clock = clock
        self._runner = PromQueryRunner(prom, query_policy, run_blocking)
        self.cache: MetricsCache = (
            MemoryCache(self.cache_config.ttl, self.cache_config.cleanup_interval, clock=clock)
            if self.cache_config.enabled
            else NoOpCache()
        )
        self.fetch_timeout = fetch_timeout
        self.tracker = Tracker()
        # Background refresh only warms the cache, so it is pointless when caching is off.
        interval = self.cache_config.fetch_interval if self.cache_config.enabled else 0.0
        self._fetcher = PeriodicJob("metrics-background-fetch", interval, self._fetch_tick, run_immediately=True)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the cache sweeper and (if ``fetch_interval > 0``) the background fetcher."""
        await self.cache.start()
        await self._fetcher.start()
        logger.info(
            "legacy collector started: cache=%s ttl=%.1fs fetch_interval=%.1fs",
            "on" if self.cache_config.enabled else "off", self.cache_config.ttl, self._fetcher.interval,
        )

    async def stop(self) -> None:
        """Cancel and await every background task. Idempotent."""
        await self._fetcher.stop()
        await self.cache.stop()

    @property
    def background_fetch_running(self) -> bool:
        return self._fetcher.running

    # --- availability ------------------------------------------------------------------------

    async def validate_metrics_availability(self, model_id: str, namespace: str) -> MetricsValidationResult:
        """Are the model's vLLM metrics in Prometheus and recent? (upstream's check, messages included)"""
        query = q.render_model_query(catalogue.Q_METRICS_AVAILABILITY, model_id, namespace)
        try:
            result = await self._runner.query(query)
        except Exception as err:
            return _prometheus_error(err)
        if not q.is_vector(result):
            return MetricsValidationResult(
                False,
                AvailabilityReason.METRICS_MISSING,
                f"No vLLM metrics found for model '{model_id}' in namespace '{namespace}'. "
                "Check ServiceMonitor configuration and ensure vLLM pods are exposing metrics.",
            )
        found = list(q.samples(result))
        if not found:
            # the vllme emulator exports no namespace label: look for the model anywhere
            fallback = q.render(catalogue.Q_METRICS_AVAILABILITY_ANY_NAMESPACE, modelID=model_id)
            try:
                result = await self._runner.query(fallback)
            except Exception as err:
                return _prometheus_error(err)
            found = list(q.samples(result))
        if not found:
            return MetricsValidationResult(
                False,
                AvailabilityReason.METRICS_MISSING,
                f"No vLLM metrics found for model '{model_id}' in namespace '{namespace}'. "
                "Check: (1) ServiceMonitor exists in monitoring namespace, (2) ServiceMonitor selector "
                "matches vLLM service labels, (3) vLLM pods are running and exposing /metrics endpoint, "
                "(4) Prometheus is scraping the monitoring namespace",
            )
        now = self._clock()
        for sample in found:
            age = now - sample.timestamp
            if age > METRICS_STALENESS_LIMIT:
                return MetricsValidationResult(
                    False,
                    AvailabilityReason.METRICS_STALE,
                    f"vLLM metrics for model '{model_id}' are stale (last update: {format_go_duration(age)} "
                    "ago). ServiceMonitor may not be scraping correctly.",
                )
        return MetricsValidationResult(True, AvailabilityReason.METRICS_FOUND, MSG_FOUND)

    # --- optimizer metrics -------------------------------------------------------------------

    async def collect_optimizer_metrics(self, model_id: str, namespace: str, va_name: str) -> OptimizerMetrics:
        """Model-level load and latency (arrival rate in req/min), cached per VA and kept warm."""
        key = q.allocation_key(model_id, namespace, va_name)
        entry = self.cache.get(key)
        if entry is not None:
            if isinstance(entry.data, OptimizerMetrics):
                logger.debug(
                    "optimizer metrics cache hit: %s (%s)",
                    key, self.cache_config.freshness.determine_status(entry.age(self._clock())),
                )
                self.tracker.track_va(model_id, namespace, va_name)
                return entry.data
            logger.warning("optimizer metrics cache entry of unexpected type ignored: %s", key)
        metrics = await self._query_optimizer_metrics(model_id, namespace)
        self.cache.set(key, metrics)
        self.tracker.track_va(model_id, namespace, va_name, fetched_at=_loop_time())
        return metrics

    async def _query_optimizer_metrics(self, model_id: str, namespace: str) -> OptimizerMetrics:
        queries = [q.render_model_query(name, model_id, namespace) for _, name in _OPTIMIZER_QUERIES]
        results = await asyncio.gather(*(self._runner.query(text) for text in queries), return_exceptions=True)
        values: list[float] = []
        for (label, _), result in zip(_OPTIMIZER_QUERIES, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                # the first failing query in upstream's order names the error
                raise MetricsCollectionError(f"failed to query Prometheus for {label}: {result}") from result
            values.append(q.first_value(result))
        arrival, avg_in, avg_out, ttft, itl = values
        return OptimizerMetrics(
            arrival_rate=arrival * 60.0,
            avg_input_tokens=avg_in,
            avg_output_tokens=avg_out,
            ttft_seconds=ttft,
            itl_seconds=itl,
        )

    # --- replica metrics ---------------------------------------------------------------------

    async def collect_replica_metrics(
        self, model_id: str, namespace: str, variants: Sequence[VariantRef]
    ) -> list[ReplicaMetrics]:
        """Per-pod saturation signals (upstream's legacy algorithm), cached per model with freshness metadata."""
        key = q.replica_key(model_id, namespace)
        wanted = _normalise_variants(variants)
        entry = self.cache.get(key)
        if entry is not None and isinstance(entry.data, _ReplicaSnapshot) and entry.data.variants == wanted:
            age = entry.age(self._clock())
            metadata = ReplicaMetricsMetadata(
                collected_at=entry.collected_at,
                age=age,
                freshness_status=self.cache_config.freshness.determine_status(age),
            )
            self.tracker.track_model(model_id, namespace, wanted)
            return [dataclasses.replace(row, metadata=metadata) for row in entry.data.rows]
        rows = await query_replica_metrics(self._runner, model_id, namespace, wanted, self.resolver)
        collected_at = self._clock()
        self.cache.set(key, _ReplicaSnapshot(wanted, tuple(rows)))
        self.tracker.track_model(model_id, namespace, wanted, fetched_at=_loop_time())
        metadata = ReplicaMetricsMetadata(collected_at=collected_at)
        return [dataclasses.replace(row, metadata=metadata) for row in rows]

    # --- invalidation ------------------------------------------------------------------------

    def cache_lookups(self) -> tuple[int, int]:
        """(hits, misses) of the per-model result cache so far; (0, 0) while caching is off."""
        cache = self.cache
        if isinstance(cache, MemoryCache):
            return cache.hits, cache.misses
        return 0, 0

    def invalidate_variant(self, model_id: str, namespace: str, variant: str) -> None:
        """Drop the variant's cached metrics and the model's replica metrics (they include the variant)."""
        self.cache.invalidate_by_prefix(q.variant_prefix(model_id, namespace, variant))
        self.cache.invalidate(q.replica_key(model_id, namespace))

    def invalidate_model(self, model_id: str, namespace: str) -> None:
        self.cache.invalidate_by_prefix(q.model_prefix(model_id, namespace))

    # --- tracking ----------------------------------------------------------------------------

    def track_va(self, model_id: str, namespace: str, va_name: str) -> None:
        self.tracker.track_va(model_id, namespace, va_name)

    def untrack_va(self, model_id: str, namespace: str, va_name: str) -> None:
        self.tracker.untrack_va(model_id, namespace, va_name)

    def track_model(self, model_id: str, namespace: str, variants: Sequence[VariantRef]) -> None:
        self.tracker.track_model(model_id, namespace, _normalise_variants(variants))

    def untrack_model(self, model_id: str, namespace: str) -> None:
        self.tracker.untrack_model(model_id, namespace)

    # --- background fetching -----------------------------------------------------------------

    async def _fetch_tick(self) -> None:
        """One round: refresh every tracked VA, then every tracked model, that is due."""
        interval = self._fetcher.interval
        now = _loop_time()
        due_vas = [item for item in self.tracker.vas() if item.needs_fetch(now, interval)]
        if due_vas:
            await asyncio.gather(*(self._fetch_va(item) for item in due_vas))
        now = _loop_time()
        due_models = [item for item in self.tracker.models() if item.needs_fetch(now, interval)]
        if due_models:
            await asyncio.gather(*(self._fetch_model(item) for item in due_models))

    async def _fetch_va(self, item: TrackedVA) -> None:
        try:
            async with asyncio.timeout(self.fetch_timeout):
                metrics = await self._query_optimizer_metrics(item.model_id, item.namespace)
        except Exception as err:
            logger.debug("background fetch failed for VA %s: %s", item.key, str(err) or type(err).__name__)
            return
        self.cache.set(q.allocation_key(item.model_id, item.namespace, item.va_name), metrics)
        self.tracker.mark_va_fetched(item, _loop_time())

    async def _fetch_model(self, item: TrackedModel) -> None:
        try:
            async with asyncio.timeout(self.fetch_timeout):
                rows = await query_replica_metrics(
                    self._runner, item.model_id, item.namespace, item.variants, self.resolver
                )
        except Exception as err:
            logger.debug("background fetch failed for model %s: %s", item.key, str(err) or type(err).__name__)
            return
        self.cache.set(q.replica_key(item.model_id, item.namespace), _ReplicaSnapshot(item.variants, tuple(rows)))
        self.tracker.mark_model_fetched(item, _loop_time())


def _prometheus_error(err: BaseException) -> MetricsValidationResult:
    return MetricsValidationResult(
        False, AvailabilityReason.PROMETHEUS_ERROR, f"Failed to query Prometheus: {err}"
    )


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
