"""Pure parsing for the pod-scraping source: exposition text -> one pod's reading -> derived values.

Nothing here does I/O. The text parser is ``prometheus_client``'s; histogram and summary families
keep their ``_sum`` and ``_count`` samples (buckets and ``_created`` are dropped), so averages can be
computed from them exactly as PromQL does from the same series.

Every signal has three states: a number, a confirmed zero (the number 0.0), or unknown (``None``).
Unknown never turns into zero here: a NaN gauge, a missing series or a counter without a previous
reading is ``None``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from wva.collector import promql

__all__ = [
    "COUNTER_SERIES",
    "PodReading",
    "Sample",
    "counter_rate",
    "parse_exposition",
    "peak",
    "reading_from_samples",
]

COUNTER_SERIES: tuple[str, ...] = (
    promql.REQUEST_SUCCESS_TOTAL,
    promql.PROMPT_TOKENS_SUM,
    promql.PROMPT_TOKENS_COUNT,
    promql.GENERATION_TOKENS_SUM,
    promql.GENERATION_TOKENS_COUNT,
    promql.TTFT_SECONDS_SUM,
    promql.TTFT_SECONDS_COUNT,
    promql.TPOT_SECONDS_SUM,
    promql.TPOT_SECONDS_COUNT,
)
"""Cumulative series the optimizer metrics are computed from (rates over consecutive readings)."""

_DROPPED_SUFFIXES = ("_bucket", "_created", "_gcount", "_gsum")


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, histogram buckets and ``_created`` excluded.

    Raises ValueError when the text is not valid exposition format.
    """
    samples: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith(_DROPPED_SUFFIXES):  # the text parser may put _created in its own family
                    continue
                samples.append(Sample(s.name, dict(s.labels), float(s.value)))
    except (ValueError, IndexError, TypeError, KeyError) as exc:
        raise ValueError(f"invalid exposition text: {exc}") from exc
    return samples


@dataclass(frozen=True, slots=True)
class PodReading:
    """What one successful scrape of one pod said about one model.

    ``at`` is a monotonic reading (for windows and rates), ``wall`` seconds since the epoch (for
    sample timestamps). Gauges are ``None`` when the series is absent or NaN; ``counters`` holds
    only the series that were present.
    """

    at: float
    wall: float
    kv_cache_usage: float | None = None
    queue_length: float | None = None
    running: float | None = None
    counters: Mapping[str, float] = field(default_factory=dict)


def _matches_model(labels: Mapping[str, str], model_id: str) -> bool:
    model = labels.get(promql.LABEL_MODEL_NAME)
    return model is None or model == model_id


def _gauge(values: list[float]) -> float | None:
    known = [v for v in values if math.isfinite(v)]
    return max(known) if known else None


def reading_from_samples(samples: Iterable[Sample], model_id: str, *, at: float, wall: float) -> PodReading:
    """Reduce a pod's samples to the model's signals.

    Samples labelled with another ``model_name`` are ignored (samples without the label count).
    Several series of one gauge give their maximum (PromQL's ``max by (pod)``); several series of
    one counter are summed. Non-finite counter values are dropped (unknown, not zero).
    """
    gauges: dict[str, list[float]] = {
        promql.KV_CACHE_USAGE_PERC: [],
        promql.NUM_REQUESTS_WAITING: [],
        promql.NUM_REQUESTS_RUNNING: [],
    }
    counters: dict[str, float] = {}
    for sample in samples:
        if not _matches_model(sample.labels, model_id):
            continue
        if sample.name in gauges:
            gauges[sample.name].append(sample.value)
        elif sample.name in COUNTER_SERIES and math.isfinite(sample.value):
            counters[sample.name] = counters.get(sample.name, 0.0) + sample.value
    return PodReading(
        at=at,
        wall=wall,
        kv_cache_usage=_gauge(gauges[promql.KV_CACHE_USAGE_PERC]),
        queue_length=_gauge(gauges[promql.NUM_REQUESTS_WAITING]),
        running=_gauge(gauges[promql.NUM_REQUESTS_RUNNING]),
        counters=counters,
    )


def peak(values: Iterable[float | None]) -> float | None:
    """The largest known value (``max_over_time``); None when every value is unknown."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def counter_rate(points: Sequence[tuple[float, float | None]]) -> float | None:
    """Per-second increase over ``(time, value)`` points in time order, like PromQL ``rate``.

    A drop in value is a counter reset: the increase across it is the new value. Unknown points
    are skipped. Fewer than two known points, or no elapsed time, is unknown (None), never zero.
    """
    known = [(t, v) for t, v in points if v is not None]
    if len(known) < 2:
        return None
    elapsed = known[-1][0] - known[0][0]
    if elapsed <= 0:
        return None
    increase = 0.0
    for (_t0, previous), (_t1, current) in itertools.pairwise(known):
        increase += current - previous if current >= previous else current
    return increase / elapsed
