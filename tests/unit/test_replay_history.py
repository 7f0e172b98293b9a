"""History reads for explain and backtest: what is sent to Prometheus, and how answers map to steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from wva.replay.config import ModelFileError, parse_model_file
from wva.replay.history import HistoryError, fetch_history

MODEL = parse_model_file('model: m"x\nnamespace: ns\nvariants: [{name: a, deployment: dep-a}]\n')


class FakeRange:
    def __init__(self, answer: Any = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answer = answer

    def custom_query_range(self, query: str, start_time: datetime, end_time: datetime, step: str,
                           params: dict[str, Any] | None = None) -> Any:
        self.calls.append({"query": query, "step": step, **(params or {})})
        if self.answer is not None:
            return self.answer
        first = float((params or {})["start"])
        return [{"metric": {"pod": "dep-a-1-x"}, "values": [[first, "0.5"], [first + 1.5, "0.25"], [first + 0.7, "9"]]}]


def test_steps_are_plain_seconds_and_the_range_keeps_its_milliseconds() -> None:
    client = FakeRange()
    history = fetch_history(client, MODEL, 1000.1234, 1003.2, 1.5)
    assert [c["step"] for c in client.calls] == ["1.5", "1.5"]  # Prometheus rejects "1.5s"
    assert client.calls[0]["start"] == "1000.123" and client.calls[0]["end"] == "1003.123"
    assert history.steps == [1000.123, 1001.623, 1003.123]
    # a point between two steps is not one of ours
    assert [s["dep-a-1-x"].kv for s in history.samples[:2]] == [0.5, 0.25]
    assert 'model_name="m\\"x"' in client.calls[0]["query"]  # the model name is escaped, never injected


def test_long_ranges_are_read_in_chunks_of_two_queries() -> None:
    client = FakeRange(answer=[])
    history = fetch_history(client, MODEL, 0.0, 25_000.0, 1.0)
    assert history.queries == len(client.calls) == 6  # 25,001 steps: three chunks of at most 10,000
    assert history.empty


def test_bad_answers_and_failures_are_one_line_errors() -> None:
    class Failing(FakeRange):
        def custom_query_range(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("connection refused\nmore text")

    with pytest.raises(HistoryError, match=r"^Prometheus query failed: connection refused more text$"):
        fetch_history(Failing(), MODEL, 0.0, 10.0, 1.0)
    with pytest.raises(HistoryError, match="not a matrix"):
        fetch_history(FakeRange(answer={"x": 1}), MODEL, 0.0, 10.0, 1.0)
    with pytest.raises(HistoryError, match="bad range"):
        fetch_history(FakeRange(), MODEL, 10.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: m\nnamespace: n\nvariants:\n - name: a\n   costt: 3\n",
         "f.yaml: line 5: unknown key 'variants[0].costt' (did you mean 'cost'?)"),
        ("model: [\n", "f.yaml: line 2: invalid YAML"),
        ("model: m\nnamespace: n\nthresholds:\n  kvSpareTriger: 0.1\nvariants: [{name: a}]\n",
         "f.yaml: line 4: unknown key 'thresholds.kvSpareTriger' (did you mean 'kvSpareTrigger'?)"),
        ("model: m\nnamespace: n\nvariants: [{name: a, minReplicas: 3, maxReplicas: 2}]\n",
         "maxReplicas 2 < minReplicas 3"),
        ("model: m\nnamespace: n\nvariants: []\n", "'variants' must be a non-empty list"),
        ("model: m\nnamespace: n\nthresholds: {kvSpareTrigger: 2}\nvariants: [{name: a}]\n",
         "kvSpareTrigger must be between 0 and 1"),
        ("model: m\nnamespace: n\nvariants: [{name: a}, {name: a}]\n", "variant name 'a' appears twice"),
    ],
)
def test_model_file_errors_name_the_file_the_line_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ModelFileError) as caught:
        parse_model_file(text, "f.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_pods_map_to_the_longest_matching_deployment() -> None:
    model = parse_model_file("model: m\nnamespace: n\nvariants: [{name: a, deployment: llama}, "
                             "{name: b, deployment: llama-big}]\n")
    assert model.variant_for_pod("llama-big-5d-x").name == "b"  # type: ignore[union-attr]
    assert model.variant_for_pod("llama-5d-x").name == "a"  # type: ignore[union-attr]
    assert model.variant_for_pod("other-5d-x") is None
