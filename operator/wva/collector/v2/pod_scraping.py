"""``PodScrapingSource``: the collector-v2 source that reads vLLM pods' ``/metrics`` directly.

It answers the same query names as :class:`~wva.collector.v2.PrometheusSource` (``kv_cache_usage``,
``queue_length``, the optimizer metrics and the availability check), with the same shapes, so the
collectors and the engine cannot tell which source served them:

- saturation queries: one value per pod (label ``pod``), the peak over the source's own window of
  readings (``max_over_time[1m]``);
- optimizer queries: one model-level value from counter increases between readings (``rate``);
- availability: one value per pod whose latest reading has ``vllm:num_requests_running``.

Pods come from a :class:`PodDiscovery` (the inventory's Ready pods of each variant's Deployment).
Scrapes are bounded in concurrency, time and body size; a pod that fails costs only its own data:
it is *unknown* (left out of every per-pod result, never reported as 0) and listed in the result's
``pod_errors``. When every pod of a model fails the queries carry an error instead.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import aiohttp

from wva.collector import promql
from wva.collector.v2.cache import Cache, CachedValue, build_cache_key
from wva.collector.v2.exposition import PodReading, counter_rate, parse_exposition, peak, reading_from_samples
from wva.collector.v2.query import QueryList
from wva.collector.v2.results import MetricResult, MetricValue, RefreshSpec
from wva.tokens import TokenFile

__all__ = [
    "METRICS_PORT_ANNOTATION",
    "METRICS_SOURCE_ANNOTATION",
    "InventoryPodDiscovery",
    "PodDiscovery",
    "PodMetricResult",
    "PodScrapingConfig",
    "PodScrapingSource",
    "PodTarget",
    "ScrapeOutcome",
    "TokenFile",
]

logger = logging.getLogger(__name__)

METRICS_PORT_ANNOTATION = "wva.llmd.ai/metrics-port"
METRICS_SOURCE_ANNOTATION = "wva.llmd.ai/metrics-source"

# ratio queries: name -> (numerator counter, denominator counter)
_RATIOS: dict[str, tuple[str, str]] = {
    promql.Q_AVG_INPUT_TOKENS: (promql.PROMPT_TOKENS_SUM, promql.PROMPT_TOKENS_COUNT),
    promql.Q_AVG_OUTPUT_TOKENS: (promql.GENERATION_TOKENS_SUM, promql.GENERATION_TOKENS_COUNT),
    promql.Q_TTFT_AVERAGE: (promql.TTFT_SECONDS_SUM, promql.TTFT_SECONDS_COUNT),
    promql.Q_ITL_AVERAGE: (promql.TPOT_SECONDS_SUM, promql.TPOT_SECONDS_COUNT),
}
_PER_POD = frozenset({promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH})
_AVAILABILITY = frozenset({promql.Q_METRICS_AVAILABILITY, promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE})
_AVAILABILITY_ANY = frozenset({promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE})
SUPPORTED_QUERIES: frozenset[str] = frozenset(
    {*_PER_POD, *_AVAILABILITY, promql.Q_ARRIVAL_RATE, *_RATIOS}
)


# --- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodTarget:
    """One pod to scrape. ``url`` is the full metrics URL (built by the discovery)."""

    namespace: str
    name: str
    model_id: str
    url: str
    variant: str = ""


class PodDiscovery(Protocol):
    """Ready pods serving ``model_id`` in ``namespace`` (``None``: in every namespace)."""

    def __call__(self, model_id: str, namespace: str | None) -> Sequence[PodTarget]: ...


class _InventoryLike(Protocol):
    def variants(self) -> Sequence[Any]: ...

    def ready_pods(self, namespace: str, deployment: str) -> Sequence[Any]: ...


def default_url(scheme: str, ip: str, port: int, path: str) -> str:
    host = f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip
    return f"{scheme}://{host}:{port}{path}"


class InventoryPodDiscovery:
    """Targets from watched state: the Ready pods (with an IP) of every VA's Deployment.

    Port, scheme and path are defaults; a VA annotation ``wva.llmd.ai/metrics-port`` overrides the
    port (read from the record's ``annotations`` when it has them). ``target_url(namespace, pod,
    ip, port)`` replaces the URL builder (tests point every pod at one emulator this way).
    """

    def __init__(
        self,
        inventory: _InventoryLike,
        *,
        port: int = 8000,
        scheme: str = "http",
        path: str = "/metrics",
        target_url: Callable[[str, str, str, int], str] | None = None,
    ) -> None:
        self._inventory = inventory
        self.port = port
        self.scheme = scheme
        self.path = path if path.startswith("/") else "/" + path
        self._target_url = target_url

    def __call__(self, model_id: str, namespace: str | None) -> list[PodTarget]:
        targets: dict[tuple[str, str], PodTarget] = {}
        for record in self._inventory.variants():
            if record.model_id != model_id or (namespace is not None and record.namespace != namespace):
                continue
            if getattr(record, "problem", None) is not None or not record.deployment_name:
                continue
            for pod in self._inventory.ready_pods(record.namespace, record.deployment_name):
                if pod.ip:
                    targets[(record.namespace, pod.name)] = self._target(record, pod)
        return [targets[k] for k in sorted(targets)]

    def target_for_pod(self, namespace: str, pod_name: str) -> PodTarget | None:
        """The scrape target of one Ready pod of a VA's Deployment (None: not known, not ready, no IP)."""
        for record in self._inventory.variants():
            if record.namespace != namespace or getattr(record, "problem", None) is not None \
                    or not record.deployment_name:
                continue
            for pod in self._inventory.ready_pods(namespace, record.deployment_name):
                if pod.name == pod_name and pod.ip:
                    return self._target(record, pod)
        return None

    def _target(self, record: Any, pod: Any) -> PodTarget:
        port = _port_override(record) or self.port
        if self._target_url is not None:
            url = self._target_url(record.namespace, pod.name, pod.ip, port)
        else:
            url = default_url(self.scheme, pod.ip, port, self.path)
        return PodTarget(record.namespace, pod.name, record.model_id, url, record.name)


def _port_override(record: object) -> int | None:
    annotations = getattr(record, "annotations", None)
    if not isinstance(annotations, Mapping):
        return None
    raw = annotations.get(METRICS_PORT_ANNOTATION)
    if raw is None:
        return None
    try:
        port = int(str(raw).strip())
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        logger.warning("Ignoring invalid metrics port annotation va=%s value=%r", getattr(record, "name", ""), raw)
        return None
    return port


# --- configuration and auth ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodScrapingConfig:
    """Durations in seconds; sizes in bytes.

    ``min_scrape_interval``: a pod read less than this long ago is answered from its last reading
    (the three refreshes of one engine cycle share one scrape). ``window``: how far back the
    saturation peak and the counter rates look (PromQL's ``[1m]``).
    """

    scrape_timeout: float = 5.0
    max_concurrency: int = 10
    max_body_bytes: int = 10 * 1024 * 1024
    min_scrape_interval: float = 1.0
    window: float = 60.0
    max_readings_per_pod: int = 64
    max_pods: int = 20000
    default_ttl: float = 30.0
    token_path: str | None = None
    verify_tls: bool = True
    ca_cert_path: str | None = None

    def __post_init__(self) -> None:
        if self.scrape_timeout <= 0:
            raise ValueError(f"scrape_timeout must be > 0, got {self.scrape_timeout}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.window <= 0 or self.min_scrape_interval < 0:
            raise ValueError("window must be > 0 and min_scrape_interval >= 0")
        if self.max_readings_per_pod < 2 or self.max_pods < 1:
            raise ValueError("max_readings_per_pod must be >= 2 and max_pods >= 1")


# --- results ---------------------------------------------------------------------------------------


class ScrapeOutcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"  # any status but 200 (401/403 included: never a silent empty)
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    PARSE_ERROR = "parse_error"
    CONNECT_ERROR = "connect_error"


@dataclass(frozen=True, slots=True)
class PodMetricResult(MetricResult):
    """A :class:`MetricResult` that also says which pods are unknown and why (pod -> error)."""

    pod_errors: Mapping[str, str] = field(default_factory=dict)


class _ScrapeError(Exception):
    def __init__(self, outcome: ScrapeOutcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(slots=True)
class _PodState:
    target: PodTarget
    readings: deque[PodReading]
    last_attempt: float = -1e18
    error: str | None = None
    lock: asyncio.Lock | None = None


ScrapeHook = Callable[[ScrapeOutcome, float], None]
"""Called after every pod scrape with (outcome, duration in seconds)."""


# --- the source --------------------------------------------------------------------------------


class PodScrapingSource:
    """Scrapes the pods :class:`PodDiscovery` names and answers the engine's registered queries.

    ``refresh`` needs params ``modelID`` and ``namespace`` (only ``modelID`` for the
    any-namespace availability query). Unsupported query names get an error result.
    """

    def __init__(
        self,
        discovery: PodDiscovery,
        config: PodScrapingConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_scrape: ScrapeHook | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.config = config or PodScrapingConfig()
        self._discovery = discovery
        self._queries = QueryList()
        self._clock = clock
        self._wall = wall_clock
        self._on_scrape = on_scrape
        self.cache = cache if cache is not None else Cache(default_ttl=self.config.default_ttl)
        self._token = TokenFile(self.config.token_path, "Pod metrics") if self.config.token_path else None
        self._pods: dict[tuple[str, str], _PodState] = {}
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._last_sweep = clock()
        self.outcomes: dict[ScrapeOutcome, int] = dict.fromkeys(ScrapeOutcome, 0)

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
        model_id = params.get(promql.PARAM_MODEL_ID, "")
        namespace = params.get(promql.PARAM_NAMESPACE) or None
        scopes = {name: (None if name == promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE else namespace) for name in names}
        needed = {scope for name, scope in scopes.items() if scope is not None or name in _AVAILABILITY_ANY}
        states: dict[str | None, tuple[list[_PodState], dict[str, str]]] = {}
        for scope in needed:
            if model_id:
                states[scope] = await self._scrape(model_id, scope)
        results: dict[str, MetricResult] = {}
        for name in names:
            result = self._answer(name, model_id, scopes[name], states.get(scopes[name]))
            self.cache.set(build_cache_key(name, params), result)
            results[name] = result
        return results

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.cache.start()

    async def stop(self) -> None:
        await self.cache.stop()
        session, self._session = self._session, None
        self._session_loop = None
        if session is not None and not session.closed:
            await session.close()

    def pod_errors(self, namespace: str, model_id: str) -> dict[str, str]:
        """Pods of the model whose latest scrape failed, with the reason."""
        return {
            pod: st.error
            for (ns, pod), st in self._pods.items()
            if ns == namespace and st.target.model_id == model_id and st.error is not None
        }

    def tracked_pods(self) -> int:
        return len(self._pods)

    async def in_flight(self, namespace: str, pod: str) -> float | None:
        """One fresh scrape of ``pod``: its requests in flight (``vllm:num_requests_running`` of its
        model), None when unknown (pod not found, scrape failed, series absent). The drain wait polls it."""
        find = getattr(self._discovery, "target_for_pod", None)
        target = find(namespace, pod) if find is not None else None
        if target is None:
            return None
        try:
            reading = await self._scrape_one(target)
        except _ScrapeError as exc:
            logger.debug("In-flight scrape failed namespace=%s pod=%s outcome=%s", namespace, pod, exc.outcome)
            return None
        return reading.running

    # --- answering -----------------------------------------------------------------------------

    def _answer(
        self,
        name: str,
        model_id: str,
        scope: str | None,
        scraped: tuple[list[_PodState], dict[str, str]] | None,
    ) -> MetricResult:
        now_wall = self._wall()
        if name not in SUPPORTED_QUERIES:
            return self._error(name, now_wall, f"query {name!r} is not supported by the pod scraping source")
        if not model_id or (scope is None and name != promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE):
            missing = promql.PARAM_MODEL_ID if not model_id else promql.PARAM_NAMESPACE
            return self._error(name, now_wall, f"failed to build query: missing required parameter {missing!r}")
        assert scraped is not None
        pods, errors = scraped
        ok = [st for st in pods if st.error is None and st.readings]
        if pods and not ok:
            detail = "; ".join(f"{pod}: {err}" for pod, err in sorted(errors.items())[:5])
            return self._error(name, now_wall, f"all {len(pods)} pod scrapes failed: {detail}", errors)
        if name in _PER_POD:
            values = self._per_pod(name, ok, model_id, errors)
        elif name in _AVAILABILITY:
            values = [
                MetricValue(st.readings[-1].running, st.readings[-1].wall, _labels(st, model_id))
                for st in ok
                if st.readings[-1].running is not None
            ]
        else:
            value, problem = self._model_rate(name, ok)
            if value is None:
                return self._error(name, now_wall, problem, errors)
            values = [MetricValue(value, now_wall, {})]
        return PodMetricResult(query_name=name, values=values, collected_at=now_wall, pod_errors=dict(errors))

    def _per_pod(
        self, name: str, ok: list[_PodState], model_id: str, errors: dict[str, str]
    ) -> list[MetricValue]:
        """Peak per pod; a pod lacking either saturation signal is unknown for both (never 0)."""
        horizon = self._clock() - self.config.window
        values = []
        for st in ok:
            latest = st.readings[-1]
            if latest.kv_cache_usage is None or latest.queue_length is None:
                errors.setdefault(st.target.name, "missing vLLM saturation metrics (kv_cache_usage_perc or "
                                  "num_requests_waiting)")
                continue
            window = [r for r in st.readings if r.at >= horizon] or [latest]
            if name == promql.Q_KV_CACHE_USAGE:
                value = peak(r.kv_cache_usage for r in window)
            else:
                value = peak(r.queue_length for r in window)
            assert value is not None  # the latest reading is known
            values.append(MetricValue(value, latest.wall, _labels(st, model_id)))
        return values

    def _model_rate(self, name: str, ok: list[_PodState]) -> tuple[float | None, str]:
        if name == promql.Q_ARRIVAL_RATE:
            total, known = self._sum_rates(promql.REQUEST_SUCCESS_TOTAL, ok)
            return (total if known else None), "rate unknown: no pod has two readings of request_success_total yet"
        numerator, denominator = _RATIOS[name]
        num, known_num = self._sum_rates(numerator, ok)
        den, known_den = self._sum_rates(denominator, ok)
        if not known_num or not known_den:
            return None, f"rate unknown: no pod has two readings of {numerator} and {denominator} yet"
        # as PromQL: 0/0 is NaN, which results report as 0 (no requests in the window)
        return (num / den if den else float("nan")), ""

    def _sum_rates(self, series: str, ok: list[_PodState]) -> tuple[float, int]:
        horizon = self._clock() - self.config.window
        total, known = 0.0, 0
        for st in ok:
            points = [(r.at, r.counters.get(series)) for r in _rate_window(st.readings, horizon)]
            rate = counter_rate(points)
            if rate is not None:
                total += rate
                known += 1
        return total, known

    @staticmethod
    def _error(name: str, now: float, message: str, errors: Mapping[str, str] | None = None) -> PodMetricResult:
        return PodMetricResult(
            query_name=name, values=[], collected_at=now, error=message, pod_errors=dict(errors or {})
        )

    # --- scraping ------------------------------------------------------------------------------

    async def _scrape(self, model_id: str, namespace: str | None) -> tuple[list[_PodState], dict[str, str]]:
        targets = list(self._discovery(model_id, namespace))
        states = [self._state_for(t) for t in targets]
        await asyncio.gather(*(self._ensure_fresh(st) for st in states))
        self._prune(model_id, namespace, {(t.namespace, t.name) for t in targets})
        errors = {st.target.name: st.error for st in states if st.error is not None}
        return states, errors

    def _state_for(self, target: PodTarget) -> _PodState:
        key = (target.namespace, target.name)
        st = self._pods.get(key)
        if st is None or st.target.model_id != target.model_id:
            st = _PodState(target, deque(maxlen=self.config.max_readings_per_pod))
            self._pods[key] = st
        else:
            st.target = target
        return st

    def _prune(self, model_id: str, namespace: str | None, live: set[tuple[str, str]]) -> None:
        """Forget pods of this model that are no longer targets, and pods not asked about for long."""
        gone = [
            key
            for key, st in self._pods.items()
            if st.target.model_id == model_id and (namespace is None or key[0] == namespace) and key not in live
        ]
        now = self._clock()
        if now - self._last_sweep > self.config.window:
            self._last_sweep = now
            idle = 10 * max(self.config.window, self.config.default_ttl)
            gone += [key for key, st in self._pods.items() if now - st.last_attempt > idle and key not in live]
        if len(self._pods) - len(gone) > self.config.max_pods:
            by_age = sorted(self._pods, key=lambda k: self._pods[k].last_attempt)
            gone += by_age[: len(self._pods) - self.config.max_pods]
        for key in set(gone):
            self._pods.pop(key, None)

    async def _ensure_fresh(self, st: _PodState) -> None:
        if st.lock is None:
            st.lock = asyncio.Lock()
        async with st.lock:  # concurrent refreshes of one model share one scrape
            if self._clock() - st.last_attempt < self.config.min_scrape_interval:
                return
            started = self._clock()
            outcome = ScrapeOutcome.OK
            try:
                reading = await self._scrape_one(st.target)
            except _ScrapeError as exc:
                outcome = exc.outcome
                self._fail(st, exc.outcome, str(exc))
            except Exception as exc:  # a bug must cost one pod, not the cycle
                outcome = ScrapeOutcome.CONNECT_ERROR
                logger.exception("Pod scrape failed unexpectedly namespace=%s pod=%s", *_key(st))
                self._fail(st, outcome, f"{type(exc).__name__}: {exc}")
            else:
                if st.error is not None:
                    logger.info("Pod scrape recovered namespace=%s pod=%s", *_key(st))
                st.error = None
                st.readings.append(reading)
                _trim(st.readings, reading.at - self.config.window)
            finally:
                st.last_attempt = self._clock()
            duration = st.last_attempt - started
            self.outcomes[outcome] += 1
            if self._on_scrape is not None:
                try:
                    self._on_scrape(outcome, duration)
                except Exception:
                    logger.exception("Scrape hook failed")

    def _fail(self, st: _PodState, outcome: ScrapeOutcome, message: str) -> None:
        if st.error != message:
            logger.warning(
                "Pod scrape failed namespace=%s pod=%s outcome=%s error=%s", *_key(st), outcome.value, message
            )
        st.error = message

    async def _scrape_one(self, target: PodTarget) -> PodReading:
        cfg = self.config
        headers = {"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
        token = await asyncio.to_thread(self._token.get) if self._token is not None else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        session = self._get_session()
        async with self._semaphore():
            try:
                async with asyncio.timeout(cfg.scrape_timeout):
                    async with session.get(target.url, headers=headers, allow_redirects=False) as resp:
                        if resp.status != 200:
                            raise _ScrapeError(ScrapeOutcome.HTTP_ERROR, _status_text(resp.status))
                        body = await _read_limited(resp, cfg.max_body_bytes)
            except TimeoutError:
                raise _ScrapeError(ScrapeOutcome.TIMEOUT, f"timed out after {cfg.scrape_timeout:g}s") from None
            except aiohttp.ClientError as exc:
                message = f"request failed: {type(exc).__name__}: {exc}"
                raise _ScrapeError(ScrapeOutcome.CONNECT_ERROR, message) from None
            at, wall = self._clock(), self._wall()
            try:
                samples = await asyncio.to_thread(parse_exposition, body.decode("utf-8", errors="replace"))
            except ValueError as exc:
                raise _ScrapeError(ScrapeOutcome.PARSE_ERROR, str(exc)[:300]) from None
        return reading_from_samples(samples, target.model_id, at=at, wall=wall)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            self._semaphores = {lp: s for lp, s in self._semaphores.items() if not lp.is_closed()}
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.config.max_concurrency)
        return semaphore

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


def _key(st: _PodState) -> tuple[str, str]:
    return st.target.namespace, st.target.name


def _labels(st: _PodState, model_id: str) -> dict[str, str]:
    return {promql.LABEL_POD: st.target.name, promql.LABEL_NAMESPACE: st.target.namespace,
            promql.LABEL_MODEL_NAME: model_id}


def _trim(readings: deque[PodReading], horizon: float) -> None:
    """Drop readings older than the window, keeping one older reading as the rate baseline."""
    while len(readings) > 2 and readings[1].at < horizon:
        readings.popleft()


def _rate_window(readings: deque[PodReading], horizon: float) -> list[PodReading]:
    """Readings inside the window plus the last one before it (the baseline of consecutive scrapes)."""
    items = list(readings)
    start = 0
    for i, reading in enumerate(items):
        if reading.at >= horizon:
            start = max(i - 1, 0)
            break
    else:
        start = max(len(items) - 2, 0)
    return items[start:]


def _status_text(status: int) -> str:
    if status in (401, 403):
        return f"unauthorized (HTTP {status}): check the metrics reader token"
    return f"HTTP {status}"


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise _ScrapeError(ScrapeOutcome.TOO_LARGE, f"body of {resp.content_length} bytes exceeds {limit}")
    body = bytearray()
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise _ScrapeError(ScrapeOutcome.TOO_LARGE, f"body exceeds {limit} bytes")
