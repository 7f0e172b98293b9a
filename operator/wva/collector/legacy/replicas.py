"""The legacy per-pod saturation collection (upstream ``SaturationMetricsCollector``).

KV-cache and queue queries run in parallel (5 s each), pods that ``kube_pod_info`` no longer knows are
dropped, and every remaining pod is attributed to a variant: through the :class:`PodResolver` when it
knows the pod, else by the longest ``<deployment>-`` pod-name prefix. :func:`merge_replica_metrics` is
the pure part and does no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wva.collector import promql as catalogue
from wva.collector.legacy.errors import MetricsCollectionError
from wva.collector.legacy.promql import (
    is_vector,
    pod_existence_query,
    pod_of,
    render_model_query,
    samples,
    text_labels,
)
from wva.collector.legacy.query import PromQueryRunner
from wva.collector.types import PodResolver, ReplicaMetrics, VariantRef

logger = logging.getLogger(__name__)

SATURATION_QUERY_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PodSignals:
    """Per-pod values from the two saturation queries (absent pods are missing from the maps)."""

    kv_cache: Mapping[str, float]
    queue: Mapping[str, int]

    @property
    def candidates(self) -> frozenset[str]:
        return frozenset(self.kv_cache) | frozenset(self.queue)


def signals_from_results(kv_result: object, queue_result: object) -> PodSignals:
    """Turn the two raw vector payloads into per-pod maps; samples without a pod name are skipped.

    A pod with a NaN, infinite or negative reading in either query is left out of both maps: its load
    is unknown, not zero, so it must count as not reporting (which blocks a scale-down).
    """
    invalid = _invalid_pods(kv_result) | _invalid_pods(queue_result)
    kv: dict[str, float] = {}
    for sample in samples(kv_result):
        pod = pod_of(sample.labels)
        if pod and pod not in invalid:
            kv[pod] = sample.value
    queue: dict[str, int] = {}
    for sample in samples(queue_result):
        pod = pod_of(sample.labels)
        if pod and pod not in invalid:
            queue[pod] = int(sample.value)  # truncation, as upstream
    return PodSignals(kv, queue)


def _invalid_pods(result: object) -> set[str]:
    """Pods whose raw sample value is NaN, ±Inf or negative (``samples`` has already zeroed them)."""
    if not is_vector(result):
        return set()
    assert isinstance(result, list)
    invalid = set()
    for item in result:
        raw = item.get("value")
        try:
            value = float(raw[1])
        except OverflowError:  # an integer beyond the float range: not a usable reading either
            value = math.inf
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if not math.isfinite(value) or value < 0:
            labels = text_labels(item.get("metric") or {})
            pod = pod_of(labels) if labels is not None else ""
            if pod:
                shown = raw[1] if isinstance(raw[1], str) else value  # a 5000-digit int cannot be printed
                logger.warning("Ignoring invalid sample: pod=%s value=%s", pod, shown)
                invalid.add(pod)
    return invalid


def existing_pods(result: object, candidates: frozenset[str]) -> frozenset[str]:
    """The candidate pods that ``kube_pod_info`` reports."""
    return frozenset(pod for s in samples(result) if (pod := s.labels.get(catalogue.LABEL_POD, "")) in candidates)


def deployment_for_pod(pod: str, deployment_names: Sequence[str]) -> str | None:
    """Longest deployment name ``D`` such that ``pod`` starts with ``D-`` (upstream's fallback)."""
    best: str | None = None
    for name in deployment_names:
        if pod.startswith(name + "-") and (best is None or len(name) > len(best)):
            best = name
    return best


def merge_replica_metrics(
    model_id: str,
    namespace: str,
    signals: PodSignals,
    existing: frozenset[str] | None,
    variants: Sequence[VariantRef],
    resolver: PodResolver | None,
) -> list[ReplicaMetrics]:
    """Assemble one :class:`ReplicaMetrics` per live, attributable pod, sorted by (variant, pod).

    ``existing`` is the ``kube_pod_info`` answer; ``None`` (query failed) or an empty set (not scraped
    yet) means no stale-pod filtering.
    """
    by_name = {v.name: v for v in sorted(variants, key=lambda v: v.name) if v.namespace == namespace}
    by_deployment: dict[str, VariantRef] = {}
    for ref in by_name.values():
        by_deployment.setdefault(ref.deployment_name, ref)
    deployment_names = sorted(by_deployment)

    candidates = signals.candidates
    keep = candidates if not existing else candidates & existing
    dropped = len(candidates) - len(keep)
    if dropped:
        logger.debug("replica metrics: dropped %d stale pods of %s/%s", dropped, namespace, model_id)

    rows: list[ReplicaMetrics] = []
    unmatched = 0
    for pod in sorted(keep):
        variant = _variant_for_pod(pod, namespace, by_name, by_deployment, deployment_names, resolver)
        if variant is None:
            unmatched += 1
            continue
        kv = signals.kv_cache.get(pod)
        queue = signals.queue.get(pod)
        if kv is None or queue is None:
            logger.warning(  # upstream's reading (spec 3.8); the decision record marks the signal unknown
                "replica metrics: pod %s/%s has no %s value, using 0",
                namespace, pod, "kv_cache_usage" if kv is None else "queue_length",
            )
        rows.append(
            ReplicaMetrics(
                pod_name=pod,
                kv_cache_usage=kv if kv is not None else 0.0,
                queue_length=queue if queue is not None else 0,
                variant_name=variant.name,
                namespace=namespace,
                model_id=model_id,
                accelerator_name=variant.accelerator_name,
                cost=variant.cost,
                kv_known=kv is not None,
                queue_known=queue is not None,
            )
        )
    if unmatched:
        logger.debug("replica metrics: %d pods of %s/%s match no variant", unmatched, namespace, model_id)
    rows.sort(key=lambda r: (r.variant_name, r.pod_name))
    return rows


def _variant_for_pod(
    pod: str,
    namespace: str,
    by_name: Mapping[str, VariantRef],
    by_deployment: Mapping[str, VariantRef],
    deployment_names: Sequence[str],
    resolver: PodResolver | None,
) -> VariantRef | None:
    if resolver is not None:
        va_name = resolver.get_va_for_pod(pod, namespace)
        if va_name is not None:
            # the resolver knows the pod's owner: trust it, even when that VA is not asked for
            return by_name.get(va_name)
    deployment = deployment_for_pod(pod, deployment_names)
    return by_deployment[deployment] if deployment is not None else None


async def collect_replica_metrics(
    runner: PromQueryRunner,
    model_id: str,
    namespace: str,
    variants: Sequence[VariantRef],
    resolver: PodResolver | None,
) -> list[ReplicaMetrics]:
    """Query Prometheus and assemble replica metrics. Raises MetricsCollectionError on a query error."""
    kv_query = render_model_query(catalogue.Q_KV_CACHE_USAGE, model_id, namespace)
    queue_query = render_model_query(catalogue.Q_QUEUE_LENGTH, model_id, namespace)
    results: tuple[Any, Any] = await asyncio.gather(
        runner.query(kv_query, timeout=SATURATION_QUERY_TIMEOUT),
        runner.query(queue_query, timeout=SATURATION_QUERY_TIMEOUT),
        return_exceptions=True,
    )
    kv_result, queue_result = results
    if isinstance(kv_result, BaseException):
        _reraise_cancellation(kv_result)
        raise MetricsCollectionError(
            f"failed to query KV cache metrics: prometheus query failed: {kv_result}"
        ) from kv_result
    if isinstance(queue_result, BaseException):
        _reraise_cancellation(queue_result)
        raise MetricsCollectionError(
            f"failed to query queue metrics: prometheus query failed: {queue_result}"
        ) from queue_result

    signals = signals_from_results(kv_result, queue_result)
    existing: frozenset[str] | None = None
    if signals.candidates:
        names = {v.deployment_name for v in variants if v.namespace == namespace}
        try:
            pod_info = await runner.query(pod_existence_query(namespace, names))
        except Exception as err:
            logger.warning(
                "replica metrics: kube_pod_info query failed for %s, keeping all pods: %s", namespace, err
            )
        else:
            existing = existing_pods(pod_info, signals.candidates)
            if not existing:
                logger.debug("replica metrics: kube_pod_info knows none of the pods in %s, not filtering",
                             namespace)
    return merge_replica_metrics(model_id, namespace, signals, existing, variants, resolver)


def _reraise_cancellation(err: BaseException) -> None:
    if not isinstance(err, Exception):
        raise err
