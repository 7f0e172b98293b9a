"""Fuzzed metric answers: what Prometheus, a pod's or an EPP's ``/metrics`` may send back.

Parsers covered: collector v2's ``parse_query_result`` (and the batch splitting and EPP queue
readings built on it), collector v1's ``samples``/``signals_from_results``/``existing_pods``, the
text-exposition parser of pod scraping and EPP scraping, and the backtest's range-query reader.

Properties: random JSON shapes, huge and deeply nested documents, wrong types, NaN/Inf strings,
numbers beyond the float range and missing labels never raise (the exposition parser raises only
its documented ValueError, the range reader only HistoryError); a malformed series never costs the
well-formed ones next to it; and whatever comes out is usable: labels are text, NaN/Inf never
passes as a number (it is 0 with ``finite=False``, unknown, or left out), no negative load appears.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzzing import awkward_text, deep_documents, fuzz, huge_integers, json_values, nested, scalars
from wva.collector import promql
from wva.collector.legacy.promql import first_value, samples
from wva.collector.legacy.replicas import existing_pods, signals_from_results
from wva.collector.v2.batching import BATCH_TAG_LABEL, split_by_model, split_combined
from wva.collector.v2.epp import EppMetricResult, QueueState, epp_samples, queue_readings
from wva.collector.v2.exposition import parse_exposition, reading_from_samples
from wva.collector.v2.prometheus import parse_query_result
from wva.collector.v2.results import MetricResult, MetricValue
from wva.replay.config import parse_model_file
from wva.replay.history import HistoryError, fetch_history, parse_time

# --- strategies ------------------------------------------------------------------------------------

NUMBER_TEXTS = ("NaN", "+Inf", "-Inf", "Inf", "-nan", "1e309", "-1e309", "-1", "-0", "0", "0.5", "5", "1e308", "")
timestamps = st.one_of(
    st.floats(min_value=0, max_value=2e9), st.floats(), st.integers(), huge_integers(), awkward_text(8)
)
sample_values = st.one_of(
    st.sampled_from(NUMBER_TEXTS), st.floats().map(str), st.floats(), st.integers(), huge_integers(),
    awkward_text(8), st.none(),
)
label_names = st.one_of(st.sampled_from(["pod", "pod_name", "model_name", "namespace", "__name__", BATCH_TAG_LABEL]),
                        awkward_text(8))
label_values = st.one_of(st.sampled_from(["p-1", "p-2", "m", "ns", ""]), awkward_text(8), scalars(),
                         st.lists(st.integers(), max_size=2))
label_sets = st.one_of(st.dictionaries(label_names, label_values, max_size=5), json_values(max_leaves=4))
points = st.one_of(st.tuples(timestamps, sample_values).map(list), json_values(max_leaves=4))
series = st.one_of(
    st.fixed_dictionaries({}, optional={
        "metric": label_sets, "value": points, "values": st.one_of(st.lists(points, max_size=4), json_values()),
    }),
    json_values(max_leaves=6),
    deep_documents(100),
)
responses = st.one_of(
    st.lists(series, max_size=8),
    st.tuples(timestamps, sample_values).map(list),  # a scalar
    json_values(),
    deep_documents(300),
)

#: Well-formed vector series: what Prometheus itself sends.
good_series = st.fixed_dictionaries({
    "metric": st.dictionaries(st.sampled_from(["pod", "model_name", "namespace", "x"]), st.text(max_size=8),
                              max_size=3),
    "value": st.tuples(st.floats(min_value=1, max_value=2e9), st.sampled_from(NUMBER_TEXTS[:-1])).map(list),
})


def _check_values(values: Sequence[MetricValue]) -> None:
    for v in values:
        assert isinstance(v.value, float) and math.isfinite(v.value)
        assert isinstance(v.timestamp, float) and math.isfinite(v.timestamp)
        assert all(type(k) is str and type(x) is str for k, x in v.labels.items())
        if not v.finite:
            assert v.value == 0.0


# --- collector v2 ----------------------------------------------------------------------------------


@fuzz(200)
@given(responses)
@example([{"metric": "ab", "value": [1, "2"]}])  # was ValueError from dict("ab")
@example([{"metric": 5, "value": [1, "2"]}])  # was TypeError
@example([{"metric": {}, "value": [10**400, "2"]}])  # was OverflowError
@example([{"metric": {"pod": 10**5000}, "value": [1, "2"]}])  # was ValueError (int too long for str)
@example([{"metric": {}, "values": 5}])  # was TypeError
@example([{"metric": {}, "values": {"a": 1}}])  # was KeyError
@example([10**400, "1"])
@example([{"metric": {}, "value": "12"}])  # a 2-character string is not a [ts, value] pair
@example([{"metric": {}, "value": ["NaN", "1"]}])  # a NaN timestamp would never be stale
def test_parse_query_result_never_raises_and_gives_clean_values(data: Any) -> None:
    values = parse_query_result(data)
    _check_values(values)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        assert len(values) <= len(data)


@fuzz(100)
@given(good=st.lists(good_series, min_size=1, max_size=5), data=st.data())
def test_a_malformed_series_never_costs_the_well_formed_ones(good: list[dict[str, Any]], data: st.DataObject) -> None:
    mixed: list[Any] = []
    for item in good:  # the good series in order, garbage between them
        mixed.extend(data.draw(st.lists(series, max_size=2)))
        mixed.append(item)
    mixed.extend(data.draw(st.lists(series, max_size=2)))
    if len(mixed) == 2 and not isinstance(mixed[0], dict):
        mixed.append({})  # not a scalar pair
    parsed = parse_query_result(mixed)
    expected = [(item["metric"], item["value"][0], math.isfinite(float(item["value"][1]))) for item in good]
    found = iter([(dict(v.labels), v.timestamp, v.finite) for v in parsed])
    assert all(any(f == e for f in found) for e in expected), expected  # a subsequence, in order


@fuzz(75)
@given(responses)
def test_batch_splitting_and_epp_readings_take_any_parsed_answer(data: Any) -> None:
    result = MetricResult("q", parse_query_result(data), collected_at=1.0)
    by_model = split_by_model(result, "q")
    combined = split_combined(result)
    assert sum(len(r.values) for r in by_model.values()) <= len(result.values)
    assert sum(len(r.values) for parts in combined.values() for r in parts.values()) <= len(result.values)
    for part in by_model.values():
        assert all(promql.LABEL_MODEL_NAME not in v.labels for v in part.values)
    models = {(v.labels.get("namespace", ""), v.labels.get("target_model_name", "m")) for v in result.values}
    models |= {("ns", "m"), ("", "m")}
    for res in (result, EppMetricResult("q", result.values, 1.0, target_errors={"http://x": "down"})):
        readings = queue_readings(res, sorted(models))
        assert set(readings) == models
        for reading in readings.values():
            assert reading.value is None or (math.isfinite(reading.value) and reading.value >= 0)
            if reading.state is QueueState.UNKNOWN:
                assert reading.reason


def test_a_huge_answer_is_parsed_in_full() -> None:
    good = {"metric": {"pod": "p", "model_name": "m"}, "value": [1.0, "0.5"]}
    junk = [{"metric": "x", "value": [1, "2"]}, {"metric": {"pod": [1]}, "value": [1, "2"]}, {"value": [10**400, 1]}]
    data = [good, *junk] * 25_000
    values = parse_query_result(data)
    assert len(values) == 25_000 and all(v.value == 0.5 and v.labels == good["metric"] for v in values)


# --- collector v1 ----------------------------------------------------------------------------------


@fuzz(100)
@given(kv=responses, queue=responses)
@example(kv=[{"metric": {"pod": "p"}, "value": [10**400, "2"]}], queue=[])  # was OverflowError
@example(kv=[{"metric": {"pod": "p"}, "value": [1, 10**400]}], queue=[])  # was OverflowError
@example(kv=[{"metric": {"pod": 10**5000}, "value": [1, "2"]}], queue=[])  # was ValueError
@example(kv=[{"metric": {"pod": "p"}, "value": [1, "NaN"]}], queue=[{"metric": {"pod": "p"}, "value": [1, "3"]}])
@example(kv=[], queue=[{"metric": {"pod": "p"}, "value": [0.0, 10**4301]}])  # its warning could not be formatted
def test_legacy_parsing_never_raises_and_never_reads_a_bad_value_as_load(kv: Any, queue: Any) -> None:
    for sample in samples(kv):
        assert math.isfinite(sample.value)
        assert all(type(k) is str and type(v) is str for k, v in sample.labels.items())
    assert math.isfinite(first_value(kv))
    signals = signals_from_results(kv, queue)
    for value in signals.kv_cache.values():
        assert math.isfinite(value) and value >= 0
    for length in signals.queue.values():
        assert isinstance(length, int) and length >= 0
    assert existing_pods(kv, signals.candidates) <= signals.candidates


@fuzz(50)
@given(pod=st.text(min_size=1, max_size=8), raw=st.sampled_from(["NaN", "+Inf", "-Inf", "-1", "1e309"]),
       other=st.sampled_from(["0.25", "3"]))
def test_legacy_drops_a_pod_with_any_bad_reading_from_both_signals(pod: str, raw: str, other: str) -> None:
    bad = [{"metric": {"pod": pod}, "value": [1.0, raw]}]
    good = [{"metric": {"pod": pod}, "value": [1.0, other]}, {"metric": {"pod": pod + "-ok"}, "value": [1.0, other]}]
    for kv, queue in ((bad, good), (good, bad), (bad + good, good)):
        signals = signals_from_results(kv, queue)
        assert pod not in signals.kv_cache and pod not in signals.queue
        assert pod + "-ok" in signals.kv_cache or pod + "-ok" in signals.queue


# --- text exposition (pod scraping, EPP scraping) --------------------------------------------------

_EXPO_TOKENS = (
    "vllm:kv_cache_usage_perc", "vllm:num_requests_waiting", "vllm:num_requests_running",
    "vllm:request_success_total", "vllm:prompt_tokens_sum", "inference_extension_flow_control_queue_size",
    "x_bucket", "x_created", "{", "}", '="', '"', ",", "=", "model_name", "pod", "le", "target_model_name",
    " ", "\t", "\n", "# TYPE ", "# HELP ", "# EOF", "counter", "gauge", "histogram", "summary", "untyped",
    "NaN", "+Inf", "-Inf", "1e309", "-1", "0", "0.5", "17", "1700000000000", "\\", "\\n", '\\"', "é", "\x00",
)
expositions = st.one_of(
    st.lists(st.one_of(st.sampled_from(_EXPO_TOKENS), st.text(max_size=3)), max_size=60).map("".join),
    st.text(max_size=200),
)


@fuzz(250)
@given(expositions)
@example('a{b="c} 1\n')
@example("# TYPE a histogram\na_bucket{le=\"x\"} 1\n")
@example('vllm:kv_cache_usage_perc{model_name="m"} NaN\nvllm:kv_cache_usage_perc{model_name="m"} 0.5\n')
def test_exposition_parsing_raises_only_value_error(text: str) -> None:
    try:
        parsed = parse_exposition(text)
    except ValueError:
        parsed = None
    if parsed is not None:
        for s in parsed:
            assert type(s.name) is str and isinstance(s.value, float)
            assert all(type(k) is str and type(v) is str for k, v in s.labels.items())
        reading = reading_from_samples(parsed, "m", at=1.0, wall=1.0)
        for gauge in (reading.kv_cache_usage, reading.queue_length, reading.running):
            assert gauge is None or math.isfinite(gauge)
        assert all(math.isfinite(v) for v in reading.counters.values())
    metric = "inference_extension_flow_control_queue_size"
    try:
        epp = epp_samples(text, metric)
    except ValueError:
        return
    assert all(s.name == metric for s in epp)


def test_a_huge_exposition_is_parsed() -> None:
    lines = [f'vllm:kv_cache_usage_perc{{model_name="m",pod="p{i}"}} 0.{i % 10}' for i in range(20_000)]
    parsed = parse_exposition("\n".join(lines) + "\n")
    assert len(parsed) == 20_000
    assert reading_from_samples(parsed, "m", at=1.0, wall=1.0).kv_cache_usage == 0.9


# --- backtest range reader -------------------------------------------------------------------------

_MODEL = parse_model_file("model: m\nnamespace: ns\nvariants:\n  - name: v\n")


class _Client:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def custom_query_range(self, query: str, start_time: datetime, end_time: datetime, step: str,
                           params: dict[str, Any] | None = None) -> Any:
        return self.answer


range_series = st.one_of(
    st.fixed_dictionaries({}, optional={
        "metric": label_sets,
        "values": st.one_of(st.lists(points, max_size=6), json_values()),
    }),
    json_values(max_leaves=6),
)


@fuzz(100)
@given(st.one_of(st.lists(range_series, max_size=6), json_values(), deep_documents()))
@example([{"metric": {"pod": "p"}, "values": [["NaN", "1"]]}])  # was ValueError from round(nan)
@example([{"metric": {"pod": "p"}, "values": [[10**400, "1"]]}])  # was OverflowError
@example([{"metric": {"pod": "p"}, "values": 5}])  # was TypeError
@example([{"metric": {"pod": 10**5000}, "values": [[0, "1"]]}])  # was ValueError
@example([{"metric": ["pod"], "values": [[0, "1"]]}])  # was AttributeError
@example([{"metric": {"pod": "p"}, "values": [{"0": 1}]}])  # was KeyError
def test_range_answers_give_history_error_or_clean_samples(answer: Any) -> None:
    try:
        history = fetch_history(_Client(answer), _MODEL, 0.0, 120.0, 30.0)
    except HistoryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert len(history.samples) == len(history.steps) == 5
    for step in history.samples:
        for pod, sample in step.items():
            assert type(pod) is str and pod
            for value in (sample.kv, sample.queue):
                assert value is None or (math.isfinite(value) and value >= 0)


@fuzz(100)
@given(st.one_of(awkward_text(), st.floats().map(str), st.sampled_from(["now", "now-1h", "now-1e400", "now-x"]),
                 st.datetimes().map(lambda d: d.isoformat() + "Z")))
@example("nan")
@example("inf")
@example("1e400")
def test_backtest_times_are_finite_or_a_value_error_naming_them(text: str) -> None:
    try:
        t = parse_time(text, now=1_000_000.0)
    except ValueError as exc:
        assert repr(text) in str(exc)
    else:
        assert math.isfinite(t)


@pytest.mark.parametrize("depth", [10, 500, 900])
def test_deep_documents_are_rejected_or_ignored_without_recursion_errors(depth: int) -> None:
    doc = nested(depth)
    assert parse_query_result([{"metric": {"pod": doc}, "value": [1, "1"]}]) == []
    assert list(samples([{"metric": {"pod": doc}, "value": [1, "1"]}])) == []
    assert parse_query_result([{"metric": {}, "value": doc}]) == []
