"""PrometheusSource against an HTTP stand-in for Prometheus: concurrency, caching, retries, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from test_v2_support import (
    FakePrometheus,
    client_for,
    closed_port_url,
    error_body,
    vector,
    wait_until,
)

from fakes import FakeClock
from wva.collector.v2 import (
    Cache,
    MetricValue,
    PrometheusSource,
    PrometheusSourceConfig,
    QueryOutcome,
    QueryTemplate,
    QueryType,
    RefreshSpec,
    build_cache_key,
    is_transient_error,
)

FAST_RETRY: dict[str, Any] = {"retry_initial": 0.001, "retry_factor": 1.0}


def template(name: str, text: str, params: tuple[str, ...] = ()) -> QueryTemplate:
    return QueryTemplate(name=name, type=QueryType.PROMQL, template=text, params=params)


def source_for(prom: Any, *, queries: dict[str, str] | None = None, **config: Any) -> PrometheusSource:
    src = PrometheusSource(prom, PrometheusSourceConfig(**{**FAST_RETRY, **config}))
    for name, text in (queries or {}).items():
        params = tuple(p for p in ("namespace", "modelID") if "{{." + p in text)
        src.query_list().register(template(name, text, params))
    return src


@pytest_asyncio.fixture()
async def fake_prom() -> AsyncIterator[FakePrometheus]:
    server = FakePrometheus()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_refresh_runs_every_registered_query_and_caches_results(fake_prom: FakePrometheus) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        return 200, vector([({"pod": "test-pod-1", "namespace": "ns"}, 0.75), ({"pod": "test-pod-2"}, "NaN")])

    fake_prom.respond = respond
    events: list[tuple[str, QueryOutcome]] = []
    src = PrometheusSource(
        fake_prom.client(),
        PrometheusSourceConfig(**FAST_RETRY),
        on_query=lambda n, o, d: events.append((n, o)),
    )
    src.query_list().register(template("a", "up"))
    src.query_list().register(template("b", "vllm:x"))

    results = await src.refresh(RefreshSpec())

    assert sorted(results) == ["a", "b"] and sorted(fake_prom.queries) == ["up", "vllm:x"]
    for name in ("a", "b"):
        r = results[name]
        assert r.error is None and r.query_name == name
        assert r.values == [
            MetricValue(0.75, 1700000000.0, {"pod": "test-pod-1", "namespace": "ns"}),
            MetricValue(0.0, 1700000000.0, {"pod": "test-pod-2"}),
        ]
        cached = src.get(name, {})
        assert cached is not None and cached.result == r
    assert sorted(events) == [("a", QueryOutcome.SUCCESS), ("b", QueryOutcome.SUCCESS)]
    assert src.stats.queries[QueryOutcome.SUCCESS] == 2 and src.stats.queries_total == 2


async def test_get_answers_from_cache_only_and_params_are_cached_separately(
    fake_prom: FakePrometheus,
) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        return 200, vector([({"pod": "p"}, 1.0 if 'namespace="ns-1"' in query else 2.0)])

    fake_prom.respond = respond
    src = source_for(fake_prom.client(), queries={"q": 'up{namespace="{{.namespace}}"}'})
    await src.refresh(RefreshSpec(["q"], {"namespace": "ns-1"}))
    await src.refresh(RefreshSpec(["q"], {"namespace": "ns-2"}))
    assert len(fake_prom.queries) == 2

    for _ in range(5):
        one, two = src.get("q", {"namespace": "ns-1"}), src.get("q", {"namespace": "ns-2"})
        assert one is not None and one.result.first_value().value == 1.0
        assert two is not None and two.result.first_value().value == 2.0
    assert src.get("q", {"namespace": "ns-3"}) is None
    assert len(fake_prom.queries) == 2  # get never queries
    assert (src.stats.cache_hits, src.stats.cache_misses) == (10, 1)


async def test_values_are_escaped_on_the_wire_and_cached_under_raw_params(fake_prom: FakePrometheus) -> None:
    src = source_for(fake_prom.client(), queries={"q": 'up{model_name="{{.modelID}}"}'})
    hostile = 'a"b\\c\nd'
    await src.refresh(RefreshSpec(["q"], {"modelID": hostile}))
    assert fake_prom.queries == ['up{model_name="a\\"b\\\\c\\nd"}']
    assert src.get("q", {"modelID": hostile}) is not None
    assert src.cache.get(build_cache_key("q", {"modelID": hostile})) is not None


async def test_refresh_concurrency_reaches_exactly_the_limit_and_get_stays_responsive(
    fake_prom: FakePrometheus,
) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        if query.startswith("gated"):
            await fake_prom.release.wait()
        return 200, vector([({"pod": query}, 1.0)])

    fake_prom.respond = respond
    queries = {f"q{i:02d}": f"gated_{i}" for i in range(20)} | {"other": "ungated"}
    src = source_for(fake_prom.client(), queries=queries, max_concurrency=4, query_timeout=30.0)
    await src.refresh(RefreshSpec(["other"]))

    refresh = asyncio.create_task(src.refresh(RefreshSpec([f"q{i:02d}" for i in range(20)])))
    await wait_until(lambda: fake_prom.in_flight == 4)
    # The refresh is blocked in the network; the cache still answers at once.
    cached = src.get("other", {})
    assert cached is not None and cached.result.first_value().labels == {"pod": "ungated"}
    assert not refresh.done() and fake_prom.in_flight == 4

    fake_prom.release.set()
    results = await refresh
    assert fake_prom.max_in_flight == 4
    assert len(results) == 20 and all(r.error is None for r in results.values())
    assert len(fake_prom.queries) == 21


async def test_each_failure_stays_in_its_own_result(fake_prom: FakePrometheus) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        if query == "slow":
            await fake_prom.release.wait()
        return 200, vector([({"pod": "p"}, 5.0)])

    fake_prom.respond = respond
    up, down = fake_prom.client(), client_for(closed_port_url())

    class Routing:
        """Sends queries about "down" to a closed port, the rest to the stand-in."""

        def custom_query(self, query: str, params: Any = None, timeout: float | None = None) -> Any:
            client = down if "down" in query else up
            return client.custom_query(query, params, timeout=timeout)

    src = source_for(
        Routing(),
        queries={
            "ok": 'ok{namespace="{{.namespace}}"}',
            "needs_model": 'm{model_name="{{.modelID}}"}',
            "down": "down",
            "slow": "slow",
        },
        query_timeout=3.0,  # generous: "slow" never answers, "ok" must not time out on a busy machine
        retry_max_attempts=2,
    )
    results = await src.refresh(
        RefreshSpec(["ok", "unknown", "needs_model", "down", "slow"], {"namespace": "n"})
    )

    assert results["ok"].error is None and results["ok"].first_value().value == 5.0
    assert results["unknown"].error == "failed to build query: query 'unknown' not found"
    assert results["needs_model"].error == (
        "failed to build query: missing required parameter 'modelID' for query 'needs_model'"
    )
    down_error = results["down"].error
    assert down_error is not None and down_error.startswith("query execution failed: ")
    assert "Connection" in down_error or "refused" in down_error
    slow_error = results["slow"].error
    assert slow_error is not None and slow_error.startswith("query execution failed: timed out after 3s")
    # Every result, errors included, is cached.
    for name in ("ok", "unknown", "needs_model", "down", "slow"):
        cached = src.get(name, {"namespace": "n"})
        assert cached is not None and cached.result == results[name]
    stats = src.stats.queries
    assert (stats[QueryOutcome.SUCCESS], stats[QueryOutcome.INVALID]) == (1, 2)
    assert (stats[QueryOutcome.ERROR], stats[QueryOutcome.TIMEOUT]) == (1, 1)


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (500, 3), (429, 3), (400, 1), (422, 1)])
async def test_retries_only_transient_http_errors(
    fake_prom: FakePrometheus, status: int, attempts: int
) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        return status, error_body(f"status {status}")

    fake_prom.respond = respond
    src = source_for(fake_prom.client(), queries={"q": "up"}, retry_max_attempts=3)
    result = (await src.refresh(RefreshSpec(["q"])))["q"]
    assert len(fake_prom.queries) == attempts
    assert result.error == f"query execution failed: HTTP Status Code {status}: bad_data: status {status}"
    assert src.stats.retries == attempts - 1


async def test_transient_error_then_success(fake_prom: FakePrometheus) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        if len(fake_prom.queries) <= 2:
            return 503, error_body("overloaded", "unavailable")
        return 200, vector([({"pod": "p"}, 3.0)])

    fake_prom.respond = respond
    src = source_for(fake_prom.client(), queries={"q": "up"})
    result = (await src.refresh(RefreshSpec(["q"])))["q"]
    assert result.error is None and result.first_value().value == 3.0
    assert len(fake_prom.queries) == 3 and src.stats.retries == 2


async def test_connection_errors_are_retried_until_attempts_run_out() -> None:
    calls: list[str] = []
    real = client_for(closed_port_url())

    class Counting:
        def custom_query(self, query: str, params: Any = None, timeout: float | None = None) -> Any:
            calls.append(query)
            return real.custom_query(query, params, timeout=timeout)

    src = source_for(Counting(), queries={"q": "up"}, retry_max_attempts=4)
    result = (await src.refresh(RefreshSpec(["q"])))["q"]
    assert len(calls) == 4 and result.error is not None
    assert result.error.startswith("query execution failed: ")


async def test_backoff_that_would_pass_the_deadline_gives_up_with_the_last_error(
    fake_prom: FakePrometheus,
) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        return 502, error_body("bad gateway")

    fake_prom.respond = respond
    src = PrometheusSource(
        fake_prom.client(),
        PrometheusSourceConfig(query_timeout=5.0, retry_initial=60.0, retry_max_attempts=5),
    )
    src.query_list().register(template("q", "up"))
    result = (await src.refresh(RefreshSpec(["q"])))["q"]
    assert len(fake_prom.queries) == 1  # a 60 s sleep cannot fit in 5 s: no pointless waiting
    assert result.error is not None and "HTTP Status Code 502" in result.error


async def test_scalar_and_matrix_results_over_http(fake_prom: FakePrometheus) -> None:
    async def respond(query: str) -> tuple[int, dict[str, Any]]:
        if query == "scalar(1)":
            data = {"resultType": "scalar", "result": [1700000000.0, "42"]}
        elif query == "string":
            data = {"resultType": "string", "result": [1700000000.0, "hello"]}
        else:
            data = {
                "resultType": "matrix",
                "result": [{"metric": {"pod": "a"}, "values": [[1, "1"], [2, "7"]]}],
            }
        return 200, {"status": "success", "data": data}

    fake_prom.respond = respond
    src = source_for(fake_prom.client(), queries={"s": "scalar(1)", "str": "string", "m": "up[1m]"})
    results = await src.refresh(RefreshSpec())
    assert results["s"].values == [MetricValue(42.0, 1700000000.0, {})]
    assert results["str"].values == [] and results["str"].error is None
    assert results["m"].values == [MetricValue(7.0, 2.0, {"pod": "a"})]


async def test_refresh_edge_cases(fake_prom: FakePrometheus) -> None:
    src = source_for(fake_prom.client())
    assert await src.refresh(RefreshSpec()) == {}
    src.query_list().register(template("q", "up"))
    results = await src.refresh(RefreshSpec(["q", "q", "q"]))
    assert list(results) == ["q"] and len(fake_prom.queries) == 1


async def test_cache_ttl_governs_get(fake_prom: FakePrometheus) -> None:
    clock = FakeClock(0.0)
    src = PrometheusSource(fake_prom.client(), cache=Cache(default_ttl=30.0, clock=clock))
    src.query_list().register(template("q", "up"))
    await src.refresh(RefreshSpec(["q"]))
    clock.now = 30.0
    assert src.get("q") is not None
    clock.now = 30.5
    assert src.get("q") is None


async def test_a_failing_hook_does_not_break_refresh(fake_prom: FakePrometheus) -> None:
    def hook(name: str, outcome: QueryOutcome, duration: float) -> None:
        raise RuntimeError("hook bug")

    src = PrometheusSource(fake_prom.client(), on_query=hook)
    src.query_list().register(template("q", "up"))
    assert (await src.refresh(RefreshSpec(["q"])))["q"].error is None


async def test_start_stop_and_use_after_stop(fake_prom: FakePrometheus) -> None:
    src = source_for(fake_prom.client(), queries={"q": "up"})
    await src.start()
    assert src.cache.running
    assert (await src.refresh(RefreshSpec(["q"])))["q"].error is None
    await src.stop()
    assert not src.cache.running
    await src.stop()
    assert (await src.refresh(RefreshSpec(["q"])))["q"].error is None  # the pool is rebuilt on demand


async def test_a_client_without_timeout_keyword_is_supported(fake_prom: FakePrometheus) -> None:
    real = fake_prom.client()

    class Minimal:
        def custom_query(self, query: str) -> Any:
            return real.custom_query(query)

    src = source_for(Minimal(), queries={"q": "up"})
    assert (await src.refresh(RefreshSpec(["q"])))["q"].first_value().value == 1.0


def test_transient_error_classification() -> None:
    assert is_transient_error(requests.exceptions.ConnectionError("refused"))
    assert is_transient_error(requests.exceptions.ReadTimeout("slow"))
    assert is_transient_error(TimeoutError())
    assert is_transient_error(PrometheusApiClientException("HTTP Status Code 503 (b'')"))
    assert is_transient_error(PrometheusApiClientException("HTTP Status Code 429 (b'')"))
    assert not is_transient_error(PrometheusApiClientException("HTTP Status Code 400 (b'bad')"))
    assert not is_transient_error(ValueError("bad json"))


def test_config_validation() -> None:
    for bad in ({"query_timeout": 0}, {"max_concurrency": 0}, {"retry_max_attempts": 0}, {"default_ttl": -1}):
        with pytest.raises(ValueError):
            PrometheusSourceConfig(**bad)
    cfg = PrometheusSourceConfig()
    assert (
        cfg.default_ttl,
        cfg.query_timeout,
        cfg.retry_initial,
        cfg.retry_factor,
        cfg.retry_max_attempts,
    ) == (
        30.0,
        10.0,
        0.5,
        2.0,
        5,
    )


def test_constructor_needs_no_event_loop() -> None:
    src = PrometheusSource(PrometheusConnect(url="http://127.0.0.1:9", disable_ssl=True))
    assert src.query_list().names() == [] and src.get("q") is None
    assert src.stats.queries_total == 0 and src.stats.cache_misses == 1


async def test_debug_log_lines_are_stable(
    fake_prom: FakePrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    src = source_for(fake_prom.client(), queries={"q": "up"})
    with caplog.at_level(logging.DEBUG, logger="wva.collector.v2.prometheus"):
        await src.refresh(RefreshSpec(["q"]))
        src.get("q")
        src.get("absent")
    messages = [r.getMessage() for r in caplog.records]
    for prefix in (
        "Refreshing queries:",
        "Query result cached: key=q",
        "Cache hit: key=q",
        "Cache miss: key=absent",
    ):
        assert any(m.startswith(prefix) for m in messages), (prefix, messages)
