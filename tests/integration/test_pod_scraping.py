"""Pod scraping against the real vLLM emulator (and real Prometheus for the side-by-side comparison)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_api_client import PrometheusConnect

from operator_harness import wait_for
from wva.collector import promql
from wva.collector.types import VariantRef
from wva.collector.v2 import (
    PodMetricResult,
    PodScrapingConfig,
    PodScrapingSource,
    PodTarget,
    PodVAMapper,
    PrometheusSource,
    PrometheusSourceConfig,
    RefreshSpec,
    SourceRegistry,
    V2MetricsCollector,
)
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import EmulatorThread, VLLMEmulator

MODEL = "acme/pod-scraping"


def emulator_discovery(emulator: VLLMEmulator, namespace: str, pods: list[str]) -> Any:
    def discover(model_id: str, ns: str | None) -> list[PodTarget]:
        if ns not in (None, namespace):
            return []
        return [PodTarget(namespace, p, model_id, emulator.pod_url(namespace, p), "va") for p in pods]

    return discover


def collector_for(name: str, source: Any, mapper: PodVAMapper) -> V2MetricsCollector:
    registry = SourceRegistry()
    registry.register(name, source)
    return V2MetricsCollector(registry, mapper, source_name=name, batch_queries=False)


@pytest.mark.prometheus
async def test_both_sources_give_the_same_replica_metrics(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    values = {"dep-5d8f7-aaaaa": (0.3, 0), "dep-5d8f7-bbbbb": (0.7, 4), "dep-5d8f7-ccccc": (0.55, 9)}
    for pod, (kv, waiting) in values.items():
        vllm_emulator.add_pod(pod, ns, MODEL, kv_cache_usage=kv, num_requests_waiting=waiting, num_requests_running=1)
    mapper = PodVAMapper()
    mapper.register("va", ns, "dep")
    variants = [VariantRef("va", ns, "dep", "A100", 7.5)]
    await prometheus.wait_for(
        f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}', lambda r: len(r) == len(values), timeout=30.0
    )
    prom_source = PrometheusSource(PrometheusConnect(url=prometheus.url), PrometheusSourceConfig(query_timeout=5.0))
    pod_source = PodScrapingSource(emulator_discovery(vllm_emulator, ns, sorted(values)))
    via_prometheus = collector_for("prometheus", prom_source, mapper)
    via_pods = collector_for("pods", pod_source, mapper)
    try:
        from_prometheus = await via_prometheus.collect_replica_metrics(MODEL, ns, variants)
        from_pods = await via_pods.collect_replica_metrics(MODEL, ns, variants)
        assert from_pods == from_prometheus  # every field but the metadata (which names the source)
        assert [(r.pod_name, r.kv_cache_usage, r.queue_length) for r in from_pods] == [
            (pod, kv, waiting) for pod, (kv, waiting) in sorted(values.items())
        ]
        assert {r.metadata.source for r in from_pods if r.metadata} == {"pods"}
        assert (await via_pods.validate_metrics_availability(MODEL, ns)) == (
            await via_prometheus.validate_metrics_availability(MODEL, ns)
        )
    finally:
        await pod_source.stop()
        for pod in values:
            vllm_emulator.remove_pod(ns, pod)


@pytest.fixture(scope="module")
def own_emulator() -> Iterator[VLLMEmulator]:
    """An emulator of this module's own, so hung requests and in-flight counts concern only these tests."""
    runner = EmulatorThread()
    emulator = runner.start()
    try:
        yield emulator
    finally:
        # release the requests "hang" pods are holding so the server stops at once (not after its timeout)
        runner._loop.call_soon_threadsafe(emulator._hang.set)
        runner.stop()


async def test_faulty_pods_cost_only_their_own_data(own_emulator: VLLMEmulator) -> None:
    ns = "faults"
    healthy = ["dep-1-ok1", "dep-1-ok2"]
    faults = {"dep-1-auth": "unauthorized", "dep-1-err": "error", "dep-1-junk": "garbage",
              "dep-1-huge": "huge", "dep-1-hang": "hang"}
    for pod in healthy:
        own_emulator.add_pod(pod, ns, MODEL, kv_cache_usage=0.4, num_requests_waiting=1, num_requests_running=2)
    for pod, fault in faults.items():
        own_emulator.add_pod(pod, ns, MODEL, kv_cache_usage=0.99, fault=fault)
    mapper = PodVAMapper()
    mapper.register("va", ns, "dep-1")
    source = PodScrapingSource(
        emulator_discovery(own_emulator, ns, healthy + sorted(faults)),
        PodScrapingConfig(scrape_timeout=1.0, max_body_bytes=10 * 1024 * 1024),
    )
    collector = collector_for("pods", source, mapper)
    try:
        replicas = await asyncio.wait_for(collector.collect_replica_metrics(MODEL, ns, [VariantRef("va", ns, "dep-1")]),
                                          10.0)
        assert [(r.pod_name, r.kv_cache_usage, r.queue_length) for r in replicas] == [
            ("dep-1-ok1", 0.4, 1), ("dep-1-ok2", 0.4, 1)
        ]
        errors = source.pod_errors(ns, MODEL)
        assert errors.keys() == faults.keys()
        assert "HTTP 401" in errors["dep-1-auth"]
        assert errors["dep-1-err"] == "HTTP 500"
        assert "invalid exposition text" in errors["dep-1-junk"]
        assert "exceeds 10485760" in errors["dep-1-huge"]
        assert "timed out" in errors["dep-1-hang"]
        results = await source.refresh(RefreshSpec([promql.Q_KV_CACHE_USAGE], {"namespace": ns, "modelID": MODEL}))
        result = results[promql.Q_KV_CACHE_USAGE]
        assert isinstance(result, PodMetricResult) and result.pod_errors.keys() == faults.keys()
        assert (await collector.validate_metrics_availability(MODEL, ns)).available
    finally:
        await source.stop()


async def test_scraping_200_pods_stays_within_the_concurrency_bound(own_emulator: VLLMEmulator) -> None:
    """The first 16 of 200 pods never answer: while they hold every slot, the emulator sees nothing else."""
    ns, bound = "many", 8
    pods = [f"dep-2-{i:03d}" for i in range(200)]
    hung = pods[: 2 * bound]
    for i, pod in enumerate(pods):
        own_emulator.add_pod(pod, ns, MODEL, kv_cache_usage=i / 1000.0, num_requests_running=1,
                             fault="hang" if pod in hung else None)
    mapper = PodVAMapper()
    mapper.register("va", ns, "dep-2")
    source = PodScrapingSource(
        emulator_discovery(own_emulator, ns, pods), PodScrapingConfig(max_concurrency=bound, scrape_timeout=1.0)
    )
    own_emulator.reset_counters()
    baseline = own_emulator.in_flight  # requests still held by "hang" pods of another test
    collect = asyncio.create_task(
        collector_for("pods", source, mapper).collect_replica_metrics(MODEL, ns, [VariantRef("va", ns, "dep-2")])
    )
    try:
        await wait_for(lambda: own_emulator.in_flight - baseline >= bound, timeout=5.0, what="a full first wave")
        await asyncio.sleep(0.2)  # time for any request beyond the bound to arrive (none may)
        assert own_emulator.in_flight - baseline == bound
        assert own_emulator.requests_served == 0  # the 184 healthy pods wait for a slot
        replicas = await asyncio.wait_for(collect, 30.0)
        assert len(replicas) == 200 - len(hung)
        assert own_emulator.requests_served == len(replicas)  # one scrape per pod (hung ones never finish)
        assert own_emulator.in_flight - baseline == len(hung)  # each hung pod was asked exactly once
        assert len(source.pod_errors(ns, MODEL)) == len(hung)
    finally:
        collect.cancel()
        await source.stop()
