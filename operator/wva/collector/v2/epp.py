"""The gateway's Endpoint Picker (EPP) flow-control queue: the signal that wakes a model at zero replicas.

With flow control enabled, the EPP of the Gateway API Inference Extension holds requests it cannot
dispatch yet in a queue and exports its depth as the gauge ``inference_extension_flow_control_queue_size``
with the labels ``fairness_id``, ``priority``, ``inference_pool``, ``model_name`` and
``target_model_name`` (llm-d's EPP also exports the same family as
``llm_d_epp_flow_control_queue_size``). A model with no replica cannot serve, so its requests wait
there: a queue above zero for a model at zero replicas means "bring one replica up now".

Two sources answer the same query names with the same shapes (so a caller cannot tell them apart):

- :class:`PrometheusEppSource`: PromQL against Prometheus, one batched query for every model,
  ``sum by (target_model_name, namespace) (inference_extension_flow_control_queue_size)``;
- :class:`EppScrapingSource`: the EPP pods' ``/metrics`` read directly (configured URLs), parsed with
  the exposition parser of pod scraping and summed the same way.

The series carry no namespace of their own (the EPP does not add one); in Prometheus the scrape
target's ``namespace`` label (the EPP's namespace) is used, and a series without the label matches a
model of that name in every namespace. Label and metric names are configurable
(:class:`EppQueryConfig`).

Every model's queue is in one of three states: a number above zero (``PENDING``), a confirmed zero
(``EMPTY``), or ``UNKNOWN`` (no series for the model, the query or every scrape failed, a NaN or
negative value). Unknown is never zero, and only ``PENDING`` wakes a model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import aiohttp

from wva.collector import promql
from wva.collector.v2.cache import Cache, CachedValue, build_cache_key
from wva.collector.v2.exposition import Sample, parse_exposition
from wva.collector.v2.prometheus import PrometheusQueryClient, PrometheusSource, PrometheusSourceConfig, QueryHook
from wva.collector.v2.query import QueryList, QueryTemplate, QueryType
from wva.collector.v2.results import MetricResult, MetricValue, RefreshSpec
from wva.tokens import TokenFile

__all__ = [
    "EPP_POOL_SATURATION",
    "EPP_QUEUE_SIZE",
    "EPP_SOURCE_NAME",
    "LABEL_INFERENCE_POOL",
    "LABEL_TARGET_MODEL_NAME",
    "LLMD_EPP_QUEUE_SIZE",
    "PROMETHEUS_EPP_CONFIG",
    "Q_EPP_QUEUE_SIZE",
    "Q_EPP_QUEUE_SIZE_ALL",
    "EppMetricResult",
    "EppQueryConfig",
    "EppQueueReader",
    "EppScrapeOutcome",
    "EppScrapingConfig",
    "EppScrapingSource",
    "EppTarget",
    "ModelKey",
    "PrometheusEppSource",
    "QueueReading",
    "QueueState",
    "epp_query_templates",
    "epp_samples",
    "queue_readings",
    "register_epp_queries",
]

logger = logging.getLogger(__name__)

EPP_SOURCE_NAME = "epp"
"""The name the EPP source is registered under in a :class:`~wva.collector.v2.SourceRegistry`."""

EPP_QUEUE_SIZE = "inference_extension_flow_control_queue_size"
LLMD_EPP_QUEUE_SIZE = "llm_d_epp_flow_control_queue_size"
EPP_POOL_SATURATION = "inference_extension_flow_control_pool_saturation"
"""Per ``inference_pool`` only (no model label): documented, not used to wake a model."""

LABEL_TARGET_MODEL_NAME = "target_model_name"
LABEL_INFERENCE_POOL = "inference_pool"

Q_EPP_QUEUE_SIZE = "epp_queue_size"
"""One model's queued requests (params ``modelID`` and, with a namespace label, ``namespace``)."""
Q_EPP_QUEUE_SIZE_ALL = "epp_queue_size_all"
"""Every model's queued requests in one answer: one value per (model, namespace), no params."""

_METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ModelKey = tuple[str, str]
"""(namespace, model ID)."""


@dataclass(frozen=True, slots=True)
class EppQueryConfig:
    """Which series is the queue and which labels name its model and namespace.

    ``namespace_label`` empty: the series carry no namespace, a model's queue is matched by its name
    alone (in every namespace). Names are validated, so they can never inject PromQL.
    """

    metric: str = EPP_QUEUE_SIZE
    model_label: str = LABEL_TARGET_MODEL_NAME
    namespace_label: str = promql.LABEL_NAMESPACE

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.metric):
            raise ValueError(f"metric must be a Prometheus metric name, got {self.metric!r}")
        if not _LABEL_NAME.match(self.model_label) or self.model_label.startswith("__"):
            raise ValueError(f"model_label must be a Prometheus label name, got {self.model_label!r}")
        if self.namespace_label and (
            not _LABEL_NAME.match(self.namespace_label) or self.namespace_label.startswith("__")
        ):
            raise ValueError(f"namespace_label must be a Prometheus label name or empty, got {self.namespace_label!r}")
        if self.namespace_label == self.model_label:
            raise ValueError("model_label and namespace_label must differ")

    @property
    def group_labels(self) -> tuple[str, ...]:
        return (self.model_label, self.namespace_label) if self.namespace_label else (self.model_label,)


def epp_query_templates(config: EppQueryConfig | None = None) -> tuple[QueryTemplate, QueryTemplate]:
    """(per-model, batched) templates. Only the per-model one takes values, and those are escaped."""
    cfg = config or EppQueryConfig()
    matchers = f'{cfg.model_label}="{{{{.{promql.PARAM_MODEL_ID}}}}}"'
    params: tuple[str, ...] = (promql.PARAM_MODEL_ID,)
    if cfg.namespace_label:
        matchers += f',{cfg.namespace_label}="{{{{.{promql.PARAM_NAMESPACE}}}}}"'
        params = (promql.PARAM_NAMESPACE, promql.PARAM_MODEL_ID)
    per_model = QueryTemplate(
        name=Q_EPP_QUEUE_SIZE,
        type=QueryType.PROMQL,
        template=f"sum({cfg.metric}{{{matchers}}})",
        params=params,
        description="Requests held in the EPP flow-control queue for one model",
    )
    batched = QueryTemplate(
        name=Q_EPP_QUEUE_SIZE_ALL,
        type=QueryType.PROMQL,
        template=f"sum by ({', '.join(cfg.group_labels)}) ({cfg.metric})",
        params=(),
        description="Requests held in the EPP flow-control queue, per model and namespace, for every model",
    )
    return per_model, batched


def register_epp_queries(query_list: QueryList, config: EppQueryConfig | None = None) -> None:
    """Register both templates (idempotent; a different template under one of the names is a ValueError)."""
    for template in epp_query_templates(config):
        existing = query_list.get(template.name)
        if existing is None:
            try:
                query_list.register(template)
                continue
            except ValueError:  # registered concurrently; compare below
                existing = query_list.get(template.name)
        if existing != template:
            raise ValueError(f"query {template.name!r} already registered with a different template")


# --- tri-state readings ----------------------------------------------------------------------------


class QueueState(StrEnum):
    PENDING = "pending"  # requests are queued
    EMPTY = "empty"  # a confirmed zero
    UNKNOWN = "unknown"  # no series, failed read, NaN or negative: never taken as zero


@dataclass(frozen=True, slots=True)
class QueueReading:
    """One model's queue. ``value`` is None when unknown; ``reason`` then says why."""

    namespace: str
    model_id: str
    value: float | None
    reason: str = ""

    @property
    def state(self) -> QueueState:
        if self.value is None:
            return QueueState.UNKNOWN
        return QueueState.PENDING if self.value > 0 else QueueState.EMPTY

    @property
    def pending(self) -> bool:
        return self.value is not None and self.value > 0


@dataclass(frozen=True, slots=True)
class EppMetricResult(MetricResult):
    """A :class:`MetricResult` that also lists the EPP endpoints that failed (URL -> error).

    With some endpoints failed, a model found nowhere, or found only with zero, is unknown: the
    failed endpoint may hold its requests. A value above zero is still a real (lower-bound) reading.
    """

    target_errors: Mapping[str, str] = field(default_factory=dict)


def _group(values: Iterable[MetricValue], config: EppQueryConfig) -> tuple[dict[ModelKey, float], dict[ModelKey, str]]:
    """Sum of valid values per (namespace, model); invalid (NaN/Inf/negative) ones noted per key."""
    totals: dict[ModelKey, float] = defaultdict(float)
    invalid: dict[ModelKey, str] = {}
    for v in values:
        labels = v.labels if isinstance(v.labels, Mapping) else {}
        model = labels.get(config.model_label)
        if not isinstance(model, str) or not model:
            continue
        namespace = labels.get(config.namespace_label, "") if config.namespace_label else ""
        key = (namespace if isinstance(namespace, str) else "", model)
        value = v.value
        if not v.finite or not isinstance(value, int | float) or not math.isfinite(value):
            invalid[key] = "the queue size is NaN or infinite"
        elif value < 0:
            invalid[key] = f"the queue size is negative ({value:g})"
        else:
            totals[key] += float(value)
    return totals, invalid


def queue_readings(
    result: MetricResult, models: Iterable[ModelKey], config: EppQueryConfig | None = None
) -> dict[ModelKey, QueueReading]:
    """Split a :data:`Q_EPP_QUEUE_SIZE_ALL` answer into one tri-state reading per requested model.

    A model's value is the sum of its series in its namespace and of its series without a namespace.
    It is unknown when the result has an error, when no series names the model, when every series of
    the model is invalid, or when it reads 0 but some endpoints of an :class:`EppMetricResult` failed.
    """
    cfg = config or EppQueryConfig()
    wanted = list(dict.fromkeys(models))
    if result.error is not None:
        return {key: QueueReading(key[0], key[1], None, f"read failed: {result.error}") for key in wanted}
    totals, invalid = _group(result.values, cfg)
    target_errors = getattr(result, "target_errors", None) or {}
    readings: dict[ModelKey, QueueReading] = {}
    for namespace, model in wanted:
        keys = [(namespace, model)] if not namespace else [(namespace, model), ("", model)]
        found = [k for k in keys if k in totals]
        bad = [invalid[k] for k in keys if k in invalid]
        total = sum(totals[k] for k in found)
        if total > 0:
            readings[(namespace, model)] = QueueReading(namespace, model, total)
        elif bad:
            readings[(namespace, model)] = QueueReading(namespace, model, None, bad[0])
        elif not found:
            reason = f"no {cfg.metric} series for the model"
            readings[(namespace, model)] = QueueReading(namespace, model, None, reason)
        elif target_errors:
            reason = f"{len(target_errors)} EPP endpoint(s) failed, so 0 is not confirmed"
            readings[(namespace, model)] = QueueReading(namespace, model, None, reason)
        else:
            readings[(namespace, model)] = QueueReading(namespace, model, 0.0)
    return readings


class EppQueueReader(Protocol):
    """What the scale-from-zero poller needs: every requested model's queue, in one batched read."""

    async def read_queues(self, models: Collection[ModelKey]) -> dict[ModelKey, QueueReading]: ...


# --- Prometheus -------------------------------------------------------------------------------------

PROMETHEUS_EPP_CONFIG = PrometheusSourceConfig(
    default_ttl=5.0,
    query_timeout=2.0,
    max_concurrency=2,
    retry_initial=0.05,
    retry_max_attempts=2,
    cache_maxsize=1000,
)
"""A fast poller's settings: a short deadline and one quick retry (the next poll is the real retry)."""


class PrometheusEppSource(PrometheusSource):
    """A :class:`PrometheusSource` with the EPP queries registered, plus :meth:`read_queues`."""

    def __init__(
        self,
        prom: PrometheusQueryClient,
        config: PrometheusSourceConfig | None = None,
        *,
        query_config: EppQueryConfig | None = None,
        cache: Cache | None = None,
        clock: Callable[[], float] = time.time,
        on_query: QueryHook | None = None,
    ) -> None:
        super().__init__(prom, config or PROMETHEUS_EPP_CONFIG, cache=cache, clock=clock, on_query=on_query)
        self.query_config = query_config or EppQueryConfig()
        register_epp_queries(self.query_list(), self.query_config)

    async def read_queues(self, models: Collection[ModelKey]) -> dict[ModelKey, QueueReading]:
        """One batched query for every model (none at all when ``models`` is empty)."""
        if not models:
            return {}
        results = await self.refresh(RefreshSpec(queries=[Q_EPP_QUEUE_SIZE_ALL]))
        return queue_readings(results[Q_EPP_QUEUE_SIZE_ALL], models, self.query_config)


# --- direct scraping ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EppTarget:
    """One EPP metrics endpoint. ``namespace``: the namespace its series belong to ("" = from the
    series' namespace label if any, else every namespace)."""

    url: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class EppScrapingConfig:
    """Durations in seconds; sizes in bytes."""

    scrape_timeout: float = 1.0
    max_concurrency: int = 8
    max_body_bytes: int = 10 * 1024 * 1024
    default_ttl: float = 5.0
    token_path: str | None = None
    verify_tls: bool = True
    ca_cert_path: str | None = None

    def __post_init__(self) -> None:
        if not self.scrape_timeout > 0:
            raise ValueError(f"scrape_timeout must be > 0, got {self.scrape_timeout}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")


class EppScrapeOutcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    PARSE_ERROR = "parse_error"
    CONNECT_ERROR = "connect_error"


class _ScrapeError(Exception):
    def __init__(self, outcome: EppScrapeOutcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


ScrapeHook = Callable[[EppScrapeOutcome, float], None]
"""Called after every endpoint scrape with (outcome, duration in seconds)."""


def epp_samples(text: str, metric: str) -> list[Sample]:
    """The samples of ``metric`` in an exposition text, parsed with the pod-scraping parser.

    Only the metric's own sample lines are handed to the parser, so the cost does not grow with the
    rest of the document (an EPP exports many histograms). ValueError when those lines are malformed.
    """
    prefixes = (metric + "{", metric + " ", metric + "\t")
    lines = [line for line in text.splitlines() if line.startswith(prefixes)]
    if not lines:
        return []
    return [s for s in parse_exposition("\n".join(lines) + "\n") if s.name == metric]


class EppScrapingSource:
    """Reads the queue from the EPP pods' metrics endpoints directly; answers the EPP query names.

    Every refresh scrapes every target once (concurrently, bounded in time and size) and answers
    :data:`Q_EPP_QUEUE_SIZE_ALL` (one value per model and namespace, labelled as Prometheus'
    ``sum by`` would label it) and :data:`Q_EPP_QUEUE_SIZE` (params ``modelID`` and ``namespace``).
    A failed endpoint costs only its own series: the result lists it in ``target_errors``; when every
    endpoint fails the result carries an error.
    """

    def __init__(
        self,
        targets: Sequence[EppTarget],
        config: EppScrapingConfig | None = None,
        *,
        query_config: EppQueryConfig | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_scrape: ScrapeHook | None = None,
        cache: Cache | None = None,
    ) -> None:
        if not targets:
            raise ValueError("at least one EPP metrics target is required")
        self.targets = tuple(dict.fromkeys(targets))
        self.config = config or EppScrapingConfig()
        self.query_config = query_config or EppQueryConfig()
        self._queries = QueryList()
        register_epp_queries(self._queries, self.query_config)
        self._wall = wall_clock
        self._on_scrape = on_scrape
        self.cache = cache if cache is not None else Cache(default_ttl=self.config.default_ttl, maxsize=1000)
        self._token = TokenFile(self.config.token_path, "EPP metrics") if self.config.token_path else None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._last_error: dict[str, str] = {}
        self.outcomes: dict[EppScrapeOutcome, int] = dict.fromkeys(EppScrapeOutcome, 0)

    # --- MetricsSource -------------------------------------------------------------------------

    def query_list(self) -> QueryList:
        return self._queries

    def get(self, query_name: str, params: Mapping[str, str] | None = None) -> CachedValue | None:
        return self.cache.get(build_cache_key(query_name, params))

    async def refresh(self, spec: RefreshSpec) -> dict[str, MetricResult]:
        names = list(dict.fromkeys(spec.queries)) or self._queries.names()
        if not names:
            return {}
        params = dict(spec.params)
        grouped, errors = await self._scrape_all()
        now = self._wall()
        results: dict[str, MetricResult] = {}
        for name in names:
            result = self._answer(name, params, grouped, errors, now)
            self.cache.set(build_cache_key(name, params), result)
            results[name] = result
        return results

    async def read_queues(self, models: Collection[ModelKey]) -> dict[ModelKey, QueueReading]:
        """One scrape of every endpoint for every model (none at all when ``models`` is empty)."""
        if not models:
            return {}
        results = await self.refresh(RefreshSpec(queries=[Q_EPP_QUEUE_SIZE_ALL]))
        return queue_readings(results[Q_EPP_QUEUE_SIZE_ALL], models, self.query_config)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.cache.start()

    async def stop(self) -> None:
        await self.cache.stop()
        session, self._session = self._session, None
        self._session_loop = None
        if session is not None and not session.closed:
            await session.close()

    # --- answering -----------------------------------------------------------------------------

    def _answer(
        self,
        name: str,
        params: Mapping[str, str],
        grouped: Mapping[ModelKey, float] | None,
        errors: Mapping[str, str],
        now: float,
    ) -> MetricResult:
        if name not in (Q_EPP_QUEUE_SIZE, Q_EPP_QUEUE_SIZE_ALL):
            return EppMetricResult(name, [], now, f"query {name!r} is not supported by the EPP scraping source")
        if name == Q_EPP_QUEUE_SIZE:
            template = self._queries.get(name)
            missing = [p for p in (template.params if template else ()) if not params.get(p)]
            if missing:
                message = f"failed to build query: missing required parameter {missing[0]!r}"
                return EppMetricResult(name, [], now, message)
        if grouped is None:
            detail = "; ".join(f"{url}: {err}" for url, err in sorted(errors.items())[:5])
            return EppMetricResult(name, [], now, f"all {len(errors)} EPP scrapes failed: {detail}", dict(errors))
        cfg = self.query_config
        if name == Q_EPP_QUEUE_SIZE_ALL:
            values = []
            for (namespace, model), total in sorted(grouped.items()):
                labels = {cfg.model_label: model}
                if cfg.namespace_label and namespace:
                    labels[cfg.namespace_label] = namespace
                values.append(MetricValue(total, now, labels))
            return EppMetricResult(name, values, now, target_errors=dict(errors))
        model = params[promql.PARAM_MODEL_ID]
        namespace = params.get(promql.PARAM_NAMESPACE, "") if cfg.namespace_label else ""
        keys = [k for k in grouped if k[1] == model and (not namespace or k[0] in (namespace, ""))]
        if not keys:
            return EppMetricResult(name, [], now, target_errors=dict(errors))  # PromQL: sum of nothing is empty
        summed = MetricValue(sum(grouped[k] for k in keys), now, {})
        return EppMetricResult(name, [summed], now, target_errors=dict(errors))

    # --- scraping ------------------------------------------------------------------------------

    async def _scrape_all(self) -> tuple[dict[ModelKey, float] | None, dict[str, str]]:
        """(sum per (namespace, model) over the endpoints that answered, URL -> error of the others).

        The sums follow PromQL: a NaN or negative sample makes its group NaN or lower, and the reading
        then says unknown. None instead of the sums when every endpoint failed.
        """
        outcomes = await asyncio.gather(*(self._scrape_one(t) for t in self.targets))
        errors: dict[str, str] = {}
        grouped: dict[ModelKey, float] = defaultdict(float)
        answered = 0
        cfg = self.query_config
        for target, outcome in zip(self.targets, outcomes, strict=True):
            if isinstance(outcome, str):
                errors[target.url] = outcome
                continue
            answered += 1
            for sample in outcome:
                model = sample.labels.get(cfg.model_label)
                if not model:
                    continue
                namespace = (sample.labels.get(cfg.namespace_label) if cfg.namespace_label else None) or ""
                if cfg.namespace_label and target.namespace:
                    namespace = target.namespace
                grouped[(namespace, model)] += sample.value
        return (dict(grouped) if answered else None), errors

    async def _scrape_one(self, target: EppTarget) -> list[Sample] | str:
        """The target's samples of the queue metric, or the error text."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = EppScrapeOutcome.OK
        try:
            samples = await self._fetch(target)
        except _ScrapeError as exc:
            outcome = exc.outcome
            result: list[Sample] | str = str(exc)
        except Exception as exc:  # a bug must cost one endpoint, not the poll
            outcome = EppScrapeOutcome.CONNECT_ERROR
            logger.exception("EPP scrape failed unexpectedly url=%s", target.url)
            result = f"{type(exc).__name__}: {exc}"[:300]
        else:
            result = samples
        self.outcomes[outcome] += 1
        previous = self._last_error.get(target.url)
        if isinstance(result, str):
            if previous != result:
                logger.warning("EPP scrape failed url=%s outcome=%s error=%s", target.url, outcome.value, result)
            self._last_error[target.url] = result
        elif previous is not None:
            logger.info("EPP scrape recovered url=%s", target.url)
            del self._last_error[target.url]
        if self._on_scrape is not None:
            try:
                self._on_scrape(outcome, loop.time() - started)
            except Exception:
                logger.exception("EPP scrape hook failed")
        return result

    async def _fetch(self, target: EppTarget) -> list[Sample]:
        cfg = self.config
        headers = {"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
        token = await asyncio.to_thread(self._token.get) if self._token is not None else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        session = self._get_session()
        try:
            async with asyncio.timeout(cfg.scrape_timeout):
                async with session.get(target.url, headers=headers, allow_redirects=False) as resp:
                    if resp.status != 200:
                        reason = " (check the metrics reader token)" if resp.status in (401, 403) else ""
                        raise _ScrapeError(EppScrapeOutcome.HTTP_ERROR, f"HTTP {resp.status}{reason}")
                    body = await _read_limited(resp, cfg.max_body_bytes)
        except TimeoutError:
            raise _ScrapeError(EppScrapeOutcome.TIMEOUT, f"timed out after {cfg.scrape_timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise _ScrapeError(EppScrapeOutcome.CONNECT_ERROR, f"request failed: {type(exc).__name__}: {exc}") from None
        try:
            return await asyncio.to_thread(_decode_samples, body, self.query_config.metric)
        except ValueError as exc:
            raise _ScrapeError(EppScrapeOutcome.PARSE_ERROR, str(exc)[:300]) from None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            cfg = self.config
            ssl_option: ssl.SSLContext | bool
            ssl_option = False if not cfg.verify_tls else ssl.create_default_context(cafile=cfg.ca_cert_path)
            connector = aiohttp.TCPConnector(limit=cfg.max_concurrency, ssl=ssl_option)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=cfg.scrape_timeout)
            )
            self._session_loop = loop
        return self._session


def _decode_samples(body: bytes, metric: str) -> list[Sample]:
    return epp_samples(body.decode("utf-8", errors="replace"), metric)


async def _read_limited(resp: Any, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise _ScrapeError(EppScrapeOutcome.TOO_LARGE, f"body of {resp.content_length} bytes exceeds {limit}")
    body = bytearray()
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise _ScrapeError(EppScrapeOutcome.TOO_LARGE, f"body exceeds {limit} bytes")
