"""``PrometheusSource``: the collector-v2 source backed by Prometheus instant queries.

The client (``prometheus_api_client.PrometheusConnect``) is blocking, so every query runs in a
dedicated thread pool of ``max_concurrency`` workers behind an asyncio semaphore of the same size:
at most that many HTTP requests are in flight, even when a timed-out request is still finishing
in its thread. No lock is held across a network call, so ``get`` stays answerable during a
``refresh`` and refreshes of different models overlap.

Each query gets one deadline (``query_timeout``) that covers waiting for a slot, every attempt and
every backoff sleep. Transient failures (connection errors, timeouts, HTTP 5xx and 429) are retried
with exponential backoff and jitter; a bad query (HTTP 400/422) is not.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import requests

from wva.collector.v2.cache import Cache, CachedValue, build_cache_key
from wva.collector.v2.query import QueryList
from wva.collector.v2.results import MetricResult, MetricValue, RefreshSpec

__all__ = [
    "PrometheusQueryClient",
    "PrometheusSource",
    "PrometheusSourceConfig",
    "QueryOutcome",
    "SourceStats",
    "is_transient_error",
    "parse_query_result",
]

logger = logging.getLogger(__name__)

_HTTP_STATUS = re.compile(r"HTTP Status Code (\d{3})")
_HTTP_ERROR_BODY = re.compile(r"HTTP Status Code (\d{3}) \((b?'.*'|b?\".*\")\)", re.DOTALL)
_MAX_ERROR_CHARS = 500


class PrometheusQueryClient(Protocol):
    """The part of ``prometheus_api_client.PrometheusConnect`` the source uses."""

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class PrometheusSourceConfig:
    """Durations in seconds. ``retry_max_attempts`` counts the first attempt."""

    default_ttl: float = 30.0
    query_timeout: float = 10.0
    max_concurrency: int = 8
    retry_initial: float = 0.5
    retry_factor: float = 2.0
    retry_max_attempts: int = 5
    retry_jitter: float = 0.1
    cache_maxsize: int = 50000  # one entry per query and parameter set (batched: a few per namespace)
    cache_cleanup_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.default_ttl < 0:
            raise ValueError(f"default_ttl must be >= 0, got {self.default_ttl}")
        if self.query_timeout <= 0:
            raise ValueError(f"query_timeout must be > 0, got {self.query_timeout}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.retry_initial < 0 or self.retry_factor < 1 or self.retry_jitter < 0:
            raise ValueError("retry_initial must be >= 0, retry_factor >= 1 and retry_jitter >= 0")
        if self.retry_max_attempts < 1:
            raise ValueError(f"retry_max_attempts must be >= 1, got {self.retry_max_attempts}")


class QueryOutcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"  # Prometheus answered with an error, or retries ran out
    TIMEOUT = "timeout"  # the per-query deadline passed
    INVALID = "invalid"  # the query could not be built (unknown name, missing parameter)


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A snapshot of the source's counters, for self-metrics."""

    queries: Mapping[QueryOutcome, int] = field(default_factory=dict)
    retries: int = 0
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def queries_total(self) -> int:
        return sum(self.queries.values())


QueryHook = Callable[[str, QueryOutcome, float], None]
"""Called after every query with (query name, outcome, duration in seconds)."""


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status
    match = _HTTP_STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def is_transient_error(exc: BaseException) -> bool:
    """Connection errors, timeouts, HTTP 5xx and 429 are worth retrying; anything else is not."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    status = _http_status(exc)
    return status is not None and (status >= 500 or status == 429)


def _api_error_text(text: str) -> str:
    """Shorten the client's ``HTTP Status Code 400 (b'{"errorType": .., "error": ..}')`` message.

    It becomes ``HTTP Status Code 400: bad_data: <error>``; anything unrecognised is kept as is.
    """
    match = _HTTP_ERROR_BODY.fullmatch(text)
    if match is None:
        return text
    try:
        raw = ast.literal_eval(match.group(2))
        body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        detail = ": ".join(str(body[k]) for k in ("errorType", "error") if body.get(k))
    except (ValueError, SyntaxError, TypeError, AttributeError, UnicodeDecodeError):
        return text
    return f"HTTP Status Code {match.group(1)}: {detail}" if detail else text


def _describe(exc: BaseException) -> str:
    text = _api_error_text(str(exc)) or type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def _sample(raw: Any) -> tuple[float, float]:
    """(timestamp, value) from a ``[ts, "value"]`` pair; ValueError if it is not one.

    The value may be NaN or infinite (Prometheus sends ``"NaN"``, ``"+Inf"``); the timestamp must be a
    finite number. Integers beyond the float range are out of range, not an OverflowError.
    """
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ValueError("not a [timestamp, value] pair")
    timestamp, value = raw
    try:
        stamp, number = float(timestamp), float(value)
    except OverflowError:
        raise ValueError("number out of range") from None
    if stamp - stamp != 0.0:  # NaN or infinite
        raise ValueError("timestamp is not finite")
    return stamp, number


def _text_labels(labels: Mapping[Any, Any]) -> dict[str, str] | None:
    """Labels with every key and value as text; None when one cannot be (a list, a 5000-digit number)."""
    try:
        return {str(k): v if type(v) is str else _scalar_text(v) for k, v in labels.items()}
    except ValueError:
        return None


def _scalar_text(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float):
        return str(value)  # ValueError for an int of more than 4300 digits
    raise ValueError("a label value must be a string")


def parse_query_result(data: Any) -> list[MetricValue]:
    """Turn ``PrometheusConnect.custom_query`` output into values.

    The client returns only ``data.result``: a list of ``{"metric", "value"}`` for a vector, of
    ``{"metric", "values"}`` for a matrix (the last point of each non-empty series is kept), or a
    ``[ts, "value"]`` pair for a scalar (no labels). A string result or anything unrecognised gives
    no values, and a series that is not well formed (labels that are not a mapping of strings, a
    point that is not a ``[timestamp, value]`` pair of numbers) is skipped without affecting the
    others; nothing in ``data`` makes it raise. NaN and ±Inf values become 0 (``finite=False``).
    """
    if not isinstance(data, list) or not data:
        return []
    if len(data) == 2 and not isinstance(data[0], dict):
        try:
            timestamp, value = _sample(data)
        except (TypeError, ValueError):
            return []  # a string result, or garbage
        return [MetricValue(value=value, timestamp=timestamp, labels={})]
    values: list[MetricValue] = []
    append = values.append
    for series in data:
        if not isinstance(series, dict):
            continue
        metric = series.get("metric") or {}
        point = series.get("value")
        if type(metric) is dict and type(point) is list and len(point) == 2:
            # the shape every Prometheus answer has: the decoded label dict is used as it is (nothing
            # else holds it), the sample converted inline; anything unusual takes the careful path below
            for label_name, label_value in metric.items():
                if type(label_value) is not str or type(label_name) is not str:
                    break
            else:
                try:
                    stamp, number = float(point[0]), float(point[1])
                except (TypeError, ValueError, OverflowError):
                    logger.debug("Skipping unparseable sample of type %s", type(point).__name__)
                    continue
                if stamp - stamp == 0.0:  # else NaN or infinite: no usable timestamp
                    append(MetricValue(number, stamp, metric))
                continue
        if not isinstance(metric, Mapping):
            continue  # not a label set: the series cannot be attributed
        labels: dict[str, str] | None = dict(metric)
        for label_name, label_value in metric.items():
            if type(label_value) is not str or type(label_name) is not str:  # JSON gives strings; else convert
                labels = _text_labels(metric)
                break
        if labels is None:
            continue
        if point is None:
            points = series.get("values")
            if not points or not isinstance(points, list):
                continue
            point = points[-1]
        try:
            timestamp, value = _sample(point)
        except (TypeError, ValueError):
            logger.debug("Skipping unparseable sample of type %s", type(point).__name__)  # no repr: it may not have one
            continue
        append(MetricValue(value, timestamp, labels))
    return values


class _QueryFailed(Exception):
    def __init__(self, message: str, outcome: QueryOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class PrometheusSource:
    """Runs registered PromQL templates against Prometheus and caches every result.

    ``prom`` is a ready client (the source never builds one). Give it no retries of its own (e.g.
    ``PrometheusConnect(..., retry=Retry(total=0))``): the source retries within its deadline.
    """

    def __init__(
        self,
        prom: PrometheusQueryClient,
        config: PrometheusSourceConfig | None = None,
        *,
        cache: Cache | None = None,
        clock: Callable[[], float] = time.time,
        on_query: QueryHook | None = None,
    ) -> None:
        self.config = config or PrometheusSourceConfig()
        self._prom = prom
        self._queries = QueryList()
        self.cache = (
            cache
            if cache is not None
            else Cache(
                default_ttl=self.config.default_ttl,
                cleanup_interval=self.config.cache_cleanup_interval,
                maxsize=self.config.cache_maxsize,
            )
        )
        self._clock = clock
        self._on_query = on_query
        self._pass_timeout = _accepts_timeout(prom)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._stats_lock = threading.Lock()
        self._outcomes: dict[QueryOutcome, int] = dict.fromkeys(QueryOutcome, 0)
        self._retries = 0
        self._hits = 0
        self._misses = 0

    # --- MetricsSource -------------------------------------------------------------------------

    def query_list(self) -> QueryList:
        return self._queries

    async def refresh(self, spec: RefreshSpec) -> dict[str, MetricResult]:
        """Run the spec's queries concurrently; one result per distinct name, errors included."""
        names = list(dict.fromkeys(spec.queries)) or self._queries.names()
        if not names:
            return {}
        params = dict(spec.params)
        logger.debug("Refreshing queries: names=%s params=%s", names, params)
        results = await asyncio.gather(*(self._run(name, params, spec.cache) for name in names))
        return dict(zip(names, results, strict=True))

    def get(self, query_name: str, params: Mapping[str, str] | None = None) -> CachedValue | None:
        key = build_cache_key(query_name, params)
        cached = self.cache.get(key)
        with self._stats_lock:
            if cached is None:
                self._misses += 1
            else:
                self._hits += 1
        if cached is None:
            logger.debug("Cache miss: key=%s", key)
        else:
            logger.debug("Cache hit: key=%s", key)
        return cached

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.cache.start()

    async def stop(self) -> None:
        await self.cache.stop()
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def stats(self) -> SourceStats:
        with self._stats_lock:
            return SourceStats(
                queries=dict(self._outcomes),
                retries=self._retries,
                cache_hits=self._hits,
                cache_misses=self._misses,
            )

    # --- internals -----------------------------------------------------------------------------

    async def _run(self, name: str, params: dict[str, str], cache: bool = True) -> MetricResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            query = self._queries.build(name, params)
        except (LookupError, ValueError) as exc:
            result = self._failure(name, f"failed to build query: {exc}")
            outcome = QueryOutcome.INVALID
        else:
            try:
                values = await self._execute(query)
            except _QueryFailed as exc:
                result = self._failure(name, f"query execution failed: {exc}")
                outcome = exc.outcome
            except Exception as exc:  # a bug or an unexpected client error: still one result
                logger.exception("Query failed unexpectedly: query=%s", name)
                result = self._failure(name, f"query execution failed: {_describe(exc)}")
                outcome = QueryOutcome.ERROR
            else:
                result = MetricResult(query_name=name, values=values, collected_at=self._clock())
                outcome = QueryOutcome.SUCCESS
        if cache:
            key = build_cache_key(name, params)
            self.cache.set(key, result)
            logger.debug("Query result cached: key=%s outcome=%s values=%d", key, outcome, len(result.values))
        self._record(name, outcome, loop.time() - started)
        return result

    def _failure(self, name: str, message: str) -> MetricResult:
        logger.warning("Query failed: query=%s error=%s", name, message)
        return MetricResult(query_name=name, values=[], collected_at=self._clock(), error=message)

    async def _execute(self, query: str) -> list[MetricValue]:
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.query_timeout
        last_error: BaseException | None = None
        try:
            async with asyncio.timeout_at(deadline):
                for attempt in range(1, cfg.retry_max_attempts + 1):
                    try:
                        data = await self._call(query, max(deadline - loop.time(), 0.001))
                    except Exception as exc:
                        last_error = exc
                        if not is_transient_error(exc):
                            raise _QueryFailed(_describe(exc), QueryOutcome.ERROR) from exc
                    else:
                        return parse_query_result(data)
                    delay = self._backoff(attempt)
                    if attempt == cfg.retry_max_attempts or loop.time() + delay >= deadline:
                        break  # no time or attempts left: report the last error now
                    with self._stats_lock:
                        self._retries += 1
                    logger.debug(
                        "Retrying query: attempt=%d delay=%.3fs error=%s", attempt, delay, last_error
                    )
                    await asyncio.sleep(delay)
        except TimeoutError:
            if loop.time() < deadline:
                raise  # not our deadline
            suffix = f" (last error: {_describe(last_error)})" if last_error is not None else ""
            raise _QueryFailed(
                f"timed out after {cfg.query_timeout:g}s{suffix}", QueryOutcome.TIMEOUT
            ) from None
        assert last_error is not None
        raise _QueryFailed(_describe(last_error), QueryOutcome.ERROR) from last_error

    def _backoff(self, attempt: int) -> float:
        cfg = self.config
        base = cfg.retry_initial * cfg.retry_factor ** (attempt - 1)
        return base * (1.0 + random.random() * cfg.retry_jitter)

    async def _call(self, query: str, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        call: Callable[[], Any]
        if self._pass_timeout:
            call = functools.partial(self._prom.custom_query, query, timeout=timeout)  # type: ignore[call-arg]
        else:
            call = functools.partial(self._prom.custom_query, query)
        async with self._semaphore(loop):
            return await loop.run_in_executor(self._get_executor(), call)

    def _semaphore(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        # asyncio primitives bind to one loop; keep one per loop so a source outlives a loop.
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            self._semaphores = {lp: s for lp, s in self._semaphores.items() if not lp.is_closed()}
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.config.max_concurrency)
        return semaphore

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.config.max_concurrency, thread_name_prefix="wva-prometheus"
                )
            return self._executor

    def _record(self, name: str, outcome: QueryOutcome, duration: float) -> None:
        with self._stats_lock:
            self._outcomes[outcome] += 1
        if self._on_query is not None:
            try:
                self._on_query(name, outcome, duration)
            except Exception:
                logger.exception("Query hook failed: query=%s", name)


def _accepts_timeout(prom: object) -> bool:
    """Whether ``prom.custom_query`` takes a ``timeout`` keyword (PrometheusConnect >= 0.5.5 does)."""
    try:
        parameters = inspect.signature(prom.custom_query).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
    return "timeout" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
