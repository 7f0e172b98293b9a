"""Collector v2 against the real Prometheus server scraping the vLLM emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from wva.collector import promql
from wva.collector.types import AvailabilityReason, VariantRef
from wva.collector.v2 import (
    MetricResult,
    PodVAMapper,
    PrometheusSource,
    PrometheusSourceConfig,
    RefreshSpec,
    ReplicaMetricsCollector,
    SourceRegistry,
    V2MetricsCollector,
    register_default_queries,
)
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = pytest.mark.prometheus

KV, QUEUE = promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH

HOSTILE_MODEL_IDS = [
    'quote"d',
    "back\\slash",
    "trailing\\",
    "new\nline",
    "br{ace}s",
    "{{.namespace}}",
    '"} or vector(1) #',
    "regex.*|(a+)?[x]$",
    "model-a",
    "model.*",
    "unicode-模型-🚀-é",
]


def make_source(prometheus: LocalPrometheus) -> PrometheusSource:
    client = PrometheusConnect(url=prometheus.url, disable_ssl=True, retry=Retry(total=0))
    source = PrometheusSource(client, PrometheusSourceConfig(query_timeout=5.0, retry_initial=0.05))
    register_default_queries(source.query_list())
    return source


async def refresh_until(
    source: PrometheusSource,
    spec: RefreshSpec,
    predicate: Callable[[dict[str, MetricResult]], bool],
    timeout: float = 20.0,
) -> dict[str, MetricResult]:
    """Refresh until ``predicate`` accepts the results (scrapes land about once a second)."""
    results: dict[str, MetricResult] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                results = await source.refresh(spec)
                if predicate(results):
                    return results
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout}s; last results: {results!r}")


def per_pod(result: MetricResult) -> dict[str, float]:
    assert result.error is None, result.error
    return {v.labels["pod"]: v.value for v in result.values}


async def test_emulator_values_reach_refresh_results_and_replica_metrics(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns, model = unique_ns, "org/model-a"
    a1, a2, l1 = "llama-a100-5d4f9c7b8-x2x4k", "llama-a100-5d4f9c7b8-q7w8e", "llama-l4-6c5b7d9f4-abcde"
    pods = {a1: (0.25, 1), a2: (0.5, 2), l1: (0.125, 3)}
    for pod, (kv, queue) in pods.items():
        vllm_emulator.add_pod(pod, ns, model, kv_cache_usage=kv, num_requests_waiting=queue)
    vllm_emulator.add_pod("llama-a100-5d4f9c7b8-other", ns, "org/other-model", kv_cache_usage=0.99)
    try:
        source = make_source(prometheus)
        spec = RefreshSpec([KV, QUEUE], {"namespace": ns, "modelID": model})
        results = await refresh_until(
            source, spec, lambda r: len(r[KV].values) == 3 and len(r[QUEUE].values) == 3
        )
        assert per_pod(results[KV]) == {pod: kv for pod, (kv, _) in pods.items()}
        assert per_pod(results[QUEUE]) == {pod: float(queue) for pod, (_, queue) in pods.items()}
        cached = source.get(KV, {"namespace": ns, "modelID": model})
        assert cached is not None and cached.result == results[KV]

        # Values moved in the emulator show up (raised: the queries take the max over 1m).
        vllm_emulator.set_values(ns, l1, kv_cache_usage=0.875, num_requests_waiting=11)
        await refresh_until(
            source, spec, lambda r: per_pod(r[KV]).get(l1) == 0.875 and per_pod(r[QUEUE]).get(l1) == 11
        )

        mapper = PodVAMapper()
        mapper.register("va-a100", ns, "llama-a100")
        mapper.register("va-l4", ns, "llama-l4")
        mapper.observe_pod_owner(l1, ns, "ReplicaSet", "llama-l4-6c5b7d9f4")  # a100 pods: name-shape fallback
        variants = [
            VariantRef("va-a100", ns, "llama-a100", accelerator_name="A100", cost=40.0),
            VariantRef("va-l4", ns, "llama-l4", accelerator_name="L4", cost=5.0),
        ]
        replicas = await ReplicaMetricsCollector(source, mapper).collect(model, ns, variants)
        rows = [
            (r.variant_name, r.pod_name, r.kv_cache_usage, r.queue_length, r.accelerator_name)
            for r in replicas
        ]
        assert rows == [
            ("va-a100", a2, 0.5, 2, "A100"),
            ("va-a100", a1, 0.25, 1, "A100"),
            ("va-l4", l1, 0.875, 11, "L4"),
        ]

        registry = SourceRegistry()
        registry.register("prometheus", source)
        collector = V2MetricsCollector(registry, mapper)
        found = await collector.validate_metrics_availability(model, ns)
        assert (found.available, found.reason) == (True, AvailabilityReason.METRICS_FOUND)
        missing = await collector.validate_metrics_availability("org/not-deployed", ns)
        assert (missing.available, missing.reason) == (False, AvailabilityReason.METRICS_MISSING)
    finally:
        for pod in [*pods, "llama-a100-5d4f9c7b8-other"]:
            vllm_emulator.remove_pod(ns, pod)


async def test_hostile_model_ids_and_namespaces_match_only_themselves(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    hostile_ns = unique_ns + '"} or vector(1) # \\ 🚀'
    placed = [(unique_ns, f"pod-{i}", model, (i + 1) / 64) for i, model in enumerate(HOSTILE_MODEL_IDS)]
    placed.append((hostile_ns, "pod-hns", "model-a", 0.5))
    for ns, pod, model, kv in placed:
        vllm_emulator.add_pod(pod, ns, model, kv_cache_usage=kv, num_requests_waiting=1)
    try:
        source = make_source(prometheus)
        await prometheus.wait_for(
            f'count(vllm:kv_cache_usage_perc{{namespace=~"{unique_ns}.*"}})',
            lambda r: int(float(r[0]["value"][1])) == len(placed),
        )

        async def kv_for(ns: str, model: str) -> MetricResult:
            results = await source.refresh(RefreshSpec([KV], {"namespace": ns, "modelID": model}))
            return results[KV]

        answers = await asyncio.gather(*(kv_for(ns, model) for ns, _, model, _ in placed))
        for (_, pod, model, kv), result in zip(placed, answers, strict=True):
            assert per_pod(result) == {pod: kv}, f"modelID {model!r}"
        # Nothing matches a model that only differs by escaping artefacts.
        for ghost in ('quote\\"d', "back\\\\slash", "new\\nline", "model", ".*"):
            assert per_pod(await kv_for(unique_ns, ghost)) == {}, f"modelID {ghost!r}"
    finally:
        for ns, pod, _, _ in placed:
            vllm_emulator.remove_pod(ns, pod)
