"""Collector v1 and v2 give the same answers for the same Prometheus data (all three engine calls)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from wva.collector import MetricsCollector, new_metrics_collector
from wva.collector.legacy import CacheConfig
from wva.collector.types import AvailabilityReason, ReplicaMetrics, VariantRef
from wva.collector.v2 import PodVAMapper
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = pytest.mark.prometheus
MODEL = 'acme/parity "quoted" model'


def _collectors(prometheus: LocalPrometheus, mapper: PodVAMapper) -> dict[str, MetricsCollector]:
    def prom() -> PrometheusConnect:
        return PrometheusConnect(url=prometheus.url, disable_ssl=True, retry=Retry(total=0))

    return {
        "v1": new_metrics_collector(False, prom(), mapper, cache_config=CacheConfig(enabled=False)),
        "v2": new_metrics_collector(True, prom(), mapper),
    }


def _strip(rows: list[ReplicaMetrics]) -> list[ReplicaMetrics]:
    return sorted(rows, key=lambda r: (r.variant_name, r.pod_name))  # metadata is not compared (compare=False)


@pytest.mark.parametrize("scenario", ["steady", "one-pod-saturated", "queue-only"])
async def test_v1_and_v2_agree(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str, scenario: str
) -> None:
    ns = unique_ns
    values = {
        "steady": [(0.3, 1), (0.4, 0), (0.5, 2)],
        "one-pod-saturated": [(0.95, 7), (0.2, 0), (0.1, 0)],
        "queue-only": [(0.0, 9), (0.0, 4), (0.0, 0)],
    }[scenario]
    pods = ["chat-a-5d8f9c-x1", "chat-a-5d8f9c-x2", "chat-b-77aa11-y1"]
    mapper = PodVAMapper()
    mapper.register("va-a", ns, "chat-a")
    mapper.register("va-b", ns, "chat-b")
    for pod, (kv, queue) in zip(pods, values, strict=True):
        mapper.observe_pod(pod, ns, pod.rsplit("-", 2)[0])
        vllm_emulator.add_pod(pod, ns, MODEL, kv_cache_usage=kv, num_requests_waiting=queue, num_requests_running=1)
        vllm_emulator.record_requests(ns, pod, count=100, prompt_tokens=128, generation_tokens=64,
                                      ttft_seconds=0.2, tpot_seconds=0.01)
    vllm_emulator.add_pod("other-0", ns, "another-model", kv_cache_usage=0.99)
    await prometheus.wait_for(f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}', lambda r: len(r) == 4, timeout=30)
    # counters need two scrapes for rate(); move them once more and wait for the second sample
    for pod in pods:
        vllm_emulator.record_requests(ns, pod, count=60, prompt_tokens=128, generation_tokens=64,
                                      ttft_seconds=0.2, tpot_seconds=0.01)
    await prometheus.wait_for(
        f'sum(rate(vllm:request_success_total{{namespace="{ns}"}}[1m]))', lambda r: float(r[0]["value"][1]) > 0,
        timeout=30,
    )
    variants = [
        VariantRef("va-a", ns, "chat-a", accelerator_name="L4", cost=5.0),
        VariantRef("va-b", ns, "chat-b", accelerator_name="L4", cost=20.0),
    ]
    collectors = _collectors(prometheus, mapper)
    for c in collectors.values():
        await c.start()
    try:
        answers = {}
        for name, c in collectors.items():
            availability, optimizer, replicas = await asyncio.gather(
                c.validate_metrics_availability(MODEL, ns),
                c.collect_optimizer_metrics(MODEL, ns, "va-a"),
                c.collect_replica_metrics(MODEL, ns, variants),
            )
            answers[name] = (availability, optimizer, _strip(replicas))
        v1, v2 = answers["v1"], answers["v2"]
        assert v1[0] == v2[0]
        assert v1[0].reason == AvailabilityReason.METRICS_FOUND
        assert v1[2] == v2[2]
        expected = [
            (pod, kv, queue, "va-a" if "chat-a" in pod else "va-b")
            for pod, (kv, queue) in zip(pods, values, strict=True)
        ]
        assert [(r.pod_name, r.kv_cache_usage, r.queue_length, r.variant_name) for r in v1[2]] == expected
        # ratios of two rates are exact whenever they are evaluated; a bare rate moves when a scrape lands
        # between the two collectors' queries (Prometheus extrapolates over the window), so it gets slack
        for field in ("avg_input_tokens", "avg_output_tokens", "ttft_seconds", "itl_seconds"):
            assert getattr(v1[1], field) == pytest.approx(getattr(v2[1], field), rel=1e-6), field
        assert v1[1].arrival_rate > 0 and v2[1].arrival_rate > 0
        assert v1[1].arrival_rate == pytest.approx(v2[1].arrival_rate, rel=0.3)
        assert v1[1].avg_input_tokens == pytest.approx(128.0)
        assert v1[1].ttft_seconds == pytest.approx(0.2)
    finally:
        for c in collectors.values():
            await c.stop()


async def test_v1_and_v2_agree_when_metrics_are_missing(prometheus: LocalPrometheus, unique_ns: str) -> None:
    collectors = _collectors(prometheus, PodVAMapper())
    results = [await c.validate_metrics_availability("no-such-model", unique_ns) for c in collectors.values()]
    assert results[0] == results[1]
    assert results[0].reason == AvailabilityReason.METRICS_MISSING
    rows = [await c.collect_replica_metrics("no-such-model", unique_ns, []) for c in collectors.values()]
    assert rows == [[], []]
