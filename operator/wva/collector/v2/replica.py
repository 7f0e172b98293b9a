"""Per-pod saturation metrics (``ReplicaMetrics``) from one refresh of the two saturation queries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wva.collector import promql
from wva.collector.types import (
    FreshnessStatus,
    PodResolver,
    ReplicaMetrics,
    ReplicaMetricsMetadata,
    VariantRef,
)
from wva.collector.v2.batching import QueryBatcher
from wva.collector.v2.errors import MetricsCollectionError
from wva.collector.v2.registration import register_saturation_queries
from wva.collector.v2.results import MetricResult, RefreshSpec
from wva.collector.v2.source import MetricsSource

__all__ = ["DEFAULT_STALENESS_THRESHOLD", "ReplicaMetricsCollector", "pod_label"]

logger = logging.getLogger(__name__)

DEFAULT_STALENESS_THRESHOLD = 120.0


def pod_label(labels: object) -> str:
    """The pod name of a sample: label ``pod``, else ``pod_name``, else ""."""
    get = getattr(labels, "get", None)
    if get is None:
        return ""
    return str(get(promql.LABEL_POD) or get(promql.LABEL_POD_FALLBACK) or "")


@dataclass(slots=True)
class _PodSample:
    kv: float | None = None
    queue: int | None = None
    stamp: float = 0.0


class ReplicaMetricsCollector:
    """Builds one ``ReplicaMetrics`` per pod of the given variants.

    Samples older than ``staleness_threshold`` seconds are skipped (0 disables the filter; a sample
    without a timestamp is kept). With real Prometheus this filter rarely bites: instant-query
    samples carry the evaluation time, and a pod gone for more than the ``[1m]`` window simply
    drops out of the result.
    """

    def __init__(
        self,
        source: MetricsSource,
        mapper: PodResolver,
        staleness_threshold: float = DEFAULT_STALENESS_THRESHOLD,
        *,
        source_name: str = "prometheus",
        clock: Callable[[], float] = time.time,
        batcher: QueryBatcher | None = None,
    ) -> None:
        self._source = source
        self._batcher = batcher  # serves this cycle's batched results, if any
        self._mapper = mapper
        self.staleness_threshold = staleness_threshold
        self._source_name = source_name
        self._clock = clock
        register_saturation_queries(source.query_list())

    async def collect(
        self, model_id: str, namespace: str, variants: Sequence[VariantRef]
    ) -> list[ReplicaMetrics]:
        """Raise ``MetricsCollectionError`` if either query failed; sorted by (variant, pod)."""
        params = {promql.PARAM_NAMESPACE: namespace, promql.PARAM_MODEL_ID: model_id}
        spec = RefreshSpec(queries=list(promql.SATURATION_QUERIES), params=params)
        if self._batcher is not None:
            results = await self._batcher.fetch(self._source, spec)
        else:
            results = await self._source.refresh(spec)
        now = self._clock()
        pods: dict[str, _PodSample] = {}
        kv = self._checked(results, promql.Q_KV_CACHE_USAGE, "KV cache query failed")
        invalid: set[str] = set()
        for pod, value, stamp in self._pod_values(kv, now, invalid):
            sample = pods.setdefault(pod, _PodSample())
            sample.kv = value
            sample.stamp = min(sample.stamp, stamp) if sample.stamp else stamp
        queue = self._checked(results, promql.Q_QUEUE_LENGTH, "queue length query failed")
        for pod, value, stamp in self._pod_values(queue, now, invalid):
            sample = pods.setdefault(pod, _PodSample())
            sample.queue = int(value)  # truncation, as upstream
            sample.stamp = min(sample.stamp, stamp) if sample.stamp else stamp
        for pod in sorted(invalid):
            # a broken reading is unknown load, not zero load: the pod counts as not reporting
            pods.pop(pod, None)

        by_name = {v.name: v for v in variants if v.namespace == namespace}
        metadata = ReplicaMetricsMetadata(
            collected_at=now, age=0.0, freshness_status=FreshnessStatus.FRESH, source=self._source_name
        )
        out: list[ReplicaMetrics] = []
        for pod, sample in pods.items():
            if sample.kv is None or sample.queue is None:
                logger.warning(  # upstream's reading (spec 3.8); the decision record marks the signal unknown
                    "Pod has only one saturation metric, using 0 for the other: pod=%s kv=%s queue=%s",
                    pod,
                    sample.kv,
                    sample.queue,
                )
            va_name = self._mapper.get_va_for_pod(pod, namespace)
            variant = by_name.get(va_name) if va_name is not None else None
            if variant is None:
                logger.debug(
                    "Skipping pod without a known variant: pod=%s namespace=%s va=%s", pod, namespace, va_name
                )
                continue
            out.append(
                ReplicaMetrics(
                    pod_name=pod,
                    kv_cache_usage=sample.kv or 0.0,
                    queue_length=sample.queue or 0,
                    variant_name=variant.name,
                    namespace=namespace,
                    model_id=model_id,
                    accelerator_name=variant.accelerator_name,
                    cost=variant.cost,
                    metadata=metadata,
                    sample_time=sample.stamp,
                    kv_known=sample.kv is not None,
                    queue_known=sample.queue is not None,
                )
            )
        out.sort(key=lambda r: (r.variant_name, r.pod_name))
        return out

    @staticmethod
    def _checked(results: dict[str, MetricResult], name: str, what: str) -> MetricResult:
        result = results.get(name)
        if result is None:
            raise MetricsCollectionError(f"{what}: no result for query {name!r}")
        if result.error is not None:
            raise MetricsCollectionError(f"{what}: {result.error}")
        return result

    def _pod_values(
        self, result: MetricResult, now: float, invalid: set[str]
    ) -> list[tuple[str, float, float]]:
        """(pod, value, sample timestamp) of every fresh sample.

        Pods with a NaN, infinite or negative reading go to ``invalid``."""
        out = []
        for value in result.values:
            pod = pod_label(value.labels)
            if not pod:
                continue
            if not value.finite or value.value < 0:
                logger.warning(
                    "Ignoring invalid sample: query=%s pod=%s value=%s", result.query_name, pod,
                    value.value if value.finite else "non-finite",
                )
                invalid.add(pod)
                continue
            if (
                self.staleness_threshold > 0
                and value.timestamp > 0
                and now - value.timestamp > self.staleness_threshold
            ):
                logger.debug(
                    "Skipping stale sample: query=%s pod=%s age=%.1fs",
                    result.query_name,
                    pod,
                    now - value.timestamp,
                )
                continue
            out.append((pod, value.value, value.timestamp))
        return out
