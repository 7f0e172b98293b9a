"""``V2MetricsCollector``: the engine's ``MetricsCollector`` interface backed by a v2 source."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from wva.collector import promql
from wva.collector.types import (
    AvailabilityReason,
    MetricsValidationResult,
    OptimizerMetrics,
    PodResolver,
    ReplicaMetrics,
    VariantRef,
)
from wva.collector.v2.batching import QueryBatcher, batching_from_env
from wva.collector.v2.errors import MetricsCollectionError
from wva.collector.v2.recording import RecordingMode, recording_mode_from_env
from wva.collector.v2.registration import register_default_queries
from wva.collector.v2.replica import DEFAULT_STALENESS_THRESHOLD, ReplicaMetricsCollector
from wva.collector.v2.results import MetricResult, RefreshSpec
from wva.collector.v2.source import LifecycleSource, MetricsSource, SourceRegistry
from wva.durations import format_go_duration

__all__ = ["METRICS_STALE_AFTER", "V2MetricsCollector", "format_duration"]

logger = logging.getLogger(__name__)

METRICS_STALE_AFTER = 300.0
"""A sample older than this (seconds) makes the availability check report ``MetricsStale``."""

# Upstream's names for the optimizer metrics, used in error messages.
_OPTIMIZER_LABELS = {
    promql.Q_ARRIVAL_RATE: "ArrivalRate",
    promql.Q_AVG_INPUT_TOKENS: "AvgInputTokens",
    promql.Q_AVG_OUTPUT_TOKENS: "AvgOutputTokens",
    promql.Q_TTFT_AVERAGE: "TTFTAverageTime",
    promql.Q_ITL_AVERAGE: "ITLAverage",
}

_MSG_FOUND = "vLLM metrics are available and up-to-date"
_MSG_MISSING = (
    "No vLLM metrics found for model '{model}' in namespace '{ns}'. Check: (1) ServiceMonitor exists in "
    "monitoring namespace, (2) ServiceMonitor selector matches vLLM service labels, (3) vLLM pods are "
    "running and exposing /metrics endpoint, (4) Prometheus is scraping the monitoring namespace"
)
_MSG_STALE = (
    "vLLM metrics for model '{model}' are stale (last update: {age} ago). "
    "ServiceMonitor may not be scraping correctly."
)


format_duration = format_go_duration  # upstream's message text prints ages as Go durations


class V2MetricsCollector:
    """All three engine calls (availability, optimizer, replica metrics) from one named source.

    The source is looked up in ``registry`` on first use, so it may be registered after this
    object is built; the default queries are registered on it then (idempotently).

    ``batch_queries`` (default: env ``WVA_BATCH_QUERIES``, on unless set false) makes
    :meth:`begin_cycle` fetch every metric for all models of a namespace at once: one combined query
    per namespace, or one query per metric with ``combine_batch_queries=False``; see
    :mod:`wva.collector.v2.batching`. Off, every call queries per model. ``recording_rules`` (default:
    env ``WVA_RECORDING_RULES``, ``auto``) lets the combined query read the optimizer metrics from
    wva's recording rules where they exist (:mod:`wva.collector.v2.recording`).
    """

    def __init__(
        self,
        registry: SourceRegistry,
        mapper: PodResolver,
        source_name: str = "prometheus",
        *,
        staleness_threshold: float = DEFAULT_STALENESS_THRESHOLD,
        clock: Callable[[], float] = time.time,
        batch_queries: bool | None = None,
        combine_batch_queries: bool = True,
        recording_rules: RecordingMode | None = None,
    ) -> None:
        self._registry = registry
        self.batcher = QueryBatcher(
            enabled=batching_from_env() if batch_queries is None else batch_queries,
            combine=combine_batch_queries,
            recording=recording_mode_from_env() if recording_rules is None else recording_rules,
        )
        self._mapper = mapper
        self.source_name = source_name
        self._staleness_threshold = staleness_threshold
        self._clock = clock
        self._bound: tuple[MetricsSource, ReplicaMetricsCollector] | None = None

    def _source(self) -> tuple[MetricsSource, ReplicaMetricsCollector]:
        source = self._registry.get(self.source_name)
        if source is None:
            raise MetricsCollectionError(f"metrics source {self.source_name!r} is not registered")
        if self._bound is None or self._bound[0] is not source:
            register_default_queries(source.query_list())
            replica = ReplicaMetricsCollector(
                source,
                self._mapper,
                self._staleness_threshold,
                source_name=self.source_name,
                clock=self._clock,
                batcher=self.batcher,
            )
            self._bound = (source, replica)
        return self._bound

    async def start(self) -> None:
        source, _ = self._source()
        if isinstance(source, LifecycleSource):
            await source.start()

    async def stop(self) -> None:
        source = self._registry.get(self.source_name)
        if source is not None and isinstance(source, LifecycleSource):
            await source.stop()

    async def begin_cycle(self, models: Sequence[tuple[str, str]]) -> None:
        """Prefetch this cycle's metrics per namespace ((model_id, namespace) pairs); no-op when off.

        The batch is served until :meth:`end_cycle`, however long the cycle takes.
        """
        source, _ = self._source()
        await self.batcher.prefetch(source, models)
        self.batcher.hold()

    async def end_cycle(self) -> None:
        """The cycle is over: its batch is no longer served."""
        self.batcher.release()

    def cache_lookups(self) -> tuple[int, int]:
        """(hits, misses) of the metrics source's result cache so far; (0, 0) for a source without one."""
        stats = getattr(self._registry.get(self.source_name), "stats", None)
        hits, misses = getattr(stats, "cache_hits", 0), getattr(stats, "cache_misses", 0)
        return (hits, misses) if isinstance(hits, int) and isinstance(misses, int) else (0, 0)

    async def validate_metrics_availability(self, model_id: str, namespace: str) -> MetricsValidationResult:
        source, _ = self._source()
        result = await self._one(
            source,
            promql.Q_METRICS_AVAILABILITY,
            {promql.PARAM_NAMESPACE: namespace, promql.PARAM_MODEL_ID: model_id},
        )
        if result.error is not None:
            return _prometheus_error(result.error)
        values = result.values
        if not values:
            # Emulators may expose no namespace label: try the model in any namespace.
            fallback = await self._one(
                source, promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE, {promql.PARAM_MODEL_ID: model_id}
            )
            if fallback.error is not None:
                return _prometheus_error(fallback.error)
            values = fallback.values
            if not values:
                return MetricsValidationResult(
                    available=False,
                    reason=AvailabilityReason.METRICS_MISSING,
                    message=_MSG_MISSING.format(model=model_id, ns=namespace),
                )
        now = self._clock()
        for value in values:
            age = now - value.timestamp
            if value.timestamp > 0 and age > METRICS_STALE_AFTER:
                return MetricsValidationResult(
                    available=False,
                    reason=AvailabilityReason.METRICS_STALE,
                    message=_MSG_STALE.format(model=model_id, age=format_duration(age)),
                )
        return MetricsValidationResult(
            available=True, reason=AvailabilityReason.METRICS_FOUND, message=_MSG_FOUND
        )

    async def collect_optimizer_metrics(
        self, model_id: str, namespace: str, va_name: str
    ) -> OptimizerMetrics:
        """Arrival rate in requests per minute, tokens per request, latencies in seconds."""
        source, _ = self._source()
        params = {promql.PARAM_NAMESPACE: namespace, promql.PARAM_MODEL_ID: model_id}
        results = await self.batcher.fetch(source, RefreshSpec(queries=list(promql.OPTIMIZER_QUERIES), params=params))
        firsts: dict[str, float] = {}
        for name in promql.OPTIMIZER_QUERIES:  # catalogue order: the first failure is reported
            result = results.get(name)
            if result is None or result.error is not None:
                error = result.error if result is not None else "no result"
                raise MetricsCollectionError(
                    f"failed to query Prometheus for {_OPTIMIZER_LABELS[name]}: {error}"
                )
            firsts[name] = result.first_value().value
        logger.debug("Collected optimizer metrics: model=%s namespace=%s va=%s", model_id, namespace, va_name)
        return OptimizerMetrics(
            arrival_rate=firsts[promql.Q_ARRIVAL_RATE] * 60.0,
            avg_input_tokens=firsts[promql.Q_AVG_INPUT_TOKENS],
            avg_output_tokens=firsts[promql.Q_AVG_OUTPUT_TOKENS],
            ttft_seconds=firsts[promql.Q_TTFT_AVERAGE],
            itl_seconds=firsts[promql.Q_ITL_AVERAGE],
        )

    async def collect_replica_metrics(
        self, model_id: str, namespace: str, variants: Sequence[VariantRef]
    ) -> list[ReplicaMetrics]:
        _, replica = self._source()
        return await replica.collect(model_id, namespace, variants)

    async def _one(self, source: MetricsSource, name: str, params: dict[str, str]) -> MetricResult:
        results = await self.batcher.fetch(source, RefreshSpec(queries=[name], params=params))
        return results.get(name) or MetricResult(query_name=name, error=f"query {name!r} gave no result")


def _prometheus_error(error: str) -> MetricsValidationResult:
    return MetricsValidationResult(
        available=False,
        reason=AvailabilityReason.PROMETHEUS_ERROR,
        message=f"Failed to query Prometheus: {error}",
    )
