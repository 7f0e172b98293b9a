"""Per-pod saturation signals read back from Prometheus: one instant, or a range at a fixed step.

The expressions are the collector's own per-model templates (``max_over_time(...[1m])`` per pod),
rendered with its escaping, so a recomputed decision sees what the live engine saw at that
instant. A range costs two range queries per chunk of at most ``MAX_POINTS`` steps (Prometheus
refuses more than 11,000 points per series), whatever the number of steps or pods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from wva.collector import promql
from wva.collector.types import ReplicaMetrics, ReplicaMetricsMetadata
from wva.collector.v2.query import QueryList
from wva.collector.v2.registration import register_saturation_queries
from wva.replay.config import ModelFile

__all__ = ["MAX_POINTS", "HistoryError", "PodSample", "SignalHistory", "fetch_history", "parse_time", "replicas_at"]

MAX_POINTS = 10_000


class HistoryError(RuntimeError):
    """Prometheus could not be read, or answered with something unusable; the message is one line."""


class RangeClient(Protocol):
    def custom_query_range(
        self, query: str, start_time: datetime, end_time: datetime, step: str, params: dict[str, Any] | None = None
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class PodSample:
    kv: float | None
    queue: float | None


@dataclass
class SignalHistory:
    """``steps[i]`` is the evaluation time of ``samples[i]`` (pod -> its two signals at that step)."""

    model: str
    namespace: str
    steps: list[float] = field(default_factory=list)
    samples: list[dict[str, PodSample]] = field(default_factory=list)
    queries: int = 0

    @property
    def empty(self) -> bool:
        return not any(self.samples)


def _queries(model: ModelFile) -> tuple[str, str]:
    qlist = QueryList()
    register_saturation_queries(qlist)
    params = {promql.PARAM_NAMESPACE: model.namespace, promql.PARAM_MODEL_ID: model.model}
    return qlist.build(promql.Q_KV_CACHE_USAGE, params), qlist.build(promql.Q_QUEUE_LENGTH, params)


def fetch_history(
    client: RangeClient,
    model: ModelFile,
    start: float,
    end: float,
    step: float,
    progress: Callable[[int, int], None] | None = None,
) -> SignalHistory:
    """Signals at ``start, start+step, ... <= end``; raises HistoryError with a one-line reason."""
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise HistoryError(f"bad range: the end ({_iso(end)}) is before the start ({_iso(start)})")
    if step <= 0:
        raise HistoryError(f"bad step {step!r}: it must be > 0")
    start = math.floor(start * 1000) / 1000  # Prometheus evaluates at millisecond resolution
    count = int((end - start) // step) + 1
    steps = [start + i * step for i in range(count)]
    kv_query, queue_query = _queries(model)
    history = SignalHistory(model.model, model.namespace, steps, [{} for _ in steps])
    kv: list[dict[str, float]] = [{} for _ in steps]
    queue: list[dict[str, float]] = [{} for _ in steps]
    chunks = [(steps[i], steps[min(i + MAX_POINTS, count) - 1]) for i in range(0, count, MAX_POINTS)]
    for done, (chunk_start, chunk_end) in enumerate(chunks, start=1):
        for query, into in ((kv_query, kv), (queue_query, queue)):
            _fill(client, query, chunk_start, chunk_end, step, start, into)
            history.queries += 1
        if progress is not None:
            progress(done, len(chunks))
    for i in range(count):
        pods = set(kv[i]) | set(queue[i])
        history.samples[i] = {p: PodSample(kv[i].get(p), queue[i].get(p)) for p in sorted(pods)}
    return history


def _fill(
    client: RangeClient, query: str, start: float, end: float, step: float,
    origin: float, into: list[dict[str, float]],
) -> None:
    try:
        result = client.custom_query_range(
            query, start_time=datetime.fromtimestamp(start, UTC), end_time=datetime.fromtimestamp(end, UTC),
            step=_seconds(step),  # a plain number: Prometheus' duration syntax has no fractions ("1.5s")
            # the client rounds start and end to whole seconds; keep their milliseconds
            params={"start": f"{start:.3f}", "end": f"{end:.3f}"},
        )
    except Exception as exc:  # requests, urllib3 and the client's own errors: all end here
        raise HistoryError(f"Prometheus query failed: {_one_line(exc)}") from None
    if not isinstance(result, list):
        raise HistoryError(f"Prometheus answered a range query with {type(result).__name__}, not a matrix")
    for series in result:  # a malformed series or point is skipped: it cannot be one of our pods' samples
        if not isinstance(series, dict):
            continue
        labels = series.get("metric") or {}
        if not isinstance(labels, Mapping):
            continue
        pod = labels.get(promql.LABEL_POD) or labels.get(promql.LABEL_POD_FALLBACK) or ""
        points = series.get("values") or ()
        if not pod or not isinstance(pod, str) or not isinstance(points, list | tuple):
            continue
        for point in points:
            try:
                stamp, raw = float(point[0]), float(point[1])
            except (TypeError, ValueError, IndexError, KeyError, OverflowError):
                continue
            if not math.isfinite(stamp):
                continue
            position = (stamp - origin) / step
            i = round(position)
            if abs(position - i) * step > 0.002 or not 0 <= i < len(into):
                continue  # not one of our steps
            if math.isfinite(raw) and raw >= 0:
                into[i][pod] = raw


def replicas_at(
    model: ModelFile, samples: dict[str, PodSample], at: float, source: str = "prometheus"
) -> list[ReplicaMetrics]:
    """The step's samples as the engine's per-replica inputs, pods mapped to variants by Deployment name."""
    meta = ReplicaMetricsMetadata(collected_at=at, source=source)
    rows: list[ReplicaMetrics] = []
    for pod, sample in samples.items():
        variant = model.variant_for_pod(pod)
        if variant is None:
            continue
        rows.append(ReplicaMetrics(
            pod_name=pod,
            kv_cache_usage=sample.kv if sample.kv is not None else 0.0,
            queue_length=int(sample.queue) if sample.queue is not None else 0,
            variant_name=variant.name,
            namespace=model.namespace,
            model_id=model.model,
            accelerator_name=variant.accelerator,
            cost=variant.cost,
            metadata=meta,
            sample_time=at,
            kv_known=sample.kv is not None,
            queue_known=sample.queue is not None,
        ))
    rows.sort(key=lambda r: (r.variant_name, r.pod_name))
    return rows


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return repr(t)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def parse_time(text: str, now: float) -> float:
    """RFC 3339, Unix seconds, ``now`` or ``now-<duration>`` (``now-2h``); ValueError names the text."""
    from wva.durations import parse_duration

    raw = text.strip()
    if raw == "now":
        return now
    if raw.startswith("now-"):
        try:
            return now - parse_duration(raw[4:])
        except ValueError as exc:
            raise ValueError(f"invalid time {text!r}: {exc}") from None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"invalid time {text!r}: Unix seconds must be a finite number")
        return seconds
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}; use RFC 3339 (2026-12-03T10:00:00Z), Unix seconds, now or now-1h"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


