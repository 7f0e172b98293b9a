"""EPP flow-control queue sources: query building and escaping, Prometheus answers, exposition text, tri-state."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from wva.collector import promql
from wva.collector.v2 import (
    LifecycleSource,
    MetricResult,
    MetricsSource,
    MetricValue,
    QueryList,
    RefreshSpec,
    SourceRegistry,
)
from wva.collector.v2.epp import (
    EPP_QUEUE_SIZE,
    EPP_SOURCE_NAME,
    Q_EPP_QUEUE_SIZE,
    Q_EPP_QUEUE_SIZE_ALL,
    EppMetricResult,
    EppQueryConfig,
    EppScrapeOutcome,
    EppScrapingConfig,
    EppScrapingSource,
    EppTarget,
    PrometheusEppSource,
    QueueReading,
    QueueState,
    epp_query_templates,
    epp_samples,
    queue_readings,
    register_epp_queries,
)
from wva.sim.epp import EppEmulator

NS, MODEL = "team-a", "acme/llama-8b"
HOSTILE = [
    'x"} or vector(1) or up{a="',
    "m\\\"}) or on() vector(42) #",
    "{{.namespace}}",
    "a\nb\rc\td",
    "}{)(][,=~!\"'`",
]


def skeleton(query: str) -> str:
    """The query with every double-quoted string literal (backslash escapes honoured) replaced by ""."""
    out, i = [], 0
    while i < len(query):
        c = query[i]
        if c == '"':
            j = i + 1
            while j < len(query) and query[j] != '"':
                j += 2 if query[j] == "\\" else 1
            assert j < len(query), f"unterminated string literal in {query!r}"
            out.append('""')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def literals(query: str) -> list[str]:
    """The decoded string literals of a PromQL query, in order."""
    found = re.findall(r'"((?:[^"\\]|\\.)*)"', query)
    escapes = {"\\\\": "\\", '\\"': '"', "\\n": "\n", "\\r": "\r", "\\t": "\t"}
    return [re.sub(r"\\.", lambda m: escapes[m.group(0)], s) for s in found]


# --- query building -----------------------------------------------------------------------------


def test_templates_with_the_confirmed_names_and_labels() -> None:
    per_model, batched = epp_query_templates()
    queries = QueryList([per_model, batched])
    assert queries.build(Q_EPP_QUEUE_SIZE, {"namespace": NS, "modelID": MODEL}) == (
        'sum(inference_extension_flow_control_queue_size{target_model_name="acme/llama-8b",namespace="team-a"})'
    )
    assert queries.build(Q_EPP_QUEUE_SIZE_ALL) == (
        "sum by (target_model_name, namespace) (inference_extension_flow_control_queue_size)"
    )
    assert batched.params == () and "{{" not in batched.template  # no value ever enters the batched query


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_model_name_stays_inside_its_string_literal(hostile: str) -> None:
    queries = QueryList(epp_query_templates())
    query = queries.build(Q_EPP_QUEUE_SIZE, {"namespace": "ns{{.modelID}}", "modelID": hostile})
    assert skeleton(query) == 'sum(inference_extension_flow_control_queue_size{target_model_name="",namespace=""})'
    assert literals(query) == [hostile, "ns{{.modelID}}"]  # neither value filled the other's placeholder
    assert "\n" not in query and "\r" not in query


def test_custom_labels_and_no_namespace_label() -> None:
    config = EppQueryConfig(metric="llm_d_epp_flow_control_queue_size", model_label="model_name", namespace_label="")
    per_model, batched = epp_query_templates(config)
    assert per_model.params == ("modelID",)
    assert QueryList([per_model]).build(Q_EPP_QUEUE_SIZE, {"modelID": "m"}) == (
        'sum(llm_d_epp_flow_control_queue_size{model_name="m"})'
    )
    assert batched.template == "sum by (model_name) (llm_d_epp_flow_control_queue_size)"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metric": 'up{a="b"} or vector(1)'},
        {"metric": ""},
        {"model_label": 'x="y"'},
        {"model_label": "__name__"},
        {"namespace_label": "ns) or (x"},
        {"model_label": "namespace"},  # the same as the namespace label
    ],
)
def test_names_that_could_inject_are_rejected(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        EppQueryConfig(**kwargs)


def test_registration_is_idempotent_and_refuses_a_different_template() -> None:
    queries = QueryList()
    register_epp_queries(queries)
    register_epp_queries(queries)
    assert queries.names() == [Q_EPP_QUEUE_SIZE, Q_EPP_QUEUE_SIZE_ALL]
    with pytest.raises(ValueError, match="different template"):
        register_epp_queries(queries, EppQueryConfig(model_label="model_name"))


def test_both_sources_are_registrable_metrics_sources() -> None:
    prom_source = PrometheusEppSource(FakeProm([]))
    scraping = EppScrapingSource([EppTarget("http://127.0.0.1:1/metrics")])
    for source in (prom_source, scraping):
        assert isinstance(source, MetricsSource) and isinstance(source, LifecycleSource)
        assert source.query_list().names() == [Q_EPP_QUEUE_SIZE, Q_EPP_QUEUE_SIZE_ALL]
    registry = SourceRegistry()
    registry.register(EPP_SOURCE_NAME, prom_source)
    assert registry.get("epp") is prom_source


# --- tri-state from a result ---------------------------------------------------------------------


def series(model: str | None, value: float, namespace: str | None = NS) -> MetricValue:
    labels = {}
    if model is not None:
        labels["target_model_name"] = model
    if namespace is not None:
        labels["namespace"] = namespace
    return MetricValue(value, 1.0, labels)


def test_value_confirmed_zero_and_unknown() -> None:
    result = MetricResult(Q_EPP_QUEUE_SIZE_ALL, [series("busy", 3), series("idle", 0), series("elsewhere", 5, "b")])
    readings = queue_readings(result, [(NS, "busy"), (NS, "idle"), (NS, "never-seen"), (NS, "elsewhere")])
    assert readings[(NS, "busy")] == QueueReading(NS, "busy", 3.0)
    assert readings[(NS, "busy")].state is QueueState.PENDING and readings[(NS, "busy")].pending
    assert readings[(NS, "idle")].state is QueueState.EMPTY and not readings[(NS, "idle")].pending
    assert readings[(NS, "never-seen")].state is QueueState.UNKNOWN
    assert "no inference_extension_flow_control_queue_size series" in readings[(NS, "never-seen")].reason
    assert readings[(NS, "elsewhere")].state is QueueState.UNKNOWN  # another namespace's queue is not ours


def test_series_without_namespace_match_every_namespace_and_add_up() -> None:
    result = MetricResult(Q_EPP_QUEUE_SIZE_ALL, [series("m", 2, None), series("m", 1), series("m", 4, "other")])
    readings = queue_readings(result, [(NS, "m"), ("third", "m")])
    assert readings[(NS, "m")].value == 3.0
    assert readings[("third", "m")].value == 2.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0])
def test_nan_infinite_and_negative_are_unknown_never_zero(value: float) -> None:
    readings = queue_readings(MetricResult(Q_EPP_QUEUE_SIZE_ALL, [series("m", value)]), [(NS, "m")])
    assert readings[(NS, "m")].state is QueueState.UNKNOWN and readings[(NS, "m")].value is None


def test_a_positive_series_wins_over_a_broken_one_and_huge_values_are_values() -> None:
    result = MetricResult(Q_EPP_QUEUE_SIZE_ALL, [series("m", math.nan, None), series("m", 2), series("big", 1e300)])
    readings = queue_readings(result, [(NS, "m"), (NS, "big")])
    assert readings[(NS, "m")].value == 2.0
    assert readings[(NS, "big")].value == 1e300


def test_an_error_or_a_partial_read_never_confirms_zero() -> None:
    failed = MetricResult(Q_EPP_QUEUE_SIZE_ALL, [], error="HTTP Status Code 503")
    assert queue_readings(failed, [(NS, "m")])[(NS, "m")].reason == "read failed: HTTP Status Code 503"
    partial = EppMetricResult(
        Q_EPP_QUEUE_SIZE_ALL, [series("zero", 0), series("busy", 1)], target_errors={"http://epp-2/metrics": "HTTP 500"}
    )
    readings = queue_readings(partial, [(NS, "zero"), (NS, "busy")])
    assert readings[(NS, "zero")].state is QueueState.UNKNOWN
    assert "1 EPP endpoint(s) failed" in readings[(NS, "zero")].reason
    assert readings[(NS, "busy")].value == 1.0  # a queued request is real even if another EPP did not answer


def test_series_without_a_model_label_are_ignored() -> None:
    result = MetricResult(Q_EPP_QUEUE_SIZE_ALL, [series(None, 9), series("", 9)])
    assert queue_readings(result, [(NS, "")])[(NS, "")].state is QueueState.UNKNOWN


# --- Prometheus ------------------------------------------------------------------------------------


class FakeProm:
    """Answers every query with ``answer`` (or raises it); records the queries."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.queries: list[str] = []

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any:
        self.queries.append(query)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def vector(*items: tuple[dict[str, str], str]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [1700000000.0, value]} for labels, value in items]


async def test_prometheus_one_batched_query_for_every_model() -> None:
    prom = FakeProm(
        vector(
            ({"target_model_name": "a", "namespace": NS}, "3"),
            ({"target_model_name": "b", "namespace": NS}, "0"),
            ({"target_model_name": "c", "namespace": NS}, "NaN"),
            ({"target_model_name": "d", "namespace": NS}, "-2"),
            ({"target_model_name": "e", "namespace": NS}, "+Inf"),
        )
    )
    source = PrometheusEppSource(prom)
    models = [(NS, m) for m in "abcdef"]
    readings = await source.read_queues(models)
    assert prom.queries == ["sum by (target_model_name, namespace) (inference_extension_flow_control_queue_size)"]
    assert {m: readings[(NS, m)].state for m in "abcdef"} == {
        "a": QueueState.PENDING,
        "b": QueueState.EMPTY,
        "c": QueueState.UNKNOWN,
        "d": QueueState.UNKNOWN,
        "e": QueueState.UNKNOWN,
        "f": QueueState.UNKNOWN,
    }
    cached = source.get(Q_EPP_QUEUE_SIZE_ALL)
    assert cached is not None and len(cached.result.values) == 5


async def test_prometheus_no_models_no_query() -> None:
    prom = FakeProm(vector())
    assert await PrometheusEppSource(prom).read_queues([]) == {}
    assert prom.queries == []


@pytest.mark.parametrize(
    "answer",
    [
        {"unexpected": "object"},
        "a string result",
        [1, 2, 3],
        [[1700000000.0, "5"]],  # a scalar shape inside a list
        [{"metric": "not a dict", "value": [1, "1"]}],
        [{"metric": {"target_model_name": "m", "namespace": NS}, "value": [1, "abc"]}],
        [{"metric": {"target_model_name": "m", "namespace": NS}, "value": None}],
        [{"metric": {"target_model_name": "m", "namespace": NS}}],
        [None, {}, []],
        [1700000000.0, "7"],  # a bare scalar: no labels, so no model
    ],
)
async def test_prometheus_malformed_answers_are_unknown_not_a_crash(answer: Any) -> None:
    readings = await PrometheusEppSource(FakeProm(answer)).read_queues([(NS, "m")])
    assert readings[(NS, "m")].state is QueueState.UNKNOWN


async def test_prometheus_a_huge_answer_is_split_correctly() -> None:
    items = [({"target_model_name": f"m{i}", "namespace": NS, "fairness_id": "f"}, str(i % 2)) for i in range(20000)]
    readings = await PrometheusEppSource(FakeProm(vector(*items))).read_queues([(NS, "m1"), (NS, "m2"), (NS, "m-x")])
    assert [readings[(NS, m)].state for m in ("m1", "m2", "m-x")] == [
        QueueState.PENDING, QueueState.EMPTY, QueueState.UNKNOWN
    ]


async def test_prometheus_failure_makes_every_model_unknown() -> None:
    error = ValueError('HTTP Status Code 400 (b\'{"status":"error","errorType":"bad_data","error":"parse error"}\')')
    readings = await PrometheusEppSource(FakeProm(error)).read_queues([(NS, "a"), (NS, "b")])
    assert all(r.state is QueueState.UNKNOWN and "bad_data" in r.reason for r in readings.values())


async def test_prometheus_per_model_query_is_escaped_on_the_wire() -> None:
    prom = FakeProm(vector(({}, "4")))
    source = PrometheusEppSource(prom)
    results = await source.refresh(RefreshSpec([Q_EPP_QUEUE_SIZE], {"namespace": NS, "modelID": HOSTILE[0]}))
    assert results[Q_EPP_QUEUE_SIZE].first_value().value == 4.0
    assert skeleton(prom.queries[0]) == (
        'sum(inference_extension_flow_control_queue_size{target_model_name="",namespace=""})'
    )


# --- exposition text -------------------------------------------------------------------------------

EPP_TEXT = """\
# HELP inference_objective_request_total Counter of inference objective requests.
# TYPE inference_objective_request_total counter
inference_objective_request_total{model_name="a",target_model_name="a",priority="0"} 12
# HELP inference_extension_flow_control_queue_size Current number of requests actively held in the queue.
# TYPE inference_extension_flow_control_queue_size gauge
inference_extension_flow_control_queue_size{fairness_id="f1",priority="0",model_name="a",target_model_name="a"} 2
inference_extension_flow_control_queue_size{fairness_id="f2",priority="1",model_name="alias",target_model_name="a"} 1
inference_extension_flow_control_queue_size{fairness_id="f1",priority="0",model_name="b",target_model_name="b"} 0
inference_extension_flow_control_queue_size_extra{target_model_name="a"} 99
# TYPE inference_extension_flow_control_request_queue_duration_seconds histogram
inference_extension_flow_control_request_queue_duration_seconds_bucket{le="+Inf"} 3
inference_extension_flow_control_request_queue_duration_seconds_sum 0.5
inference_extension_flow_control_request_queue_duration_seconds_count 3
"""


def test_exposition_keeps_only_the_queue_series() -> None:
    samples = epp_samples(EPP_TEXT, EPP_QUEUE_SIZE)
    assert [(s.labels["target_model_name"], s.value) for s in samples] == [("a", 2.0), ("a", 1.0), ("b", 0.0)]
    assert epp_samples("<html>nothing here</html>\n", EPP_QUEUE_SIZE) == []
    assert epp_samples("", EPP_QUEUE_SIZE) == []


@pytest.mark.parametrize(
    "text",
    [
        'inference_extension_flow_control_queue_size{target_model_name="a" 3\n',
        "inference_extension_flow_control_queue_size{target_model_name=\"a\"} not-a-number\n",
        'inference_extension_flow_control_queue_size{<html>} 1\n',
    ],
)
def test_malformed_queue_lines_are_a_parse_error(text: str) -> None:
    with pytest.raises(ValueError):
        epp_samples(text, EPP_QUEUE_SIZE)


# --- direct scraping -------------------------------------------------------------------------------


@pytest_asyncio.fixture()
async def epp() -> AsyncIterator[EppEmulator]:
    emulator = EppEmulator(pool="pool-a")
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_scraping_sums_series_per_model_in_the_targets_namespace(epp: EppEmulator) -> None:
    epp.set_queue("a", 2, fairness_id="f1")
    epp.set_queue("a", 1, fairness_id="f2", model_name="alias")
    epp.set_queue("b", 0)
    source = EppScrapingSource([EppTarget(epp.metrics_url, NS)])
    try:
        readings = await source.read_queues([(NS, "a"), (NS, "b"), (NS, "c"), ("other", "a")])
        assert readings[(NS, "a")].value == 3.0
        assert readings[(NS, "b")].state is QueueState.EMPTY
        assert readings[(NS, "c")].state is QueueState.UNKNOWN
        assert readings[("other", "a")].state is QueueState.UNKNOWN  # that EPP serves team-a only
        # the same answer shapes as Prometheus
        spec = RefreshSpec([Q_EPP_QUEUE_SIZE_ALL, Q_EPP_QUEUE_SIZE], {"namespace": NS, "modelID": "a"})
        results = await source.refresh(spec)
        assert [(dict(v.labels), v.value) for v in results[Q_EPP_QUEUE_SIZE_ALL].values] == [
            ({"target_model_name": "a", "namespace": NS}, 3.0),
            ({"target_model_name": "b", "namespace": NS}, 0.0),
        ]
        assert results[Q_EPP_QUEUE_SIZE].first_value().value == 3.0
        assert source.get(Q_EPP_QUEUE_SIZE, {"namespace": NS, "modelID": "a"}) is not None
        missing = await source.refresh(RefreshSpec([Q_EPP_QUEUE_SIZE], {"modelID": "a"}))
        assert "missing required parameter 'namespace'" in (missing[Q_EPP_QUEUE_SIZE].error or "")
        unsupported = await source.refresh(RefreshSpec(["kv_cache_usage"]))
        assert unsupported["kv_cache_usage"].has_error
    finally:
        await source.stop()


async def test_an_unscoped_target_matches_every_namespace(epp: EppEmulator) -> None:
    epp.set_queue("a", 5)
    source = EppScrapingSource([EppTarget(epp.metrics_url)])
    try:
        readings = await source.read_queues([(NS, "a"), ("other", "a")])
        assert readings[(NS, "a")].value == readings[("other", "a")].value == 5.0
    finally:
        await source.stop()


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ("error", EppScrapeOutcome.HTTP_ERROR),
        ("garbage", EppScrapeOutcome.PARSE_ERROR),
        ("huge", EppScrapeOutcome.TOO_LARGE),
    ],
)
async def test_a_failed_scrape_is_unknown_and_counted(epp: EppEmulator, fault: str, outcome: EppScrapeOutcome) -> None:
    epp.set_queue("a", 0)
    epp.fault = fault
    seen: list[EppScrapeOutcome] = []
    # a small body limit and a generous timeout: the outcome must not depend on how loaded the machine is
    config = EppScrapingConfig(scrape_timeout=10.0, max_body_bytes=64 * 1024)
    source = EppScrapingSource([EppTarget(epp.metrics_url, NS)], config, on_scrape=lambda o, _s: seen.append(o))
    try:
        readings = await source.read_queues([(NS, "a")])
        assert readings[(NS, "a")].state is QueueState.UNKNOWN
        assert "all 1 EPP scrapes failed" in readings[(NS, "a")].reason
        assert seen == [outcome] and source.outcomes[outcome] == 1
        epp.fault = None  # recovers on the next read
        assert (await source.read_queues([(NS, "a")]))[(NS, "a")].state is QueueState.EMPTY
    finally:
        await source.stop()


async def test_one_failed_endpoint_of_two_leaves_zero_unconfirmed(epp: EppEmulator) -> None:
    epp.set_queue("zero", 0)
    epp.set_queue("busy", 2)
    source = EppScrapingSource([EppTarget(epp.metrics_url, NS), EppTarget("http://127.0.0.1:9/metrics", NS)])
    try:
        readings = await source.read_queues([(NS, "zero"), (NS, "busy")])
        assert readings[(NS, "zero")].state is QueueState.UNKNOWN
        assert readings[(NS, "busy")].value == 2.0
        result = source.get(Q_EPP_QUEUE_SIZE_ALL)
        assert result is not None and isinstance(result.result, EppMetricResult)
        assert list(result.result.target_errors) == ["http://127.0.0.1:9/metrics"]
    finally:
        await source.stop()


async def test_scraping_sends_the_token_and_reports_401(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.Response(status=401)
        return web.Response(text=f'{EPP_QUEUE_SIZE}{{target_model_name="a"}} 1\n')

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    url = f"http://127.0.0.1:{port}/metrics"
    with_token = EppScrapingSource([EppTarget(url)], EppScrapingConfig(token_path=str(token)))
    without = EppScrapingSource([EppTarget(url)])
    try:
        assert (await with_token.read_queues([(NS, "a")]))[(NS, "a")].value == 1.0
        reading = (await without.read_queues([(NS, "a")]))[(NS, "a")]
        assert reading.state is QueueState.UNKNOWN and "HTTP 401" in reading.reason
        assert seen == ["Bearer s3cret", None]
    finally:
        await with_token.stop()
        await without.stop()
        await runner.cleanup()


async def test_a_nan_or_negative_scraped_value_is_unknown(epp: EppEmulator) -> None:
    epp.set_queue("nan", math.nan)
    epp.set_queue("neg", -3)
    source = EppScrapingSource([EppTarget(epp.metrics_url, NS)])
    try:
        readings = await source.read_queues([(NS, "nan"), (NS, "neg")])
        assert readings[(NS, "nan")].state is QueueState.UNKNOWN
        assert readings[(NS, "neg")].state is QueueState.UNKNOWN
    finally:
        await source.stop()


def test_scraping_needs_a_target_and_sane_limits() -> None:
    with pytest.raises(ValueError):
        EppScrapingSource([])
    with pytest.raises(ValueError):
        EppScrapingConfig(scrape_timeout=0)
    with pytest.raises(ValueError):
        EppScrapingConfig(max_body_bytes=10)


def test_label_constants_match_the_catalogue() -> None:
    assert EppQueryConfig().namespace_label == promql.LABEL_NAMESPACE
