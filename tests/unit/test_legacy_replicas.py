"""Pure parts of collector v1: rendering, escaping, result parsing, pod attribution, tracking."""

from __future__ import annotations

import re

import pytest

from wva.collector import promql as catalogue
from wva.collector.legacy.promql import (
    allocation_key,
    escape_regex,
    first_value,
    is_vector,
    pod_existence_query,
    render,
    render_model_query,
    replica_key,
    samples,
)
from wva.collector.legacy.replicas import (
    PodSignals,
    deployment_for_pod,
    existing_pods,
    merge_replica_metrics,
    signals_from_results,
)
from wva.collector.legacy.tracking import Tracker
from wva.collector.types import VariantRef


def test_render_substitutes_escaped_values_into_upstream_text() -> None:
    assert render_model_query(catalogue.Q_KV_CACHE_USAGE, "meta/llama", "prod") == (
        'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{namespace="prod",model_name="meta/llama"}[1m]))'
    )
    assert render(catalogue.Q_METRICS_AVAILABILITY_ANY_NAMESPACE, modelID='"') == (
        'vllm:num_requests_running{model_name="\\""}'
    )


def test_render_missing_parameter() -> None:
    with pytest.raises(ValueError, match="namespace"):
        render(catalogue.Q_ARRIVAL_RATE, modelID="m")


@pytest.mark.parametrize("text", ["a.b", "a+b*c?", "(x|y)", "[a-z]{2}", "^s$", "back\\slash", "plain-name"])
def test_escape_regex_matches_literally(text: str) -> None:
    # Python's re agrees with RE2 on these escapes
    assert re.fullmatch(escape_regex(text), text)
    if "." in text:
        assert not re.fullmatch(escape_regex(text), text.replace(".", "X"))


def test_pod_existence_query_is_sorted_and_deduplicated() -> None:
    assert pod_existence_query("ns", ["b", "a", "b"]) == 'kube_pod_info{namespace="ns",pod=~"a-.*|b-.*"}'
    assert pod_existence_query("ns", []) == 'kube_pod_info{namespace="ns"}'


def test_is_vector_and_samples() -> None:
    vector = [
        {"metric": {"pod": "a"}, "value": [1.5, "0.25"]},
        {"metric": {"pod": "b"}, "value": [1.5, "NaN"]},
        {"metric": {"pod": "c"}, "value": [1.5, "garbage"]},
        {"metric": {"pod": "d"}, "value": "broken"},
    ]
    assert is_vector(vector) and is_vector([])
    assert not is_vector([1.5, "3"])  # scalar
    assert not is_vector([{"metric": {}, "values": [[1, "1"]]}])  # matrix
    assert not is_vector(None)
    got = [(s.labels["pod"], s.timestamp, s.value) for s in samples(vector)]
    assert got == [("a", 1.5, 0.25), ("b", 1.5, 0.0)]  # malformed samples skipped, NaN -> 0
    assert first_value(vector) == 0.25
    assert first_value([1.5, "3"]) == 0.0
    assert first_value([]) == 0.0


def test_signals_use_pod_then_pod_name_and_truncate_queue() -> None:
    signals = signals_from_results(
        [{"metric": {"pod": "a"}, "value": [0, "0.7"]}, {"metric": {"pod_name": "b"}, "value": [0, "0.1"]},
         {"metric": {}, "value": [0, "0.9"]}],
        [{"metric": {"pod": "a"}, "value": [0, "4.99"]}],
    )
    assert signals.kv_cache == {"a": 0.7, "b": 0.1}
    assert signals.queue == {"a": 4}
    assert signals.candidates == {"a", "b"}


def test_existing_pods_is_the_intersection_with_candidates() -> None:
    result = [{"metric": {"pod": p}, "value": [0, "1"]} for p in ("a", "x")]
    assert existing_pods(result, frozenset({"a", "b"})) == {"a"}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ("llama-7d9f-abc", "llama"),
        ("llama-8b-7d9f-abc", "llama-8b"),
        ("llama8b-1-2", None),  # "llama" without the dash does not count
        ("other-1-2", None),
        ("llama", None),
    ],
)
def test_deployment_for_pod_longest_prefix(pod: str, expected: str | None) -> None:
    assert deployment_for_pod(pod, ["llama", "llama-8b"]) == expected


def test_merge_sorts_and_filters_and_uses_variant_attributes() -> None:
    variants = [
        VariantRef("z-va", "ns", "dep-z", accelerator_name="L4", cost=5.0),
        VariantRef("a-va", "ns", "dep-a", accelerator_name="H100", cost=50.0),
        VariantRef("other-ns", "elsewhere", "dep-q"),
    ]
    signals = PodSignals(
        kv_cache={"dep-z-1-b": 0.2, "dep-a-1-a": 0.3, "dep-z-1-a": 0.4, "dep-q-1-a": 0.5, "gone-1-a": 0.6},
        queue={"dep-z-1-b": 1},
    )
    rows = merge_replica_metrics(
        "m", "ns", signals, frozenset({"dep-z-1-b", "dep-a-1-a", "dep-z-1-a", "dep-q-1-a"}), variants, None
    )
    assert [(r.variant_name, r.pod_name, r.kv_cache_usage, r.queue_length, r.accelerator_name, r.cost)
            for r in rows] == [
        ("a-va", "dep-a-1-a", 0.3, 0, "H100", 50.0),
        ("z-va", "dep-z-1-a", 0.4, 0, "L4", 5.0),
        ("z-va", "dep-z-1-b", 0.2, 1, "L4", 5.0),
    ]  # gone-1-a: stale; dep-q-1-a: its variant lives in another namespace


@pytest.mark.parametrize("existing", [None, frozenset()])
def test_merge_without_usable_pod_info_keeps_everyone(existing: frozenset[str] | None) -> None:
    signals = PodSignals(kv_cache={"d-1-a": 0.1, "d-1-b": 0.2}, queue={})
    rows = merge_replica_metrics("m", "ns", signals, existing, [VariantRef("v", "ns", "d")], None)
    assert [r.pod_name for r in rows] == ["d-1-a", "d-1-b"]


def test_cache_keys() -> None:
    assert allocation_key("model1", "ns1", "va") == "model1/ns1/va/allocation-metrics"
    assert replica_key("model1", "ns1") == "model1/ns1/all/replica-metrics"
    assert replica_key("org/model%", "ns") == "org%2Fmodel%25/ns/all/replica-metrics"


def test_tracker_keeps_last_fetch_and_overwrites_fields() -> None:
    tracker = Tracker()
    tracker.track_va("m", "ns", "va")
    (item,) = tracker.vas()
    assert item.last_fetch is None and item.needs_fetch(0.0, 30.0)
    tracker.mark_va_fetched(item, 100.0)
    tracker.track_va("m", "ns", "va")  # tracking again does not reset the fetch time
    (item,) = tracker.vas()
    assert item.last_fetch == 100.0
    assert not item.needs_fetch(110.0, 30.0) and item.needs_fetch(130.0, 30.0) and item.needs_fetch(135.0, 30.0)

    tracker.track_model("m", "ns", [VariantRef("b", "ns", "d2"), VariantRef("a", "ns", "d1", cost=10.0)])
    tracker.track_model("m", "ns", [VariantRef("a", "ns", "d1", cost=20.0)])
    (model,) = tracker.models()
    assert [(v.name, v.cost) for v in model.variants] == [("a", 20.0)]
    tracker.untrack_model("m", "ns")
    tracker.untrack_model("m", "ns")
    tracker.untrack_va("m", "ns", "va")
    tracker.mark_va_fetched(item, 200.0)  # untracked meanwhile: not resurrected
    assert tracker.vas() == [] and tracker.models() == []
