"""MetricValue / MetricResult / RefreshSpec, result parsing, SourceRegistry, query registration."""

from __future__ import annotations

import math

import pytest
from test_v2_support import FakeSource

from wva.collector import promql
from wva.collector.v2 import (
    MetricResult,
    MetricsSource,
    MetricValue,
    QueryList,
    QueryTemplate,
    QueryType,
    RefreshSpec,
    SourceRegistry,
    parse_query_result,
    register_default_queries,
    register_saturation_queries,
)


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_non_finite_values_become_zero(raw: float) -> None:
    assert MetricValue(raw).value == 0.0


@pytest.mark.parametrize("raw", [42.5, 0.0, -15.3])
def test_finite_values_pass_through(raw: float) -> None:
    assert MetricValue(raw).value == raw


def test_metric_value_staleness_and_age() -> None:
    v = MetricValue(1.0, timestamp=100.0)
    assert v.age(102.0) == 2.0
    assert not v.is_stale(5.0, now=102.0) and v.is_stale(1.0, now=102.0)
    unknown = MetricValue(1.0)
    assert unknown.is_stale(1e9, now=1.0) and unknown.age(50.0) == 0.0


def test_metric_result_helpers() -> None:
    r = MetricResult("q", [MetricValue(3.0, 95.0, {"pod": "a"}), MetricValue(4.0, 90.0)], 100.0)
    assert not r.has_error
    assert r.first_value() == MetricValue(3.0, 95.0, {"pod": "a"})
    assert r.oldest_timestamp() == 90.0
    assert not r.is_stale(10.0, now=100.0) and r.is_stale(9.0, now=100.0)
    empty = MetricResult("q")
    assert empty.first_value() == MetricValue(0.0, 0.0, {}) and empty.is_stale(1e9, now=0.0)
    failed = MetricResult("q", error="boom")
    assert failed.has_error and failed.values == []


def test_refresh_spec_defaults_are_independent() -> None:
    a, b = RefreshSpec(), RefreshSpec()
    assert list(a.queries) == [] and dict(a.params) == {}
    assert a.queries is not b.queries


def test_parse_vector_keeps_order_labels_and_timestamps() -> None:
    data = [
        {"metric": {"pod": "p1", "namespace": "ns", "__name__": "m"}, "value": [1700000000.5, "0.75"]},
        {"metric": {"pod": "p2"}, "value": [1700000001, "NaN"]},
        {"metric": {"pod": "p3"}, "value": [1700000001, "+Inf"]},
    ]
    assert parse_query_result(data) == [
        MetricValue(0.75, 1700000000.5, {"pod": "p1", "namespace": "ns", "__name__": "m"}),
        MetricValue(0.0, 1700000001.0, {"pod": "p2"}),
        MetricValue(0.0, 1700000001.0, {"pod": "p3"}),
    ]


def test_parse_scalar_string_matrix_and_garbage() -> None:
    assert parse_query_result([1700000000.0, "42"]) == [MetricValue(42.0, 1700000000.0, {})]
    assert parse_query_result([1700000000.0, "not a number"]) == []  # a string result
    matrix = [
        {"metric": {"pod": "a"}, "values": [[1.0, "1"], [2.0, "2"], [3.0, "3"]]},
        {"metric": {"pod": "empty"}, "values": []},
        {"metric": {"pod": "b"}, "values": [[5.0, "-Inf"]]},
    ]
    assert parse_query_result(matrix) == [
        MetricValue(3.0, 3.0, {"pod": "a"}),
        MetricValue(0.0, 5.0, {"pod": "b"}),
    ]
    assert parse_query_result([]) == []
    assert parse_query_result(None) == []
    assert parse_query_result({"weird": True}) == []
    assert parse_query_result([{"metric": {}, "value": ["x", "y"]}, {"metric": {}, "value": [1, "2"]}]) == [
        MetricValue(2.0, 1.0, {})
    ]


def test_source_registry() -> None:
    registry = SourceRegistry()
    a, b = FakeSource(), FakeSource()
    registry.register("zeta", a)
    registry.register("alpha", b)
    assert registry.get("zeta") is a and registry.get("missing") is None
    assert registry.names() == ["alpha", "zeta"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("zeta", b)
    with pytest.raises(ValueError):
        registry.register("", b)
    assert isinstance(a, MetricsSource)


def test_default_registration_uses_the_catalogue_and_is_idempotent() -> None:
    ql = QueryList()
    register_default_queries(ql)
    register_default_queries(ql)  # upstream panics here; we do not
    assert ql.names() == sorted(promql.QUERY_TEMPLATES)
    for name, (text, params, description) in promql.QUERY_TEMPLATES.items():
        assert ql.get(name) == QueryTemplate(name, QueryType.PROMQL, text, params, description)


def test_registration_conflicting_with_a_different_template_fails() -> None:
    ql = QueryList()
    ql.register(QueryTemplate(promql.Q_KV_CACHE_USAGE, QueryType.PROMQL, "something else"))
    with pytest.raises(ValueError, match="different template"):
        register_saturation_queries(ql)
