"""Pure parts of pod scraping: exposition parsing, per-pod readings, rates and peaks."""

from __future__ import annotations

import math

import pytest

from wva.collector import promql
from wva.collector.v2.exposition import (
    Sample,
    counter_rate,
    parse_exposition,
    peak,
    reading_from_samples,
)
from wva.sim.vllm import PodState, render_pods

TEXT = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:request_prompt_tokens histogram
vllm:request_prompt_tokens_bucket{model_name="m",le="10.0"} 1.0
vllm:request_prompt_tokens_bucket{model_name="m",le="+Inf"} 4.0
vllm:request_prompt_tokens_sum{model_name="m"} 400.0
vllm:request_prompt_tokens_count{model_name="m"} 4.0
vllm:request_prompt_tokens_created{model_name="m"} 1.7e9
# TYPE vllm:time_to_first_token_seconds summary
vllm:time_to_first_token_seconds{model_name="m",quantile="0.5"} 0.1
vllm:time_to_first_token_seconds_sum{model_name="m"} 2.0
vllm:time_to_first_token_seconds_count{model_name="m"} 8.0
"""


def test_histograms_and_summaries_keep_sum_and_count_but_not_buckets() -> None:
    names = [s.name for s in parse_exposition(TEXT)]
    assert "vllm:request_prompt_tokens_sum" in names
    assert "vllm:request_prompt_tokens_count" in names
    assert "vllm:time_to_first_token_seconds_sum" in names
    assert "vllm:time_to_first_token_seconds_count" in names
    assert not [n for n in names if n.endswith(("_bucket", "_created"))]
    reading = reading_from_samples(parse_exposition(TEXT), "m", at=1.0, wall=2.0)
    assert reading.counters[promql.PROMPT_TOKENS_SUM] == 400.0
    assert reading.counters[promql.PROMPT_TOKENS_COUNT] == 4.0
    assert reading.counters[promql.TTFT_SECONDS_SUM] == 2.0
    assert reading.kv_cache_usage == 0.25


@pytest.mark.parametrize(
    "garbage", ["<html>this is not metrics{{{\n", 'metric{a="b" 1\n', 'metric{a="b"} notanumber\n']
)
def test_garbage_is_a_value_error(garbage: str) -> None:
    with pytest.raises(ValueError, match="invalid exposition text"):
        parse_exposition(garbage)


def test_the_emulator_text_round_trips_into_a_reading() -> None:
    state = PodState(model="acme/m", kv_cache_usage=0.7, num_requests_waiting=3, num_requests_running=2,
                     request_success_total=10, prompt_tokens_sum=500, prompt_tokens_count=10)
    reading = reading_from_samples(parse_exposition(render_pods([({}, state)])), "acme/m", at=0.0, wall=0.0)
    assert (reading.kv_cache_usage, reading.queue_length, reading.running) == (0.7, 3.0, 2.0)
    assert reading.counters[promql.REQUEST_SUCCESS_TOTAL] == 10.0
    assert reading.counters[promql.PROMPT_TOKENS_SUM] == 500.0


def test_other_models_are_ignored_and_unlabelled_samples_count() -> None:
    samples = [
        Sample(promql.KV_CACHE_USAGE_PERC, {"model_name": "other"}, 0.99),
        Sample(promql.KV_CACHE_USAGE_PERC, {"model_name": "m"}, 0.3),
        Sample(promql.NUM_REQUESTS_WAITING, {}, 4.0),
        Sample(promql.REQUEST_SUCCESS_TOTAL, {"model_name": "m", "lora": "a"}, 5.0),
        Sample(promql.REQUEST_SUCCESS_TOTAL, {"model_name": "m", "lora": "b"}, 7.0),
    ]
    reading = reading_from_samples(samples, "m", at=0.0, wall=0.0)
    assert reading.kv_cache_usage == 0.3
    assert reading.queue_length == 4.0
    assert reading.counters[promql.REQUEST_SUCCESS_TOTAL] == 12.0  # series of one counter add up


def test_unknown_stays_unknown_never_zero() -> None:
    samples = [
        Sample(promql.KV_CACHE_USAGE_PERC, {}, math.nan),
        Sample(promql.REQUEST_SUCCESS_TOTAL, {}, math.inf),
    ]
    reading = reading_from_samples(samples, "m", at=0.0, wall=0.0)
    assert reading.kv_cache_usage is None  # NaN is not 0
    assert reading.queue_length is None  # absent is not 0
    assert promql.REQUEST_SUCCESS_TOTAL not in reading.counters
    confirmed = reading_from_samples([Sample(promql.NUM_REQUESTS_WAITING, {}, 0.0)], "m", at=0.0, wall=0.0)
    assert confirmed.queue_length == 0.0  # a reported zero is a confirmed zero


def test_counter_rate() -> None:
    assert counter_rate([(0.0, 10.0), (10.0, 30.0)]) == 2.0
    assert counter_rate([(0.0, 10.0), (10.0, 30.0), (20.0, 5.0)]) == pytest.approx(25.0 / 20.0)  # reset
    assert counter_rate([(0.0, 10.0), (5.0, None), (10.0, 10.0)]) == 0.0  # confirmed: no requests
    assert counter_rate([(0.0, 10.0)]) is None  # one reading: unknown
    assert counter_rate([(0.0, None), (10.0, 3.0)]) is None
    assert counter_rate([(5.0, 1.0), (5.0, 2.0)]) is None  # no elapsed time


def test_peak() -> None:
    assert peak([0.2, None, 0.9, 0.1]) == 0.9
    assert peak([None, None]) is None
    assert peak([0.0]) == 0.0
