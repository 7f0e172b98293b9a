"""ReplicaMetricsCollector and V2MetricsCollector over a canned source (and once over HTTP)."""

from __future__ import annotations

from typing import Any

import pytest
from test_v2_support import FakePrometheus, FakeSource, per_pod, vector

from fakes import FakeClock
from wva.collector import MetricsCollector, promql
from wva.collector.types import AvailabilityReason, FreshnessStatus, OptimizerMetrics, VariantRef
from wva.collector.v2 import (
    MetricResult,
    MetricsCollectionError,
    MetricValue,
    PodVAMapper,
    PrometheusSource,
    PrometheusSourceConfig,
    ReplicaMetricsCollector,
    SourceRegistry,
    V2MetricsCollector,
)

NOW = 1_700_000_000.0
NS = "llm"
MODEL = "meta/llama-3"
KV, QUEUE = promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH

VARIANTS = [
    VariantRef(
        name="va-a100", namespace=NS, deployment_name="llama-a100", accelerator_name="A100", cost=40.0
    ),
    VariantRef(name="va-l4", namespace=NS, deployment_name="llama-l4", accelerator_name="L4", cost=5.0),
]


def mapper() -> PodVAMapper:
    m = PodVAMapper()
    for v in VARIANTS:
        m.register(v.name, v.namespace, v.deployment_name)
    m.register("va-unlisted", NS, "other")
    return m


def replica_collector(
    results: dict[str, MetricResult], threshold: float = 120.0
) -> tuple[ReplicaMetricsCollector, FakeSource]:
    source = FakeSource(results=results)
    return ReplicaMetricsCollector(source, mapper(), threshold, clock=FakeClock(NOW)), source


# --- ReplicaMetricsCollector ---------------------------------------------------------------------


async def test_replica_metrics_per_pod_with_variant_data_sorted() -> None:
    collector, source = replica_collector(
        {
            KV: per_pod(KV, {"llama-l4-5d-b": 0.5, "llama-a100-7f-x": 0.9, "llama-l4-5d-a": 0.1}, NOW - 5),
            QUEUE: per_pod(
                QUEUE, {"llama-l4-5d-b": 2.0, "llama-a100-7f-x": 7.9, "llama-l4-5d-a": 0.0}, NOW - 5
            ),
        }
    )
    out = await collector.collect(MODEL, NS, VARIANTS)

    assert [(r.variant_name, r.pod_name, r.kv_cache_usage, r.queue_length) for r in out] == [
        ("va-a100", "llama-a100-7f-x", 0.9, 7),  # queue truncated
        ("va-l4", "llama-l4-5d-a", 0.1, 0),
        ("va-l4", "llama-l4-5d-b", 0.5, 2),
    ]
    assert {(r.accelerator_name, r.cost) for r in out if r.variant_name == "va-a100"} == {("A100", 40.0)}
    assert {(r.accelerator_name, r.cost) for r in out if r.variant_name == "va-l4"} == {("L4", 5.0)}
    assert all(r.namespace == NS and r.model_id == MODEL for r in out)
    for r in out:
        assert r.metadata is not None
        assert (r.metadata.collected_at, r.metadata.age, r.metadata.freshness_status) == (
            NOW,
            0.0,
            FreshnessStatus.FRESH,
        )
    [spec] = source.specs
    assert list(spec.queries) == [KV, QUEUE]
    assert dict(spec.params) == {"namespace": NS, "modelID": MODEL}
    assert source.queries.names() == sorted([KV, QUEUE])  # registered on construction


async def test_missing_metric_defaults_to_zero_and_pod_name_label_is_a_fallback() -> None:
    collector, _ = replica_collector(
        {
            KV: per_pod(KV, {"llama-l4-1-a": 0.4}, NOW, label="pod_name"),
            QUEUE: per_pod(QUEUE, {"llama-l4-1-b": 3.0}, NOW),
        }
    )
    out = await collector.collect(MODEL, NS, VARIANTS)
    assert [(r.pod_name, r.kv_cache_usage, r.queue_length) for r in out] == [
        ("llama-l4-1-a", 0.4, 0),
        ("llama-l4-1-b", 0.0, 3),
    ]


async def test_unmapped_pods_unlisted_variants_and_unlabelled_samples_are_skipped() -> None:
    kv = per_pod(KV, {"stranger-1-a": 0.3, "other-1-a": 0.3, "llama-l4-1-a": 0.2}, NOW)
    kv = MetricResult(KV, [*kv.values, MetricValue(0.9, NOW, {"instance": "x"})], NOW)
    collector, _ = replica_collector({KV: kv, QUEUE: per_pod(QUEUE, {}, NOW)})
    out = await collector.collect(MODEL, NS, VARIANTS)
    assert [r.pod_name for r in out] == ["llama-l4-1-a"]
    # A variant in another namespace is not a match either.
    elsewhere = [VariantRef(name="va-l4", namespace="other-ns", deployment_name="llama-l4")]
    assert await collector.collect(MODEL, NS, elsewhere) == []


async def test_stale_samples_are_skipped_unless_the_filter_is_off() -> None:
    results = {
        KV: MetricResult(
            KV,
            [
                MetricValue(0.1, NOW - 121, {"pod": "llama-l4-1-old"}),
                MetricValue(0.2, NOW - 120, {"pod": "llama-l4-1-edge"}),
                MetricValue(0.3, 0.0, {"pod": "llama-l4-1-nots"}),
            ],
            NOW,
        ),
        QUEUE: per_pod(QUEUE, {}, NOW),
    }
    collector, _ = replica_collector(results)
    assert [r.pod_name for r in await collector.collect(MODEL, NS, VARIANTS)] == [
        "llama-l4-1-edge",
        "llama-l4-1-nots",
    ]
    unfiltered, _ = replica_collector(results, threshold=0)
    assert len(await unfiltered.collect(MODEL, NS, VARIANTS)) == 3


async def test_failed_queries_raise() -> None:
    collector, _ = replica_collector(
        {
            KV: MetricResult(KV, error="query execution failed: boom"),
            QUEUE: per_pod(QUEUE, {}, NOW),
        }
    )
    with pytest.raises(
        MetricsCollectionError, match=r"^KV cache query failed: query execution failed: boom$"
    ):
        await collector.collect(MODEL, NS, VARIANTS)
    collector, _ = replica_collector({KV: per_pod(KV, {}, NOW), QUEUE: MetricResult(QUEUE, error="x")})
    with pytest.raises(MetricsCollectionError, match=r"^queue length query failed: x$"):
        await collector.collect(MODEL, NS, VARIANTS)


# --- V2MetricsCollector --------------------------------------------------------------------------


def v2(results: dict[str, MetricResult]) -> tuple[V2MetricsCollector, FakeSource]:
    registry = SourceRegistry()
    source = FakeSource(results=results)
    registry.register("prometheus", source)
    return V2MetricsCollector(registry, mapper(), clock=FakeClock(NOW)), source


def availability(primary: MetricResult, fallback: MetricResult | None = None) -> dict[str, MetricResult]:
    results = {promql.Q_METRICS_AVAILABILITY: primary}
    if fallback is not None:
        results[promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE] = fallback
    return results


def sample(age: float) -> MetricResult:
    return MetricResult("x", [MetricValue(1.0, NOW - age, {"pod": "p"})], NOW)


async def test_v2_collector_satisfies_the_engine_protocol_and_registers_queries_lazily() -> None:
    registry = SourceRegistry()
    collector = V2MetricsCollector(registry, mapper())
    assert isinstance(collector, MetricsCollector)
    with pytest.raises(MetricsCollectionError, match="'prometheus' is not registered"):
        await collector.validate_metrics_availability(MODEL, NS)
    source = FakeSource()
    registry.register("prometheus", source)
    await collector.start()  # a source without lifecycle methods is fine
    await collector.stop()
    assert source.queries.names() == sorted(promql.QUERY_TEMPLATES)


@pytest.mark.parametrize(
    ("results", "available", "reason", "fragment"),
    [
        (
            availability(sample(10)),
            True,
            AvailabilityReason.METRICS_FOUND,
            "vLLM metrics are available and up-to-date",
        ),
        (availability(sample(120)), True, AvailabilityReason.METRICS_FOUND, "up-to-date"),
        (availability(MetricResult("a"), sample(5)), True, AvailabilityReason.METRICS_FOUND, "up-to-date"),
        (
            availability(MetricResult("a"), MetricResult("b")),
            False,
            AvailabilityReason.METRICS_MISSING,
            f"No vLLM metrics found for model '{MODEL}' in namespace '{NS}'. "
            "Check: (1) ServiceMonitor exists",
        ),
        (
            availability(MetricResult("a", error="query execution failed: refused")),
            False,
            AvailabilityReason.PROMETHEUS_ERROR,
            "Failed to query Prometheus: query execution failed: refused",
        ),
        (
            availability(MetricResult("a"), MetricResult("b", error="boom")),
            False,
            AvailabilityReason.PROMETHEUS_ERROR,
            "Failed to query Prometheus: boom",
        ),
        (
            availability(sample(600)),
            False,
            AvailabilityReason.METRICS_STALE,
            f"vLLM metrics for model '{MODEL}' are stale (last update: 10m0s ago)",
        ),
    ],
)
async def test_validate_metrics_availability(
    results: dict[str, MetricResult], available: bool, reason: AvailabilityReason, fragment: str
) -> None:
    collector, source = v2(results)
    got = await collector.validate_metrics_availability(MODEL, NS)
    assert (got.available, got.reason) == (available, reason)
    assert fragment in got.message
    assert dict(source.specs[0].params) == {"namespace": NS, "modelID": MODEL}
    if len(source.specs) > 1:
        assert dict(source.specs[1].params) == {"modelID": MODEL}  # the fallback has no namespace


def first(name: str, value: float) -> MetricResult:
    return MetricResult(name, [MetricValue(value, NOW, {})], NOW)


async def test_optimizer_metrics_units() -> None:
    collector, source = v2(
        {
            promql.Q_ARRIVAL_RATE: first(promql.Q_ARRIVAL_RATE, 0.175),
            promql.Q_AVG_INPUT_TOKENS: first(promql.Q_AVG_INPUT_TOKENS, 100.0),
            promql.Q_AVG_OUTPUT_TOKENS: first(promql.Q_AVG_OUTPUT_TOKENS, 150.0),
            promql.Q_TTFT_AVERAGE: first(promql.Q_TTFT_AVERAGE, 0.5),
            promql.Q_ITL_AVERAGE: first(promql.Q_ITL_AVERAGE, 0.05),
        }
    )
    got = await collector.collect_optimizer_metrics(MODEL, NS, "va-a100")
    assert got.arrival_rate == pytest.approx(10.5)  # 0.175 req/s as req/min
    assert got == OptimizerMetrics(
        arrival_rate=got.arrival_rate,
        avg_input_tokens=100.0,
        avg_output_tokens=150.0,
        ttft_seconds=0.5,
        itl_seconds=0.05,
    )
    assert list(source.specs[0].queries) == list(promql.OPTIMIZER_QUERIES)


async def test_optimizer_metrics_empty_results_are_zero_and_errors_raise() -> None:
    collector, _ = v2({})
    assert await collector.collect_optimizer_metrics(MODEL, NS, "va") == OptimizerMetrics()
    collector, _ = v2({promql.Q_TTFT_AVERAGE: MetricResult(promql.Q_TTFT_AVERAGE, error="boom")})
    with pytest.raises(
        MetricsCollectionError, match=r"^failed to query Prometheus for TTFTAverageTime: boom$"
    ):
        await collector.collect_optimizer_metrics(MODEL, NS, "va")


async def test_replica_metrics_through_the_v2_collector() -> None:
    collector, _ = v2({KV: per_pod(KV, {"llama-a100-1-a": 0.7}, NOW), QUEUE: per_pod(QUEUE, {}, NOW)})
    [r] = await collector.collect_replica_metrics(MODEL, NS, VARIANTS)
    assert (r.variant_name, r.kv_cache_usage, r.queue_length, r.accelerator_name) == (
        "va-a100",
        0.7,
        0,
        "A100",
    )


async def test_v2_collector_over_http_sends_catalogue_queries() -> None:
    by_metric = {
        "vllm:request_success_total": 2.0,
        "vllm:request_prompt_tokens_sum": 300.0,
        "vllm:request_generation_tokens_sum": 40.0,
        "vllm:time_to_first_token_seconds_sum": 0.25,
        "vllm:time_per_output_token_seconds_sum": 0.02,
    }

    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        metric = next(m for m in by_metric if m in query)
        return 200, vector([({}, by_metric[metric])])

    server = await FakePrometheus(respond).start()
    source = PrometheusSource(server.client(), PrometheusSourceConfig(retry_initial=0.001))
    registry = SourceRegistry()
    registry.register("prometheus", source)
    collector = V2MetricsCollector(registry, mapper())
    await collector.start()
    try:
        assert source.cache.running
        got = await collector.collect_optimizer_metrics('a"b', NS, "va")
    finally:
        await collector.stop()
        await server.stop()
    assert not source.cache.running
    assert got == OptimizerMetrics(120.0, 300.0, 40.0, 0.25, 0.02)
    assert (
        f'sum(rate(vllm:request_success_total{{model_name="a\\"b",namespace="{NS}"}}[1m]))' in server.queries
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (5, "5s"),
        (600, "10m0s"),
        (3723.5, "1h2m3.5s"),
        (7200, "2h0m0s"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration_is_go_style(seconds: float, text: str) -> None:
    from wva.collector.v2.collector import format_duration

    assert format_duration(seconds) == text
