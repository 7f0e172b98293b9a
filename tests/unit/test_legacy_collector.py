"""PrometheusCollector (collector v1) against a fake PrometheusConnect: exact PromQL, parsing, caching."""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest

from fakes import FakeClock
from wva.collector import MetricsCollector
from wva.collector.legacy import (
    CacheConfig,
    FreshnessThresholds,
    MetricsCollectionError,
    NoOpCache,
    PrometheusCollector,
    QueryPolicy,
)
from wva.collector.types import (
    AvailabilityReason,
    FreshnessStatus,
    OptimizerMetrics,
    ReplicaMetrics,
    VariantRef,
)

T = TypeVar("T")
NOW = 1_700_000_000.0


Response = Any | Exception | Callable[[str], Any]


class FakeProm:
    """A PrometheusConnect stand-in: answers by the first rule whose fragment occurs in the query."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, Response]] = []
        self.queries: list[str] = []

    def on(self, fragment: str, response: Response) -> FakeProm:
        self.rules.insert(0, (fragment, response))  # later rules win
        return self

    def custom_query(self, query: str) -> Any:
        self.queries.append(query)
        for fragment, response in self.rules:
            if fragment in query:
                if isinstance(response, Exception):
                    raise response
                if callable(response):
                    return response(query)
                return copy.deepcopy(response)
        return []

    def count(self, fragment: str) -> int:
        return sum(fragment in q for q in self.queries)


def vec(*items: tuple[dict[str, str], float | str], ts: float = NOW) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [ts, str(value)]} for labels, value in items]


def one(value: float | str, ts: float = NOW) -> list[dict[str, Any]]:
    return vec(({}, value), ts=ts)


async def inline(fn: Callable[[], T]) -> T:
    return fn()


NO_RETRY = QueryPolicy(attempts=1)


def make(
    prom: FakeProm,
    config: CacheConfig | None = None,
    clock: FakeClock | None = None,
    resolver: Any = None,
    policy: QueryPolicy = NO_RETRY,
) -> PrometheusCollector:
    return PrometheusCollector(
        prom,
        config or CacheConfig(fetch_interval=0.0),
        resolver,
        clock or FakeClock(NOW),
        query_policy=policy,
        run_blocking=inline,
    )


OPT = {
    "ArrivalRate": 'sum(rate(vllm:request_success_total{model_name="m",namespace="ns"}[1m]))',
    "AvgInputTokens": 'sum(rate(vllm:request_prompt_tokens_sum{model_name="m",namespace="ns"}[1m]))'
    '/sum(rate(vllm:request_prompt_tokens_count{model_name="m",namespace="ns"}[1m]))',
    "AvgOutputTokens": 'sum(rate(vllm:request_generation_tokens_sum{model_name="m",namespace="ns"}[1m]))'
    '/sum(rate(vllm:request_generation_tokens_count{model_name="m",namespace="ns"}[1m]))',
    "TTFTAverageTime": 'sum(rate(vllm:time_to_first_token_seconds_sum{model_name="m",namespace="ns"}[1m]))'
    '/sum(rate(vllm:time_to_first_token_seconds_count{model_name="m",namespace="ns"}[1m]))',
    "ITLAverage": 'sum(rate(vllm:time_per_output_token_seconds_sum{model_name="m",namespace="ns"}[1m]))'
    '/sum(rate(vllm:time_per_output_token_seconds_count{model_name="m",namespace="ns"}[1m]))',
}


def optimizer_prom(arrival: float | str = 2.0) -> FakeProm:
    return (
        FakeProm()
        .on("request_success_total", one(arrival))
        .on("request_prompt_tokens", one(512))
        .on("request_generation_tokens", one(128))
        .on("time_to_first_token", one(0.25))
        .on("time_per_output_token", one(0.02))
    )


def test_satisfies_the_collector_protocol() -> None:
    assert isinstance(make(FakeProm()), MetricsCollector)


def test_constructor_needs_no_event_loop() -> None:
    collector = PrometheusCollector(FakeProm())
    assert collector.cache_config == CacheConfig()
    assert not collector.background_fetch_running


# --- optimizer metrics -------------------------------------------------------------------------


async def test_optimizer_metrics_exact_queries_and_units() -> None:
    prom = optimizer_prom(arrival=2.0)
    metrics = await make(prom).collect_optimizer_metrics("m", "ns", "va")
    assert sorted(prom.queries) == sorted(OPT.values())
    assert metrics == OptimizerMetrics(
        arrival_rate=120.0, avg_input_tokens=512.0, avg_output_tokens=128.0, ttft_seconds=0.25, itl_seconds=0.02
    )


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-Inf"])
async def test_optimizer_nan_and_inf_become_zero(bad: str) -> None:
    prom = optimizer_prom(arrival=bad).on("time_to_first_token", one(bad))
    metrics = await make(prom).collect_optimizer_metrics("m", "ns", "va")
    assert metrics.arrival_rate == 0.0 and metrics.ttft_seconds == 0.0
    assert metrics.avg_input_tokens == 512.0


async def test_optimizer_empty_and_non_vector_results_are_zero() -> None:
    prom = optimizer_prom().on("request_success_total", []).on("request_prompt_tokens", [NOW, "7"])
    metrics = await make(prom).collect_optimizer_metrics("m", "ns", "va")
    assert (metrics.arrival_rate, metrics.avg_input_tokens, metrics.avg_output_tokens) == (0.0, 0.0, 128.0)


async def test_optimizer_takes_the_first_sample() -> None:
    prom = optimizer_prom().on("request_success_total", vec(({"a": "1"}, 10), ({"a": "2"}, 20), ({"a": "3"}, 30)))
    metrics = await make(prom).collect_optimizer_metrics("m", "ns", "va")
    assert metrics.arrival_rate == 600.0


async def test_optimizer_error_names_the_first_failing_query_and_caches_nothing() -> None:
    prom = optimizer_prom().on("time_per_output_token", RuntimeError("boom")).on(
        "request_generation_tokens", ConnectionError("refused")
    )
    collector = make(prom)
    with pytest.raises(MetricsCollectionError) as info:
        await collector.collect_optimizer_metrics("m", "ns", "va")
    assert str(info.value) == "failed to query Prometheus for AvgOutputTokens: refused"
    assert collector.cache.size() == 0
    assert collector.tracker.vas() == []


async def test_optimizer_hostile_model_id_is_escaped() -> None:
    prom = optimizer_prom()
    hostile = 'x"} or vector(1) or {a="\\\n'
    await make(prom).collect_optimizer_metrics(hostile, 'n"s', "va")
    arrival = [q for q in prom.queries if "request_success_total" in q]
    assert arrival == [
        'sum(rate(vllm:request_success_total{model_name="x\\"} or vector(1) or {a=\\"\\\\\\n",'
        'namespace="n\\"s"}[1m]))'
    ]
    for query in prom.queries:
        assert "\n" not in query


async def test_optimizer_metrics_are_cached_per_va() -> None:
    prom = optimizer_prom()
    collector = make(prom)
    first = await collector.collect_optimizer_metrics("m", "ns", "va")
    prom.rules.clear()  # Prometheus now answers nothing
    second = await collector.collect_optimizer_metrics("m", "ns", "va")
    assert second == first and len(prom.queries) == 5
    assert collector.cache.get("m/ns/va/allocation-metrics") is not None
    await collector.collect_optimizer_metrics("m", "ns", "other-va")
    assert len(prom.queries) == 10


async def test_cache_lookups_count_hits_and_misses() -> None:
    prom = optimizer_prom()
    collector = make(prom)
    assert collector.cache_lookups() == (0, 0)
    await collector.collect_optimizer_metrics("m", "ns", "va")  # miss, then stored
    await collector.collect_optimizer_metrics("m", "ns", "va")  # hit
    hits, misses = collector.cache_lookups()
    assert hits == 1 and misses >= 1
    assert make(prom, CacheConfig(enabled=False)).cache_lookups() == (0, 0)


async def test_optimizer_cache_expires_after_ttl() -> None:
    clock = FakeClock(NOW)
    prom = optimizer_prom(arrival=1.0)
    collector = make(prom, CacheConfig(ttl=0.1, fetch_interval=0), clock)
    assert (await collector.collect_optimizer_metrics("m", "ns", "va")).arrival_rate == 60.0
    prom.on("request_success_total", one(100))
    clock.now += 0.05
    assert (await collector.collect_optimizer_metrics("m", "ns", "va")).arrival_rate == 60.0
    clock.now += 0.1
    assert (await collector.collect_optimizer_metrics("m", "ns", "va")).arrival_rate == 6000.0


async def test_disabled_cache_always_queries() -> None:
    prom = optimizer_prom()
    collector = make(prom, CacheConfig(enabled=False))
    assert isinstance(collector.cache, NoOpCache)
    await collector.collect_optimizer_metrics("m", "ns", "va")
    await collector.collect_optimizer_metrics("m", "ns", "va")
    assert len(prom.queries) == 10


async def test_transient_errors_are_retried_with_backoff_under_the_timeout() -> None:
    failures = iter([OSError("reset"), OSError("reset")])

    def flaky(query: str) -> Any:
        err = next(failures, None)
        if err is not None:
            raise err
        return one(3)

    prom = optimizer_prom().on("request_success_total", flaky)
    policy = QueryPolicy(initial_backoff=0.001, jitter=0.0)
    metrics = await make(prom, policy=policy).collect_optimizer_metrics("m", "ns", "va")
    assert metrics.arrival_rate == 180.0
    assert prom.count("request_success_total") == 3


@pytest.mark.looptime
async def test_retries_stop_after_five_attempts_with_upstream_backoff() -> None:
    loop = asyncio.get_running_loop()
    prom = optimizer_prom().on("request_success_total", OSError("down"))
    collector = make(prom, policy=QueryPolicy(jitter=0.0, timeout=60.0))
    start = loop.time()
    with pytest.raises(MetricsCollectionError, match="failed to query Prometheus for ArrivalRate: down"):
        await collector.collect_optimizer_metrics("m", "ns", "va")
    assert prom.count("request_success_total") == 5
    assert loop.time() - start == pytest.approx(0.5 + 1 + 2 + 4)


@pytest.mark.looptime
async def test_query_timeout_bounds_the_retries_and_reports_the_last_error() -> None:
    loop = asyncio.get_running_loop()
    prom = optimizer_prom().on("request_success_total", OSError("still down"))
    collector = make(prom, policy=QueryPolicy(jitter=0.0, timeout=2.0))
    start = loop.time()
    with pytest.raises(MetricsCollectionError, match="ArrivalRate: still down"):
        await collector.collect_optimizer_metrics("m", "ns", "va")
    assert loop.time() - start == pytest.approx(2.0)
    assert prom.count("request_success_total") == 3  # at 0, 0.5 and 1.5 s


@pytest.mark.looptime
async def test_a_hanging_query_times_out() -> None:
    async def hang(fn: Callable[[], T]) -> T:
        await asyncio.sleep(3600)
        return fn()

    collector = PrometheusCollector(
        optimizer_prom(), CacheConfig(fetch_interval=0), query_policy=QueryPolicy(timeout=10.0), run_blocking=hang
    )
    with pytest.raises(MetricsCollectionError, match="timed out after 10s"):
        await collector.collect_optimizer_metrics("m", "ns", "va")


# --- availability ------------------------------------------------------------------------------

AVAIL = 'vllm:num_requests_running{model_name="m",namespace="ns"}'
AVAIL_ANY = 'vllm:num_requests_running{model_name="m"}'


async def test_availability_found() -> None:
    prom = FakeProm().on(AVAIL, vec(({"pod": "p"}, 1), ts=NOW - 10))
    result = await make(prom).validate_metrics_availability("m", "ns")
    assert (result.available, result.reason, result.message) == (
        True, AvailabilityReason.METRICS_FOUND, "vLLM metrics are available and up-to-date"
    )
    assert prom.queries == [AVAIL]


async def test_availability_falls_back_to_any_namespace() -> None:
    prom = FakeProm().on(AVAIL, []).on(AVAIL_ANY, one(0))
    result = await make(prom).validate_metrics_availability("m", "ns")
    assert result.available and result.reason is AvailabilityReason.METRICS_FOUND
    assert prom.queries == [AVAIL, AVAIL_ANY]


async def test_availability_missing_when_both_empty() -> None:
    prom = FakeProm()
    result = await make(prom).validate_metrics_availability("m", "ns")
    assert not result.available and result.reason is AvailabilityReason.METRICS_MISSING
    assert result.message.startswith("No vLLM metrics found for model 'm' in namespace 'ns'. Check: (1)")
    assert "(4) Prometheus is scraping the monitoring namespace" in result.message


async def test_availability_non_vector_is_missing_without_fallback() -> None:
    prom = FakeProm().on(AVAIL, [NOW, "1"])
    result = await make(prom).validate_metrics_availability("m", "ns")
    assert result.reason is AvailabilityReason.METRICS_MISSING
    assert "Check ServiceMonitor configuration" in result.message
    assert prom.queries == [AVAIL]


@pytest.mark.parametrize("failing", [AVAIL, AVAIL_ANY])
async def test_availability_prometheus_error(failing: str) -> None:
    prom = FakeProm().on(AVAIL, []).on(failing, ConnectionError("connection refused"))
    result = await make(prom).validate_metrics_availability("m", "ns")
    assert (result.available, result.reason, result.message) == (
        False, AvailabilityReason.PROMETHEUS_ERROR, "Failed to query Prometheus: connection refused"
    )


async def test_availability_stale_when_any_sample_older_than_five_minutes() -> None:
    prom = FakeProm().on(AVAIL, vec(({"pod": "a"}, 1), ts=NOW - 10) + vec(({"pod": "b"}, 1), ts=NOW - 360))
    result = await make(prom).validate_metrics_availability("m", "ns")
    assert not result.available and result.reason is AvailabilityReason.METRICS_STALE
    assert result.message.startswith("vLLM metrics for model 'm' are stale (last update: 6m0s ago).")


async def test_availability_exactly_five_minutes_is_not_stale() -> None:
    prom = FakeProm().on(AVAIL, one(1, ts=NOW - 300))
    assert (await make(prom).validate_metrics_availability("m", "ns")).available


async def test_availability_escapes_both_queries() -> None:
    prom = FakeProm()
    await make(prom).validate_metrics_availability('a"b\\c', "n\ns")
    assert prom.queries == [
        'vllm:num_requests_running{model_name="a\\"b\\\\c",namespace="n\\ns"}',
        'vllm:num_requests_running{model_name="a\\"b\\\\c"}',
    ]


# --- replica metrics ---------------------------------------------------------------------------

KV = 'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{namespace="ns",model_name="m"}[1m]))'
QUEUE = 'max by (pod) (max_over_time(vllm:num_requests_waiting{namespace="ns",model_name="m"}[1m]))'

VARIANTS = [
    VariantRef("va-a100", "ns", "llama", accelerator_name="A100", cost=40.0),
    VariantRef("va-h100", "ns", "llama-h100", accelerator_name="H100", cost=80.0),
]


def replica_prom(pod_info: Response | None = None) -> FakeProm:
    prom = (
        FakeProm()
        .on("kv_cache_usage_perc", vec(({"pod": "llama-7d9f-abc"}, 0.5), ({"pod": "llama-h100-5c6d-xyz"}, 0.9)))
        .on("num_requests_waiting", vec(({"pod": "llama-7d9f-abc"}, 2.9), ({"pod": "llama-h100-5c6d-xyz"}, 7)))
    )
    prom.on("kube_pod_info", pod_info if pod_info is not None else vec(
        ({"pod": "llama-7d9f-abc"}, 1), ({"pod": "llama-h100-5c6d-xyz"}, 1)
    ))
    return prom


def strip(rows: Sequence[ReplicaMetrics]) -> list[tuple[str, str, float, int, str, float]]:
    return [(r.variant_name, r.pod_name, r.kv_cache_usage, r.queue_length, r.accelerator_name, r.cost) for r in rows]


async def test_replica_metrics_queries_and_assembly() -> None:
    prom = replica_prom()
    rows = await make(prom).collect_replica_metrics("m", "ns", VARIANTS)
    assert sorted(prom.queries[:2]) == sorted([KV, QUEUE])
    assert prom.queries[2] == 'kube_pod_info{namespace="ns",pod=~"llama-.*|llama-h100-.*"}'
    assert strip(rows) == [
        ("va-a100", "llama-7d9f-abc", 0.5, 2, "A100", 40.0),
        ("va-h100", "llama-h100-5c6d-xyz", 0.9, 7, "H100", 80.0),  # longest prefix wins over "llama"
    ]
    assert all(r.model_id == "m" and r.namespace == "ns" for r in rows)
    assert all(r.metadata is not None and r.metadata.freshness_status is FreshnessStatus.FRESH for r in rows)
    assert all(r.metadata is not None and r.metadata.collected_at == NOW and r.metadata.age == 0 for r in rows)


async def test_stale_pods_absent_from_kube_pod_info_are_dropped() -> None:
    prom = replica_prom(pod_info=vec(({"pod": "llama-7d9f-abc"}, 1), ({"pod": "unrelated-pod"}, 1)))
    rows = await make(prom).collect_replica_metrics("m", "ns", VARIANTS)
    assert [r.pod_name for r in rows] == ["llama-7d9f-abc"]


async def test_no_filtering_when_kube_pod_info_returns_nothing() -> None:
    prom = replica_prom(pod_info=[])
    rows = await make(prom).collect_replica_metrics("m", "ns", VARIANTS)
    assert len(rows) == 2


async def test_all_pods_kept_when_kube_pod_info_fails() -> None:
    prom = replica_prom(pod_info=RuntimeError("kube-state-metrics down"))
    rows = await make(prom).collect_replica_metrics("m", "ns", VARIANTS)
    assert len(rows) == 2


async def test_pod_info_query_escapes_regex_and_quotes() -> None:
    prom = replica_prom()
    variants = [VariantRef("v1", 'n"s', "my.app"), VariantRef("v2", 'n"s', "a+b")]
    await make(prom).collect_replica_metrics("m", 'n"s', variants)
    (pod_info,) = [q for q in prom.queries if q.startswith("kube_pod_info")]
    # regex: a\+b-.*|my\.app-.*  then backslashes doubled inside the PromQL string literal
    assert pod_info == 'kube_pod_info{namespace="n\\"s",pod=~"a\\\\+b-.*|my\\\\.app-.*"}'


async def test_pod_info_query_without_deployments_has_no_pod_filter() -> None:
    prom = replica_prom()
    rows = await make(prom).collect_replica_metrics("m", "ns", [])
    assert 'kube_pod_info{namespace="ns"}' in prom.queries
    assert rows == []  # no variant to attribute the pods to


async def test_pod_with_one_metric_gets_zero_for_the_other() -> None:
    prom = (
        FakeProm()
        .on("kv_cache_usage_perc", vec(({"pod": "llama-1-a"}, 0.4)))
        .on("num_requests_waiting", vec(({"pod_name": "llama-1-b"}, 3), ({}, 9)))
    )
    rows = await make(prom).collect_replica_metrics("m", "ns", VARIANTS)
    assert [(r.pod_name, r.kv_cache_usage, r.queue_length) for r in rows] == [
        ("llama-1-a", 0.4, 0), ("llama-1-b", 0.0, 3)
    ]


async def test_replica_nan_values_are_unknown_load_not_zero() -> None:
    # a NaN/Inf reading must not look like an idle pod (that would allow a scale-down): the pod is left
    # out, so it counts as not reporting; a healthy pod next to it is unaffected
    prom = FakeProm().on(
        "kv_cache_usage_perc", vec(({"pod": "llama-1-a"}, "NaN"), ({"pod": "llama-1-b"}, "0.5"))
    ).on("num_requests_waiting", vec(({"pod": "llama-1-a"}, "+Inf"), ({"pod": "llama-1-b"}, "2")))
    rows = await make(prom).collect_replica_metrics("m", "ns", VARIANTS)
    assert [(r.pod_name, r.kv_cache_usage, r.queue_length) for r in rows] == [("llama-1-b", 0.5, 2)]
    assert not any(math.isnan(r.kv_cache_usage) for r in rows)


class DictResolver:
    def __init__(self, mapping: dict[tuple[str, str], str]) -> None:
        self.mapping = mapping

    def get_va_for_pod(self, pod_name: str, namespace: str) -> str | None:
        return self.mapping.get((pod_name, namespace))


async def test_resolver_takes_precedence_and_foreign_vas_are_dropped() -> None:
    prom = (
        FakeProm()
        .on("kv_cache_usage_perc", vec(({"pod": "odd-name"}, 0.1), ({"pod": "llama-h100-1-a"}, 0.2),
                                       ({"pod": "llama-2-b"}, 0.3)))
        .on("num_requests_waiting", [])
    )
    resolver = DictResolver({("odd-name", "ns"): "va-h100", ("llama-h100-1-a", "ns"): "va-of-another-model"})
    rows = await make(prom, resolver=resolver).collect_replica_metrics("m", "ns", VARIANTS)
    # odd-name: resolved; llama-h100-1-a: its VA is not one of ours -> dropped; llama-2-b: prefix fallback
    assert [(r.variant_name, r.pod_name) for r in rows] == [("va-a100", "llama-2-b"), ("va-h100", "odd-name")]


@pytest.mark.parametrize(("failing", "message"), [
    ("kv_cache_usage_perc", "failed to query KV cache metrics: prometheus query failed: nope"),
    ("num_requests_waiting", "failed to query queue metrics: prometheus query failed: nope"),
])
async def test_replica_query_errors(failing: str, message: str) -> None:
    prom = replica_prom().on(failing, RuntimeError("nope"))
    collector = make(prom)
    with pytest.raises(MetricsCollectionError) as info:
        await collector.collect_replica_metrics("m", "ns", VARIANTS)
    assert str(info.value) == message
    assert collector.cache.size() == 0


async def test_kv_error_is_reported_before_queue_error() -> None:
    prom = replica_prom().on("kv_cache_usage_perc", RuntimeError("kv")).on("num_requests_waiting", RuntimeError("q"))
    with pytest.raises(MetricsCollectionError, match="KV cache metrics: prometheus query failed: kv"):
        await make(prom).collect_replica_metrics("m", "ns", VARIANTS)


@pytest.mark.looptime
async def test_saturation_queries_have_a_five_second_timeout() -> None:
    loop = asyncio.get_running_loop()

    async def slow_kv(fn: Callable[[], T]) -> T:
        result = fn()
        if "kv_cache_usage_perc" in prom.queries[-1]:
            await asyncio.sleep(60)
        return result

    prom = replica_prom()
    collector = PrometheusCollector(
        prom, CacheConfig(fetch_interval=0), query_policy=QueryPolicy(timeout=30.0), run_blocking=slow_kv
    )
    start = loop.time()
    with pytest.raises(MetricsCollectionError, match=r"KV cache metrics: prometheus query failed: .*timed out"):
        await collector.collect_replica_metrics("m", "ns", VARIANTS)
    assert loop.time() - start == pytest.approx(5.0)


async def test_replica_hostile_values_are_escaped() -> None:
    prom = replica_prom()
    await make(prom).collect_replica_metrics('m"}', "ns\t", VARIANTS)
    assert ('max by (pod) (max_over_time(vllm:kv_cache_usage_perc{namespace="ns\\t",model_name="m\\"}"}[1m]))'
            in prom.queries)


# --- replica cache, freshness, invalidation ----------------------------------------------------


async def test_replica_cache_hit_reports_age_and_freshness_without_mutating_the_cache() -> None:
    clock = FakeClock(NOW)
    config = CacheConfig(ttl=1000.0, fetch_interval=0, freshness=FreshnessThresholds(60, 120, 300))
    prom = replica_prom()
    collector = make(prom, config, clock)
    first = await collector.collect_replica_metrics("m", "ns", VARIANTS)
    calls = len(prom.queries)

    observed = []
    for age in (30.0, 90.0, 400.0):
        clock.now = NOW + age
        rows = await collector.collect_replica_metrics("m", "ns", VARIANTS)
        assert rows == first  # same numbers (metadata is not part of equality)
        (meta,) = {r.metadata for r in rows}
        assert meta is not None and meta.collected_at == NOW and meta.age == age
        observed.append(meta.freshness_status)
    assert observed == [FreshnessStatus.FRESH, FreshnessStatus.STALE, FreshnessStatus.UNAVAILABLE]
    assert len(prom.queries) == calls  # all served from the cache

    # the cached rows themselves never carry metadata, whatever callers got
    entry = collector.cache.get("m/ns/all/replica-metrics")
    assert entry is not None
    assert all(row.metadata is None for row in entry.data.rows)
    # and a caller's list is its own
    rows.clear()
    assert len(await collector.collect_replica_metrics("m", "ns", VARIANTS)) == 2


async def test_replica_cache_misses_when_the_variants_change() -> None:
    prom = replica_prom()
    collector = make(prom)
    await collector.collect_replica_metrics("m", "ns", VARIANTS)
    calls = len(prom.queries)
    await collector.collect_replica_metrics("m", "ns", list(reversed(VARIANTS)))  # order does not matter
    assert len(prom.queries) == calls
    rows = await collector.collect_replica_metrics("m", "ns", VARIANTS[:1])
    assert len(prom.queries) > calls
    assert [r.variant_name for r in rows] == ["va-a100", "va-a100"]  # both pods match "llama-"


async def test_invalidate_variant_drops_its_keys_and_the_model_replica_key() -> None:
    prom = optimizer_prom()
    collector = make(prom)
    for va in ("variant1", "variant2"):
        await collector.collect_optimizer_metrics("model1", "ns1", va)
    await collector.collect_replica_metrics("model1", "ns1", [])
    await collector.collect_optimizer_metrics("model2", "ns1", "variant1")
    collector.invalidate_variant("model1", "ns1", "variant1")
    cache = collector.cache
    assert cache.get("model1/ns1/variant1/allocation-metrics") is None
    assert cache.get("model1/ns1/all/replica-metrics") is None  # upstream kept this one (its bug)
    assert cache.get("model1/ns1/variant2/allocation-metrics") is not None
    assert cache.get("model2/ns1/variant1/allocation-metrics") is not None
    before = len(prom.queries)
    await collector.collect_optimizer_metrics("model1", "ns1", "variant1")
    assert len(prom.queries) == before + 5  # re-queried


async def test_invalidate_model_is_scoped_to_model_and_namespace() -> None:
    collector = make(optimizer_prom())
    for model, ns, va in [("model1", "ns1", "v1"), ("model1", "ns1", "v2"), ("model1", "ns2", "v1"),
                          ("model2", "ns1", "v1")]:
        await collector.collect_optimizer_metrics(model, ns, va)
    await collector.collect_replica_metrics("model1", "ns1", [])
    collector.invalidate_model("model1", "ns1")
    assert collector.cache.size() == 2
    assert collector.cache.get("model1/ns2/v1/allocation-metrics") is not None
    assert collector.cache.get("model2/ns1/v1/allocation-metrics") is not None


async def test_invalidation_of_a_model_id_with_slashes_is_unambiguous() -> None:
    collector = make(optimizer_prom())
    await collector.collect_optimizer_metrics("meta/llama", "prod", "va")  # model "meta/llama" in ns "prod"
    await collector.collect_optimizer_metrics("meta", "llama", "va")  # model "meta" in ns "llama"
    collector.invalidate_model("meta", "llama")
    assert collector.cache.size() == 1
    entries = [collector.cache.get(k) for k in ("meta%2Fllama/prod/va/allocation-metrics",)]
    assert entries[0] is not None


async def test_tracking_on_collect_keeps_last_fetch_on_cache_hits() -> None:
    collector = make(optimizer_prom())
    await collector.collect_optimizer_metrics("m", "ns", "va")
    (tracked,) = collector.tracker.vas()
    assert tracked.last_fetch is not None
    await collector.collect_optimizer_metrics("m", "ns", "va")  # cache hit
    assert collector.tracker.vas() == [tracked]
    collector.untrack_va("m", "ns", "va")
    collector.untrack_va("m", "ns", "va")  # absent: no error
    assert collector.tracker.vas() == []
