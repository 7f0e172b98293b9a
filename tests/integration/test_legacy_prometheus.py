"""Collector v1 against the real Prometheus server scraping emulated vLLM pods."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from wva.collector.legacy import CacheConfig, MetricsCollectionError, PrometheusCollector, QueryPolicy
from wva.collector.legacy.promql import escape_regex
from wva.collector.promql import escape_promql_value
from wva.collector.types import AvailabilityReason, FreshnessStatus, VariantRef
from wva.sim.prometheus import LocalPrometheus, free_port
from wva.sim.vllm import VLLMEmulator

pytestmark = pytest.mark.prometheus

MODEL = "org/model:v1"
T = TypeVar("T")


def client(prometheus: LocalPrometheus) -> PrometheusConnect:
    return PrometheusConnect(url=prometheus.url, disable_ssl=True)


async def eventually(probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 20.0) -> T:
    """Poll ``probe`` until ``accept`` holds; fail with the last value after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.25)


async def test_replica_metrics_from_real_prometheus(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    vllm_emulator.add_pod("llama-7d9f-aaaaa", ns, MODEL, kv_cache_usage=0.25, num_requests_waiting=2)
    vllm_emulator.add_pod("llama-h100-5c6d-bbbbb", ns, MODEL, kv_cache_usage=0.5, num_requests_waiting=6)
    vllm_emulator.add_pod("llama-7d9f-other", ns, "another-model", kv_cache_usage=0.99)
    variants = [
        VariantRef("va-a100", ns, "llama", accelerator_name="A100", cost=40.0),
        VariantRef("va-h100", ns, "llama-h100", accelerator_name="H100", cost=80.0),
    ]
    collector = PrometheusCollector(client(prometheus), CacheConfig(fetch_interval=0))

    async def collect() -> list[tuple[str, str, float, int, str, float]]:
        collector.invalidate_model(MODEL, ns)
        rows = await collector.collect_replica_metrics(MODEL, ns, variants)
        return [(r.variant_name, r.pod_name, r.kv_cache_usage, r.queue_length, r.accelerator_name, r.cost)
                for r in rows]

    expected = [
        ("va-a100", "llama-7d9f-aaaaa", 0.25, 2, "A100", 40.0),
        ("va-h100", "llama-h100-5c6d-bbbbb", 0.5, 6, "H100", 80.0),
    ]
    # The KV and queue queries run in parallel, so a scrape landing between them can show a pod's KV
    # before its queue (the row then says queue unknown); wait for a cycle that saw both.
    rows = await eventually(collect, lambda rows: rows == expected)
    assert rows == expected

    # the cache answers without Prometheus noticing a change ...
    vllm_emulator.set_values(ns, "llama-7d9f-aaaaa", kv_cache_usage=0.75)
    await prometheus.wait_for(
        f'vllm:kv_cache_usage_perc{{namespace="{ns}",pod="llama-7d9f-aaaaa"}}', lambda r: r[0]["value"][1] == "0.75"
    )
    cached = await collector.collect_replica_metrics(MODEL, ns, variants)
    assert cached[0].kv_cache_usage == 0.25
    assert cached[0].metadata is not None and cached[0].metadata.freshness_status is FreshnessStatus.FRESH
    # ... until the variant is invalidated (as after a scaling decision)
    collector.invalidate_variant(MODEL, ns, "va-a100")
    fresh = await collector.collect_replica_metrics(MODEL, ns, variants)
    assert fresh[0].kv_cache_usage == 0.75  # peak over the last minute


async def test_optimizer_metrics_from_real_prometheus(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    vllm_emulator.add_pod("opt-1-a", ns, MODEL)
    vllm_emulator.add_pod("idle-1-a", ns, "idle-model")  # counters that never move
    await prometheus.wait_for(f'vllm:request_success_total{{namespace="{ns}"}}')
    # two batches one scrape apart, so rate() over [1m] sees an increase with identical shapes
    for batch in (1, 2):
        vllm_emulator.record_requests(
            ns, "opt-1-a", count=10, prompt_tokens=512, generation_tokens=128, ttft_seconds=0.2, tpot_seconds=0.02
        )
        await prometheus.wait_for(
            f'vllm:request_success_total{{namespace="{ns}",pod="opt-1-a"}} == {10 * batch}'
        )
    collector = PrometheusCollector(client(prometheus), CacheConfig(fetch_interval=0))

    async def collect() -> float:
        collector.invalidate_model(MODEL, ns)
        return (await collector.collect_optimizer_metrics(MODEL, ns, "va")).arrival_rate

    await eventually(collect, lambda rate: rate > 0)
    metrics = await collector.collect_optimizer_metrics(MODEL, ns, "va")
    assert metrics.avg_input_tokens == pytest.approx(512.0)
    assert metrics.avg_output_tokens == pytest.approx(128.0)
    assert metrics.ttft_seconds == pytest.approx(0.2)
    assert metrics.itl_seconds == pytest.approx(0.02)
    # a model whose counters never move: the ratios are 0/0 = NaN in PromQL, reported as 0
    raw = prometheus.query(
        f'sum(rate(vllm:request_prompt_tokens_sum{{model_name="idle-model",namespace="{ns}"}}[1m]))'
        f'/sum(rate(vllm:request_prompt_tokens_count{{model_name="idle-model",namespace="{ns}"}}[1m]))'
    )
    assert raw[0]["value"][1] == "NaN"
    idle = await collector.collect_optimizer_metrics("idle-model", ns, "va")
    assert (idle.arrival_rate, idle.avg_input_tokens, idle.ttft_seconds) == (0.0, 0.0, 0.0)
    # a model Prometheus has never seen: empty vectors, also 0
    unknown = await collector.collect_optimizer_metrics("no-such-model", ns, "va")
    assert unknown.arrival_rate == 0.0 and unknown.itl_seconds == 0.0


async def test_metrics_availability_and_injection_attempts(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    vllm_emulator.add_pod("avail-1-a", ns, MODEL, num_requests_running=1)
    await prometheus.wait_for(f'vllm:num_requests_running{{namespace="{ns}"}}')
    collector = PrometheusCollector(client(prometheus), CacheConfig(fetch_interval=0))

    found = await collector.validate_metrics_availability(MODEL, ns)
    assert (found.available, found.reason) == (True, AvailabilityReason.METRICS_FOUND)
    # present in another namespace only: the any-namespace fallback finds it
    elsewhere = await collector.validate_metrics_availability(MODEL, ns + "-other")
    assert elsewhere.reason is AvailabilityReason.METRICS_FOUND
    missing = await collector.validate_metrics_availability("no-such-model", ns)
    assert (missing.available, missing.reason) == (False, AvailabilityReason.METRICS_MISSING)

    # Unescaped, each of these would be a syntax error or match every vLLM series.
    for hostile in ['x"} or vllm:num_requests_running{model_name=~".+', 'a\\"b', "line\nbreak", '"', "\\"]:
        result = await collector.validate_metrics_availability(hostile, ns)
        assert result.reason is AvailabilityReason.METRICS_MISSING, (hostile, result)
    assert (await collector.collect_replica_metrics('x"} or vector(1) or {a="', ns, [])) == []


async def test_regex_escaping_matches_deployment_names_literally(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    vllm_emulator.add_pod("my.app-1-a", ns, MODEL)
    vllm_emulator.add_pod("myXapp-1-b", ns, MODEL)
    await prometheus.wait_for(f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}', lambda r: len(r) == 2)
    pattern = escape_promql_value(f"{escape_regex('my.app')}-.*")
    result = prometheus.query(f'vllm:kv_cache_usage_perc{{namespace="{ns}",pod=~"{pattern}"}}')
    assert [s["metric"]["pod"] for s in result] == ["my.app-1-a"]


async def test_unreachable_prometheus_gives_prometheus_error_and_collection_errors() -> None:
    # no urllib3-level retries: connection refused surfaces at once and our own retry policy applies
    dead = PrometheusConnect(url=f"http://127.0.0.1:{free_port()}", disable_ssl=True, retry=Retry(total=0))
    collector = PrometheusCollector(dead, query_policy=QueryPolicy(attempts=2, initial_backoff=0.05, timeout=5.0))
    result = await collector.validate_metrics_availability(MODEL, "ns")
    assert (result.available, result.reason) == (False, AvailabilityReason.PROMETHEUS_ERROR)
    assert result.message.startswith("Failed to query Prometheus: ")
    with pytest.raises(MetricsCollectionError, match="failed to query Prometheus for ArrivalRate: "):
        await collector.collect_optimizer_metrics(MODEL, "ns", "va")
    with pytest.raises(MetricsCollectionError, match="failed to query KV cache metrics: prometheus query failed"):
        await collector.collect_replica_metrics(MODEL, "ns", [])


async def test_background_fetcher_keeps_the_cache_warm(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    vllm_emulator.add_pod("warm-1-a", ns, MODEL, kv_cache_usage=0.3, num_requests_waiting=1)
    await prometheus.wait_for(f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}')
    variants = [VariantRef("va", ns, "warm")]
    collector = PrometheusCollector(
        client(prometheus), CacheConfig(ttl=30.0, cleanup_interval=1.0, fetch_interval=0.5)
    )
    collector.track_model(MODEL, ns, variants)
    await collector.start()
    try:
        key = f"{MODEL.replace('/', '%2F')}/{ns}/all/replica-metrics"
        await eventually(lambda: asyncio.sleep(0, collector.cache.get(key)), lambda entry: entry is not None)
        vllm_emulator.set_values(ns, "warm-1-a", kv_cache_usage=0.8)

        async def cached_kv() -> float:
            rows = await collector.collect_replica_metrics(MODEL, ns, variants)  # served from the cache
            return rows[0].kv_cache_usage if rows else -1.0

        assert await eventually(cached_kv, lambda kv: kv == 0.8) == 0.8
    finally:
        await collector.stop()
    assert not collector.background_fetch_running
