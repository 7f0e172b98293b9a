"""Per-pod saturation metrics (``ReplicaMetrics``) from one refresh of the two saturation queries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

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
        invalid: set[str] = set()
        stamps: dict[str, float] = {}
        kv = self._pod_values(
            self._checked(results, promql.Q_KV_CACHE_USAGE, "KV cache query failed"), now, invalid, stamps
        )
        queue = self._pod_values(
            self._checked(results, promql.Q_QUEUE_LENGTH, "queue length query failed"), now, invalid, stamps
        )
        # a broken reading is unknown load, not zero load: the pod counts as not reporting
        pods = [pod for pod in {**kv, **queue} if pod not in invalid]
        by_name = {v.name: v for v in variants if v.namespace == namespace}
        metadata = ReplicaMetricsMetadata(
            collected_at=now, age=0.0, freshness_status=FreshnessStatus.FRESH, source=self._source_name
        )
        out: list[ReplicaMetrics] = []
        va_for_pod = self._mapper.get_va_for_pod
        for pod in pods:
            kv_value = kv.get(pod)
            queue_value = queue.get(pod)
            if kv_value is None or queue_value is None:
                logger.warning(  # upstream's reading (spec 3.8); the decision record marks the signal unknown
                    "Pod has only one saturation metric, using 0 for the other: pod=%s kv=%s queue=%s",
                    pod,
                    kv_value,
                    None if queue_value is None else int(queue_value),
                )
            va_name = va_for_pod(pod, namespace)
            variant = by_name.get(va_name) if va_name is not None else None
            if variant is None:
                logger.debug(
                    "Skipping pod without a known variant: pod=%s namespace=%s va=%s", pod, namespace, va_name
                )
                continue
            out.append(
                ReplicaMetrics(
                    pod,
                    kv_value or 0.0,
                    int(queue_value) if queue_value is not None else 0,  # truncation, as upstream
                    variant.name,
                    namespace,
                    model_id,
                    variant.accelerator_name,
                    variant.cost,
                    metadata,
                    stamps[pod],
                    kv_value is not None,
                    queue_value is not None,
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
        self, result: MetricResult, now: float, invalid: set[str], stamps: dict[str, float]
    ) -> dict[str, float]:
        """pod -> value of every fresh sample (the last one wins); ``stamps`` keeps each pod's oldest known
        sample timestamp over every call.

        Pods with a NaN, infinite or negative reading go to ``invalid``."""
        out: dict[str, float] = {}
        threshold = self.staleness_threshold
        for value in result.values:
            labels = value.labels
            pod = labels.get(promql.LABEL_POD) or labels.get(promql.LABEL_POD_FALLBACK)
            if type(pod) is not str:
                pod = pod_label(labels)
            if not pod:
                continue
            number = value.value
            if not value.finite or number < 0:
                logger.warning(
                    "Ignoring invalid sample: query=%s pod=%s value=%s", result.query_name, pod,
                    number if value.finite else "non-finite",
                )
                invalid.add(pod)
                continue
            stamp = value.timestamp
            if threshold > 0 and stamp > 0 and now - stamp > threshold:
                logger.debug(
                    "Skipping stale sample: query=%s pod=%s age=%.1fs", result.query_name, pod, now - stamp
                )
                continue
            out[pod] = number
            known = stamps.get(pod)
            stamps[pod] = min(known, stamp) if known else stamp
        return out
