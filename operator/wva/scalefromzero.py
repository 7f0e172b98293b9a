"""Scale from zero: a fast poller that brings a model at zero replicas back when the gateway queues for it.

A model with no replica cannot produce the vLLM metrics the engine decides from, so the engine alone
would never scale it up again. The gateway's Endpoint Picker (EPP) still sees its requests: with flow
control on they wait in its queue (see :mod:`wva.collector.v2.epp`). :class:`ScaleFromZeroPoller`
polls that queue every ``interval`` (``WVA_SCALE_FROM_ZERO_INTERVAL``, default 250 ms) for every model
its ``models_at_zero`` callable lists, with one batched read for all of them, and when a model's queue
is above zero calls ``scale_up(namespace, deployment, 1)`` for the Deployment the callable named (the
cheapest variant's) once. It does not call again while that model is being brought up: the model is
debounced until the callable stops listing it. A failed call is retried after a backoff (1 s, doubling
up to 30 s).

It is cheap when nothing is at zero (no read at all) and never stops on bad input: a failing callable,
a failed or malformed read and a failing actuation are logged (once per change of error) and counted in
``wva_errors_total{component="scale_from_zero"}``, and the next poll runs on time.

Greppable log lines::

    Scale from zero: requests queued namespace=.. model=.. deployment=.. queue=..
    Scale from zero: scaled namespace=.. model=.. deployment=.. replicas=1 seconds=..
    Scale from zero: scale-up failed namespace=.. model=.. deployment=.. retry_in=..s error=..
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wva.collector.v2.epp import (
    EppQueryConfig,
    EppQueueReader,
    EppScrapeOutcome,
    EppScrapingConfig,
    EppScrapingSource,
    EppTarget,
    ModelKey,
    PrometheusEppSource,
    QueueReading,
)
from wva.collector.v2.prometheus import PrometheusQueryClient, QueryOutcome
from wva.tasks import cancel_and_wait

if TYPE_CHECKING:
    from wva.actuator.metrics import OperatorMetrics
    from wva.settings import Settings

__all__ = [
    "DEFAULT_INTERVAL",
    "ModelsAtZero",
    "PollResult",
    "PollerStats",
    "ScaleFromZeroPoller",
    "ScaleUp",
    "ZeroModel",
    "epp_source_from_settings",
    "poller_from_settings",
]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.25
COMPONENT = "scale_from_zero"


@dataclass(frozen=True, slots=True)
class ZeroModel:
    """A model at zero replicas and the Deployment to bring up (its cheapest variant's)."""

    namespace: str
    model_id: str
    deployment: str
    variant: str = ""

    @property
    def key(self) -> ModelKey:
        return (self.namespace, self.model_id)


ZeroEntry = ZeroModel | tuple[str, str, str]
ModelsAtZero = Callable[[], Iterable[ZeroEntry] | Awaitable[Iterable[ZeroEntry]]]
"""Returns the models at zero now (sync or async): ZeroModel or (namespace, model_id, deployment)."""

ScaleUp = Callable[[str, str, int], Awaitable[object]]
"""``await scale_up(namespace, deployment, replicas)``; raising means the scale-up failed."""


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll did. ``read`` is False when nothing needed reading (no query was made)."""

    at_zero: int = 0
    read: bool = False
    triggered: tuple[ModelKey, ...] = ()
    readings: tuple[QueueReading, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class PollerStats:
    polls: int = 0
    reads: int = 0
    read_errors: int = 0
    triggered: int = 0
    scaled: int = 0
    failed: int = 0


@dataclass(slots=True)
class _Wake:
    model: ZeroModel
    started: float
    task: asyncio.Task[None] | None = None
    done: bool = False


class ScaleFromZeroPoller:
    """Polls the EPP queue of the models at zero and scales each one to 1 replica when it queues.

    ``reader``: an EPP source (:class:`~wva.collector.v2.epp.PrometheusEppSource`,
    :class:`~wva.collector.v2.epp.EppScrapingSource`, or anything with ``read_queues``).
    ``read_timeout`` bounds one read (default ``max(1 s, 4 x interval)``); ``actuation_timeout`` one
    ``scale_up`` call. ``metrics``: the emitter's :class:`~wva.actuator.metrics.OperatorMetrics`.
    ``clock`` (seconds) times backoffs and latencies; default: the running loop's clock.
    """

    def __init__(
        self,
        reader: EppQueueReader,
        models_at_zero: ModelsAtZero,
        scale_up: ScaleUp,
        *,
        interval: float = DEFAULT_INTERVAL,
        read_timeout: float | None = None,
        actuation_timeout: float = 10.0,
        retry_backoff: float = 1.0,
        max_retry_backoff: float = 30.0,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if read_timeout is not None and not read_timeout > 0:
            raise ValueError(f"read_timeout must be > 0, got {read_timeout!r}")
        if not actuation_timeout > 0 or not retry_backoff > 0 or max_retry_backoff < retry_backoff:
            raise ValueError("actuation_timeout and retry_backoff must be > 0 and max_retry_backoff >= retry_backoff")
        self.reader = reader
        self.models_at_zero = models_at_zero
        self.scale_up = scale_up
        self.interval = float(interval)
        self.read_timeout = read_timeout if read_timeout is not None else max(1.0, 4 * self.interval)
        self.actuation_timeout = actuation_timeout
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.metrics = metrics
        self._clock = clock
        self._wakes: dict[ModelKey, _Wake] = {}
        self._failures: dict[ModelKey, tuple[int, float]] = {}  # key -> (failures in a row, retry at)
        self._task: asyncio.Task[None] | None = None
        self._problems: dict[str, str] = {}
        self.stats = PollerStats()

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start polling in a background task (no-op if running). The first poll runs at once."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="wva-scale-from-zero")
        logger.info("Scale from zero: poller started interval=%.3fs", self.interval)

    async def stop(self) -> None:
        """Stop polling and cancel scale-ups still in flight. Safe to call more than once."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        pending = [w.task for w in self._wakes.values() if w.task is not None and not w.task.done()]
        for wake_task in pending:
            await cancel_and_wait(wake_task)
        for key in [k for k, w in self._wakes.items() if w.task is not None and w.task.cancelled()]:
            del self._wakes[key]  # never finished: a restarted poller may try again
        if task is not None:
            logger.info("Scale from zero: poller stopped")

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def in_progress(self) -> set[ModelKey]:
        """Models being brought up (debounced until ``models_at_zero`` no longer lists them)."""
        return set(self._wakes)

    # --- polling -------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # poll_once handles its own errors; this is the last line of defence
                logger.exception("Scale from zero: poll failed unexpectedly")
            next_at += self.interval
            now = loop.time()
            if next_at < now:
                next_at = now  # a slow poll: run the next one now, never a burst to catch up
            await asyncio.sleep(next_at - now)

    async def poll_once(self) -> PollResult:
        """One poll: list the models at zero, read their queues in one batch, scale up the queued ones."""
        self.stats.polls += 1
        try:
            listed = await self._list_models()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"[:500]
            self._problem("models", "listing the models at zero failed", message)
            self._count_error("models")
            return PollResult(error=message)
        self._resolved("models", "listing the models at zero works again")
        self._forget_unlisted(listed)
        self._set_gauge(len(listed))
        now = self._now()
        candidates = [
            key for key in listed if key not in self._wakes and self._failures.get(key, (0, 0.0))[1] <= now
        ]
        if not candidates:
            return PollResult(at_zero=len(listed))
        readings = await self._read(candidates)
        if readings is None:
            return PollResult(at_zero=len(listed), read=True, error=self._problems.get("read"))
        triggered = []
        for key in candidates:
            reading = readings.get(key)
            if reading is not None and reading.pending:
                self._trigger(listed[key], reading)
                triggered.append(key)
        ordered = tuple(readings[k] for k in candidates if k in readings)
        return PollResult(at_zero=len(listed), read=True, triggered=tuple(triggered), readings=ordered)

    async def _list_models(self) -> dict[ModelKey, ZeroModel]:
        raw: Any = self.models_at_zero()
        if inspect.isawaitable(raw):
            raw = await raw
        if raw is None:
            return {}
        listed: dict[ModelKey, ZeroModel] = {}
        bad: list[str] = []
        for item in raw:
            model = _zero_model(item)
            if model is None:
                bad.append(repr(item)[:100])
                continue
            listed.setdefault(model.key, model)  # the first entry of a model wins
        if bad:
            self._problem("entries", "ignoring invalid models-at-zero entries", ", ".join(bad[:3]))
        else:
            self._resolved("entries", None)
        return listed

    async def _read(self, keys: list[ModelKey]) -> dict[ModelKey, QueueReading] | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stats.reads += 1
        try:
            async with asyncio.timeout(self.read_timeout):
                readings = await self.reader.read_queues(keys)
            if not isinstance(readings, dict):
                raise TypeError(f"read_queues returned {type(readings).__name__}, not a dict")
        except TimeoutError:
            self._read_failed(f"timed out after {self.read_timeout:g}s")
            return None
        except Exception as exc:
            self._read_failed(f"{type(exc).__name__}: {exc}"[:500])
            return None
        finally:
            if self.metrics is not None:
                self.metrics.scale_from_zero_poll_duration.observe(loop.time() - started)
        self._resolved("read", "reading the EPP queue works again")
        valid = {}
        for key in keys:
            reading = readings.get(key)
            if isinstance(reading, QueueReading):
                valid[key] = reading
        return valid

    def _read_failed(self, message: str) -> None:
        self.stats.read_errors += 1
        self._problem("read", "reading the EPP queue failed", message)
        self._count_error("read")

    def _forget_unlisted(self, listed: dict[ModelKey, ZeroModel]) -> None:
        """A model no longer at zero ends its debounce (once its scale-up call has finished)."""
        for key in [k for k, wake in self._wakes.items() if k not in listed and wake.done]:
            del self._wakes[key]
        for key in [k for k in self._failures if k not in listed]:
            del self._failures[key]

    # --- actuation -----------------------------------------------------------------------------

    def _trigger(self, model: ZeroModel, reading: QueueReading) -> None:
        assert reading.value is not None
        logger.info(
            "Scale from zero: requests queued namespace=%s model=%s deployment=%s queue=%g",
            model.namespace, model.model_id, model.deployment, reading.value,
        )
        self.stats.triggered += 1
        wake = _Wake(model, self._now())
        self._wakes[model.key] = wake
        wake.task = asyncio.create_task(self._actuate(wake), name=f"wva-scale-from-zero-{model.deployment}")

    async def _actuate(self, wake: _Wake) -> None:
        model = wake.model
        try:
            async with asyncio.timeout(self.actuation_timeout):
                await self.scale_up(model.namespace, model.deployment, 1)
        except asyncio.CancelledError:
            wake.done = True
            raise
        except Exception as exc:
            error = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:500]
            failures = self._failures.get(model.key, (0, 0.0))[0] + 1
            delay = min(self.retry_backoff * 2 ** (failures - 1), self.max_retry_backoff)
            self._failures[model.key] = (failures, self._now() + delay)
            self._wakes.pop(model.key, None)  # retried by a later poll once the backoff has passed
            self.stats.failed += 1
            logger.warning(
                "Scale from zero: scale-up failed namespace=%s model=%s deployment=%s retry_in=%gs error=%s",
                model.namespace, model.model_id, model.deployment, delay, error,
            )
            self._count(model, "failed")
            self._count_error("actuation")
            return
        wake.done = True
        self._failures.pop(model.key, None)
        self.stats.scaled += 1
        logger.info(
            "Scale from zero: scaled namespace=%s model=%s deployment=%s replicas=1 seconds=%.3f",
            model.namespace, model.model_id, model.deployment, self._now() - wake.started,
        )
        self._count(model, "scaled")

    # --- reporting -----------------------------------------------------------------------------

    def _problem(self, kind: str, what: str, detail: str) -> None:
        if self._problems.get(kind) != detail:
            logger.warning("Scale from zero: %s error=%s", what, detail)
            self._problems[kind] = detail
        else:
            logger.debug("Scale from zero: %s error=%s", what, detail)

    def _resolved(self, kind: str, message: str | None) -> None:
        if self._problems.pop(kind, None) is not None and message:
            logger.info("Scale from zero: %s", message)

    def _count(self, model: ZeroModel, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.scale_from_zero.labels(model.namespace, model.model_id, outcome).inc()

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(COMPONENT, kind).inc()

    def _set_gauge(self, count: int) -> None:
        if self.metrics is not None:
            self.metrics.scale_from_zero_models.set(count)


def _zero_model(item: object) -> ZeroModel | None:
    if isinstance(item, ZeroModel):
        fields: tuple[object, ...] = (item.namespace, item.model_id, item.deployment)
        model = item
    elif isinstance(item, tuple) and len(item) == 3:
        fields = item
        model = None
    else:
        return None
    if not all(isinstance(f, str) and f for f in fields):
        return None
    if model is None:
        namespace, model_id, deployment = fields
        assert isinstance(namespace, str) and isinstance(model_id, str) and isinstance(deployment, str)
        model = ZeroModel(namespace, model_id, deployment)
    return model


# --- construction from settings ------------------------------------------------------------------------


def epp_source_from_settings(
    settings: Settings,
    prom: PrometheusQueryClient | None = None,
    *,
    metrics: OperatorMetrics | None = None,
) -> PrometheusEppSource | EppScrapingSource | None:
    """The EPP source ``WVA_EPP_METRICS_SOURCE`` selects (None for ``off``).

    ``prom`` (a ready ``PrometheusConnect``, without retries of its own) is required for
    ``prometheus``. Start the source (``await source.start()``) before polling and stop it after.
    """
    from wva.settings import EppMetricsSourceMode

    mode = settings.epp_metrics_source
    if mode is EppMetricsSourceMode.OFF:
        return None
    query_config = EppQueryConfig(
        metric=settings.epp_queue_metric,
        model_label=settings.epp_model_label,
        namespace_label=settings.epp_namespace_label,
    )
    if mode is EppMetricsSourceMode.PROMETHEUS:
        if prom is None:
            raise ValueError("WVA_EPP_METRICS_SOURCE=prometheus needs a Prometheus client")

        def on_query(_name: str, outcome: QueryOutcome, seconds: float) -> None:
            if metrics is not None:
                metrics.queries.labels("epp", str(outcome)).inc()
                metrics.query_latency.labels("epp").observe(seconds)

        return PrometheusEppSource(prom, query_config=query_config, on_query=on_query)

    def on_scrape(outcome: EppScrapeOutcome, seconds: float) -> None:
        if metrics is not None:
            metrics.queries.labels("epp", str(outcome)).inc()
            metrics.query_latency.labels("epp").observe(seconds)
            if outcome is not EppScrapeOutcome.OK:
                metrics.errors.labels("epp_scraping", str(outcome)).inc()

    targets = [EppTarget(url, namespace) for namespace, url in settings.epp_metrics_urls]
    config = EppScrapingConfig(token_path=settings.epp_metrics_token_path)
    return EppScrapingSource(targets, config, query_config=query_config, on_scrape=on_scrape)


def poller_from_settings(
    settings: Settings,
    reader: EppQueueReader,
    models_at_zero: ModelsAtZero,
    scale_up: ScaleUp,
    *,
    metrics: OperatorMetrics | None = None,
) -> ScaleFromZeroPoller:
    """A poller at ``WVA_SCALE_FROM_ZERO_INTERVAL``."""
    return ScaleFromZeroPoller(
        reader, models_at_zero, scale_up, interval=settings.scale_from_zero_interval, metrics=metrics
    )
