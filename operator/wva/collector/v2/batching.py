"""Batched collection: one query per namespace for every metric and model, split locally per model.

Per-model collection costs ``8 x models`` Prometheus queries per cycle. At the start of a cycle,
:meth:`QueryBatcher.prefetch` instead asks, for every namespace of the cycle, for every per-model
query's *batch* form: the same PromQL with the ``model_name`` matcher dropped and ``model_name`` added
to the grouping (``max by (pod, model_name) (...)``, ``sum by (model_name) (...)``). By default the
batch forms of a namespace travel as one *combined* query: each batch form is tagged with a
``wva_query="<query name>"`` label by ``label_replace`` and the branches are joined with ``or`` (the
tags differ, so ``or`` keeps every series of every branch). That is one HTTP round trip per namespace
instead of eight. If the combined query fails, the eight batch forms are sent one by one, so one bad
metric costs only itself. Each answer is split by the exact tag and ``model_name`` label values
(string equality, never a regex, so model names with regex or quote characters split correctly) into
the samples the per-model query would have returned (they keep the batch's labels). A model the batch
did not return gets an empty result, exactly as its own query would have.

The later per-model calls of the same cycle go through :meth:`QueryBatcher.fetch`: a query whose
namespace batch succeeded in *this* cycle is answered from the batcher's table of split answers;
everything else (a failed batch, a namespace not prefetched, a source that cannot batch) falls back
to the per-model ``source.refresh``. The table is replaced by every prefetch and stops being served
after ``max_age`` seconds or the source cache's TTL, whichever is shorter, so a previous cycle's
batch is never served to this cycle. The split parts are not written into the source's cache under
per-model keys: nothing in a cycle reads them there, and at 1,000 models those writes were a sixth of
the cycle's CPU. Nor are the namespace-wide answers kept in the source's cache (``RefreshSpec.cache``
False): the table holds them for the cycle, and at 10,000 models the cache would hold some 70 MB
of decoded series from one cycle to the next.

Where wva's recording rules run (:mod:`wva.collector.v2.recording`), the combined query reads the five
optimizer metrics from their per-(namespace, model) series instead of the per-pod raw series
(``WVA_RECORDING_RULES``: ``auto`` by default, ``true``, ``false``). Every combined query carries a
cheap presence branch (tag ``wva_recorded``) that says, per model, when the rules last recorded it;
in ``auto`` a namespace reads the recorded forms from the cycle after one whose answer had fresh
recorded series, and the raw forms again once it has none. Models the rules have not recorded (yet)
are read from the raw forms in the same cycle, in one more query for the namespace (see
:meth:`QueryBatcher._reconcile_recorded`). The answers keep the raw forms' shape, so the split per
model is the same. The per-metric fallback path always uses the raw forms.

Only sources that run PromQL and expose their result :class:`Cache` can batch (``PrometheusSource``,
or any source with ``supports_batch_queries = True`` and a ``cache`` attribute); a pod-scraping source
does not, and is always queried per model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from wva.collector import promql
from wva.collector.v2.cache import Cache
from wva.collector.v2.prometheus import PrometheusSource
from wva.collector.v2.query import QueryTemplate, QueryType
from wva.collector.v2.recording import (
    PRESENCE_FORM,
    PRESENCE_TAG,
    RECORDED_FORMS,
    RECORDED_QUERIES,
    RecordingMode,
    fresh_models,
)
from wva.collector.v2.results import MetricResult, MetricValue, RefreshSpec
from wva.collector.v2.source import MetricsSource
from wva.flags import flag_word

__all__ = [
    "BATCH_QUERIES",
    "BATCH_QUERIES_ENV",
    "BATCH_QUERY_PREFIX",
    "BATCH_TAG_LABEL",
    "BatchStats",
    "QueryBatcher",
    "batch_cache",
    "batch_queries_enabled",
    "batch_query_name",
    "batching_from_env",
    "combined_batch_query",
    "split_by_model",
    "split_combined",
]

logger = logging.getLogger(__name__)

BATCH_QUERIES_ENV = "WVA_BATCH_QUERIES"
BATCH_QUERY_PREFIX = "batch:"
BATCH_TAG_LABEL = "wva_query"
"""The label that tells a combined batch answer's series apart by query name."""

_NS = "{{.namespace}}"


def _sel(metric: str) -> str:
    return f'{metric}{{namespace="{_NS}"}}'


def _by_model_ratio(num: str, den: str) -> str:
    # both sides keep only ``model_name``, so the division matches one-to-one per model
    return f"sum by (model_name) (rate({_sel(num)}[1m]))/sum by (model_name) (rate({_sel(den)}[1m]))"


BATCH_QUERIES: dict[str, str] = {
    promql.Q_KV_CACHE_USAGE: f"max by (pod, model_name) (max_over_time({_sel(promql.KV_CACHE_USAGE_PERC)}[1m]))",
    promql.Q_QUEUE_LENGTH: f"max by (pod, model_name) (max_over_time({_sel(promql.NUM_REQUESTS_WAITING)}[1m]))",
    promql.Q_ARRIVAL_RATE: f"sum by (model_name) (rate({_sel(promql.REQUEST_SUCCESS_TOTAL)}[1m]))",
    promql.Q_AVG_INPUT_TOKENS: _by_model_ratio(promql.PROMPT_TOKENS_SUM, promql.PROMPT_TOKENS_COUNT),
    promql.Q_AVG_OUTPUT_TOKENS: _by_model_ratio(promql.GENERATION_TOKENS_SUM, promql.GENERATION_TOKENS_COUNT),
    promql.Q_TTFT_AVERAGE: _by_model_ratio(promql.TTFT_SECONDS_SUM, promql.TTFT_SECONDS_COUNT),
    promql.Q_ITL_AVERAGE: _by_model_ratio(promql.TPOT_SECONDS_SUM, promql.TPOT_SECONDS_COUNT),
    # presence per model: the availability check reads only whether values exist and their timestamps
    promql.Q_METRICS_AVAILABILITY: f"count by (model_name) ({_sel(promql.NUM_REQUESTS_RUNNING)})",
}
"""Per-model query name -> its namespace-wide PromQL (only ``{{.namespace}}`` to fill)."""


def batch_query_name(query_name: str) -> str:
    """The name the batch form of ``query_name`` is registered under in the source's query list."""
    return BATCH_QUERY_PREFIX + query_name


def combined_batch_query(queries: Sequence[str]) -> str:
    """The batch forms of ``queries`` as one PromQL: each branch tagged with ``wva_query``, joined by ``or``.

    ``label_replace(v, "wva_query", "<name>", "", "")`` sets the tag on every series of ``v`` (the
    empty regex matches the empty source label). Batch forms aggregate ``by (pod, model_name)`` or
    ``by (model_name)``, so no series carries a ``wva_query`` label of its own.
    """
    unknown = [q for q in queries if q not in BATCH_QUERIES]
    if unknown or not queries:
        raise ValueError(f"no batch form for queries {unknown or list(queries)}")
    return tagged_union([(q, BATCH_QUERIES[q]) for q in queries])


def tagged_union(branches: Sequence[tuple[str, str]]) -> str:
    """``(tag, PromQL)`` branches as one query: each tagged ``wva_query="<tag>"``, joined by ``or``."""
    if not branches:
        raise ValueError("no branches for a combined query")
    return " or ".join(f'label_replace({form}, "{BATCH_TAG_LABEL}", "{tag}", "", "")' for tag, form in branches)


def batch_queries_enabled(value: str | None) -> bool:
    """Parse ``WVA_BATCH_QUERIES``: unset or empty means on; true/1/yes/on and false/0/no/off, any case."""
    if value is None or not value.strip():
        return True
    enabled = flag_word(value)
    if enabled is not None:
        return enabled
    raise ValueError(f"{BATCH_QUERIES_ENV}={value!r} is not a boolean; use true/1/yes/on or false/0/no/off")


def batch_cache(source: MetricsSource) -> Cache | None:
    """The source's result cache (its TTL bounds how long a batch is served), or None when ``source``
    cannot batch."""
    cache = getattr(source, "cache", None)
    if not isinstance(cache, Cache):
        return None
    if isinstance(source, PrometheusSource) or getattr(source, "supports_batch_queries", False) is True:
        return cache
    return None


def split_by_model(result: MetricResult, query_name: str) -> dict[str, MetricResult]:
    """Split a batch result by the exact ``model_name`` label value.

    The values are the batch's own, labels included: each part's values carry ``model_name`` besides
    the labels the per-model query returns (``{pod}`` for saturation, none for the optimizer sums).
    Consumers read ``pod`` and the values; not copying every label set saves a fifth of a large
    fleet's cycle. Series without a ``model_name`` label belong to no model (a per-model matcher would
    not select them) and are dropped.
    """
    parts: dict[str, list[MetricValue]] = defaultdict(list)
    for value in result.values:
        model = value.labels.get(promql.LABEL_MODEL_NAME)
        if model is not None:
            parts[model].append(value)
    return {
        model: MetricResult(query_name=query_name, values=values, collected_at=result.collected_at)
        for model, values in parts.items()
    }


def split_combined(result: MetricResult) -> dict[str, dict[str, MetricResult]]:
    """Split a combined batch answer by query (the ``wva_query`` tag), then by exact ``model_name``.

    As in :func:`split_by_model`, the values keep their labels (here also ``wva_query``), so each part
    holds the same samples as :func:`split_by_model` makes of that query's own batch answer. Series
    missing either label belong to no per-model query and are dropped.
    """
    parts: dict[str, dict[str, list[MetricValue]]] = {}
    for value in result.values:
        labels = value.labels
        query = labels.get(BATCH_TAG_LABEL)
        model = labels.get(promql.LABEL_MODEL_NAME)
        if query is None or model is None:
            continue
        by_model = parts.get(query)
        if by_model is None:
            by_model = parts[query] = {}
        values = by_model.get(model)
        if values is None:
            by_model[model] = [value]
        else:
            values.append(value)
    collected_at = result.collected_at
    return {
        query: {
            model: MetricResult(query_name=query, values=values, collected_at=collected_at)
            for model, values in by_model.items()
        }
        for query, by_model in parts.items()
    }


_Entry = tuple[Mapping[str, MetricResult], MetricResult, frozenset[str]]

RECORDED_MAX_AGE = 120.0
"""Seconds after which a recorded sample counts as missing (the rule evaluation has stalled)."""

RAW_EMPTY_RECHECK = 10
"""Prefetches before a model whose raw series were empty too is looked for in raw series again."""


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Counters since the batcher was built."""

    prefetches: int = 0
    batch_queries: int = 0
    batch_failures: int = 0
    served_from_batch: int = 0
    per_model_queries: int = 0
    recorded_prefetches: int = 0  # namespace prefetches that read recorded series
    recorded_fallbacks: int = 0  # raw queries for models whose recorded series were missing


class QueryBatcher:
    """Prefetches a cycle's queries per namespace and serves the per-model calls from that batch.

    ``max_age`` (seconds) bounds how long after a prefetch its batch may still be served; the next
    prefetch replaces it regardless. ``combine`` (default on) sends a namespace's batch forms as one
    combined query; off, or when that query fails, they go one by one. After a failed combined query
    a namespace is prefetched one query per metric for ``combined_retry_after`` prefetches before the
    combined query is tried again, so a lasting failure (e.g. Prometheus' sample limit) costs neither
    a wasted query nor a warning every cycle. ``clock`` is monotonic seconds.

    ``recording`` (default ``auto``) lets the combined query read the optimizer metrics from the
    recording rules' series (:mod:`wva.collector.v2.recording`); see :meth:`_reconcile_recorded`.
    It needs the combined query and the availability query in ``queries``; without them it is off.
    A recorded sample older than ``recorded_max_age`` seconds counts as missing.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        combine: bool = True,
        combined_retry_after: int = 10,
        max_age: float = 60.0,
        queries: Iterable[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        recording: RecordingMode = RecordingMode.AUTO,
        recorded_max_age: float = RECORDED_MAX_AGE,
    ) -> None:
        if max_age <= 0:
            raise ValueError(f"max_age must be > 0, got {max_age}")
        if recorded_max_age <= 0:
            raise ValueError(f"recorded_max_age must be > 0, got {recorded_max_age}")
        if combined_retry_after < 0:
            raise ValueError(f"combined_retry_after must be >= 0, got {combined_retry_after}")
        self.enabled = enabled
        self.max_age = max_age
        names = list(BATCH_QUERIES) if queries is None else list(queries)
        unknown = [n for n in names if n not in BATCH_QUERIES]
        if unknown:
            raise ValueError(f"no batch form for queries {unknown}")
        self._queries = tuple(names)
        # one combined query only pays off for two or more metrics
        self.combine = combine and len(self._queries) > 1
        self._combined_name = BATCH_QUERY_PREFIX + "combined:" + "+".join(self._queries)
        self.combined_retry_after = combined_retry_after
        self._uncombined: dict[str, int] = {}  # namespace -> prefetches left before combining again
        recorded = tuple(q for q in self._queries if q in RECORDED_QUERIES)
        usable = self.combine and bool(recorded) and promql.Q_METRICS_AVAILABILITY in self._queries
        self.recording = recording if usable else RecordingMode.OFF
        self.recorded_max_age = recorded_max_age
        self._recorded = recorded if self.recording is not RecordingMode.OFF else ()
        self._recorded_name = BATCH_QUERY_PREFIX + "combined-recorded:" + "+".join(self._queries)
        self._fallback_name = BATCH_QUERY_PREFIX + "combined-raw:" + "+".join(self._recorded)
        self._reads_recorded: dict[str, bool] = {}  # auto: namespace -> its last answer had fresh recorded series
        self._raw_empty: dict[str, dict[str, int]] = {}  # namespace -> model -> prefetches before checking again
        self._clock = clock
        self._lock = threading.Lock()
        self._covered_at = 0.0
        self._horizon = max_age  # seconds a batch is served: max_age, or the source cache's TTL if shorter
        self._held = False  # between hold() and release() the batch is served whatever its age
        # this cycle's split answers, (query, namespace) -> (model -> result, the empty result, the
        # models it does not answer), and the source they came from; its keys are the (query, namespace)
        # pairs the batch covers
        self._table: dict[tuple[str, str], _Entry] = {}
        self._table_source: MetricsSource | None = None
        self._counts: dict[str, int] = dict.fromkeys(BatchStats.__slots__, 0)

    @property
    def stats(self) -> BatchStats:
        with self._lock:
            return BatchStats(**self._counts)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def covered(self, query_name: str, namespace: str) -> bool:
        """Whether this cycle's batch answers ``query_name`` for every model of ``namespace``."""
        with self._lock:
            if self._expired():
                return False
            return (query_name, namespace) in self._table

    def invalidate(self) -> None:
        """Forget the current batch: every call goes to the source until the next prefetch."""
        with self._lock:
            self._table = {}
            self._table_source = None

    def hold(self) -> None:
        """Serve the current batch until :meth:`release`, however long the cycle takes.

        The engine holds its cycle's batch: a cycle of 10,000 models that outlives ``max_age`` would
        otherwise fall back to per-model queries halfway through, tens of thousands of them.
        """
        with self._lock:
            self._held = True

    def release(self) -> None:
        """End of the cycle: the batch is forgotten (the next cycle prefetches its own)."""
        with self._lock:
            self._held = False
            self._table = {}
            self._table_source = None

    def _expired(self) -> bool:
        return not self._held and self._clock() - self._covered_at > self._horizon

    def _current_table(
        self, source: MetricsSource
    ) -> dict[tuple[str, str], _Entry] | None:
        with self._lock:
            if source is not self._table_source or self._expired():
                return None
            return self._table

    async def prefetch(self, source: MetricsSource, models: Sequence[tuple[str, str]]) -> int:
        """Run the batch queries for every namespace of ``models`` ((model_id, namespace) pairs).

        Returns how many batch queries ran. Never raises for a failed query: that (query, namespace)
        simply stays uncovered and is fetched per model.
        """
        self.invalidate()
        cache = batch_cache(source) if self.enabled else None
        if cache is None or not models:
            return 0
        self._register(source)
        by_namespace: dict[str, set[str]] = defaultdict(set)
        for model_id, namespace in models:
            by_namespace[namespace].add(model_id)
        started = self._clock()
        table: dict[tuple[str, str], _Entry] = {}
        outcomes = await asyncio.gather(
            *(
                self._prefetch_namespace(source, ns, table)
                for ns in sorted(by_namespace)
            )
        )
        with self._lock:
            self._covered_at = started
            self._horizon = min(self.max_age, cache.default_ttl)
            self._table = table
            self._table_source = source
            self._counts["prefetches"] += 1
        ran = sum(outcomes)
        logger.debug(
            "Batch prefetch done: namespaces=%d models=%d queries=%d covered=%d",
            len(by_namespace), len(models), ran, len(table),
        )
        return ran

    async def _prefetch_namespace(
        self,
        source: MetricsSource,
        namespace: str,
        table: dict[tuple[str, str], _Entry],
    ) -> int:
        """Fill ``table`` with what the batch of ``namespace`` covers; returns how many queries were sent."""
        params = {promql.PARAM_NAMESPACE: namespace}
        sent = 0
        if self.combine and self._may_combine(namespace):
            recorded = self._reads_recorded_in(namespace)
            name = self._recorded_name if recorded else self._combined_name
            results = await source.refresh(RefreshSpec(queries=[name], params=params, cache=False))
            self._count("batch_queries")
            sent += 1
            combined = results.get(name)
            if combined is not None and combined.error is None:
                with self._lock:
                    self._uncombined.pop(namespace, None)
                parts = split_combined(combined)
                unanswered: frozenset[str] = frozenset()
                if self.recording is not RecordingMode.OFF:
                    fallbacks, unanswered = await self._reconcile_recorded(
                        source, namespace, parts, combined.collected_at, recorded
                    )
                    sent += fallbacks
                for query in self._queries:
                    table[(query, namespace)] = self._table_entry(
                        query, parts.get(query, {}), combined.collected_at,
                        unanswered if query in self._recorded else frozenset(),
                    )
                return sent
            self._count("batch_failures")
            with self._lock:
                if self.combined_retry_after:
                    self._uncombined[namespace] = self.combined_retry_after
            logger.warning(
                "Combined batch query failed, sending one batch query per metric: namespace=%s "
                "retry_combined_after=%d error=%s",
                namespace, self.combined_retry_after, combined.error if combined is not None else "no result",
            )
        names = [batch_query_name(q) for q in self._queries]
        results = await source.refresh(RefreshSpec(queries=names, params=params, cache=False))
        self._count("batch_queries", len(names))
        sent += len(names)
        for query in self._queries:
            result = results.get(batch_query_name(query))
            if result is None or result.error is not None:
                self._count("batch_failures")
                logger.warning(
                    "Batch query failed, falling back to per-model queries: query=%s namespace=%s error=%s",
                    query, namespace, result.error if result is not None else "no result",
                )
                continue
            table[(query, namespace)] = self._table_entry(query, split_by_model(result, query), result.collected_at)
        return sent

    def _reads_recorded_in(self, namespace: str) -> bool:
        """Whether this prefetch of ``namespace`` asks for the recorded forms."""
        if self.recording is RecordingMode.ON:
            return True
        if self.recording is RecordingMode.AUTO:
            with self._lock:
                return self._reads_recorded.get(namespace, False)
        return False

    async def _reconcile_recorded(
        self,
        source: MetricsSource,
        namespace: str,
        parts: dict[str, dict[str, MetricResult]],
        collected_at: float,
        recorded: bool,
    ) -> tuple[int, frozenset[str]]:
        """Make a combined answer's optimizer parts what the raw forms give; returns (queries sent, the
        models left to per-model queries).

        Every combined query (raw or recorded forms) carries the presence branch: per model, when the
        rules last recorded it. In ``auto`` a namespace reads the recorded forms from the prefetch after
        one whose answer had fresh recorded series, and the raw forms again after one that had none.

        In an answer of recorded forms, the reference is the availability branch (raw: which models
        have vLLM series now). A model the rules have not recorded yet (new, or the group not yet
        evaluated), or recorded more than ``recorded_max_age`` ago (the evaluation stalled), is read
        from the raw forms in this same prefetch: one more combined query for the namespace, of the
        recorded metrics only. A model that query finds nothing for either (no requests counted yet,
        or a vLLM without those series) gets the empty result, as it would without the rules, and is
        looked for again after ``RAW_EMPTY_RECHECK`` prefetches rather than every cycle. If that query
        fails, the missing models fall back to their per-model queries.
        """
        answered = parts.pop(PRESENCE_TAG, {})
        stamps = {model: part.values[0].value for model, part in answered.items() if part.values}
        now = next((p.values[0].timestamp for p in answered.values() if p.values and p.values[0].timestamp > 0),
                   collected_at)
        fresh = fresh_models(stamps, now, self.recorded_max_age)
        if self.recording is RecordingMode.AUTO:
            with self._lock:
                before = self._reads_recorded.get(namespace, False)
                self._reads_recorded[namespace] = bool(fresh)
            if before != bool(fresh):
                logger.info(
                    "Recorded series %s: namespace=%s models=%d",
                    "found, reading them from the next cycle" if fresh else "gone, reading raw series",
                    namespace, len(fresh),
                )
        if not recorded:
            return 0, frozenset()
        self._count("recorded_prefetches")
        for query in self._recorded:  # a stale or missing recorded part is never served
            by_model = parts.get(query)
            if by_model:
                for model in [m for m in by_model if m not in fresh]:
                    del by_model[model]
        reference = set(parts.get(promql.Q_METRICS_AVAILABILITY, {}))
        missing = reference - fresh - self._raw_empty_models(namespace)
        if not missing:
            return 0, frozenset()
        if not fresh and self.recording is RecordingMode.ON:
            logger.warning(
                "Recorded series absent, reading raw series: namespace=%s mode=true models=%d", namespace, len(missing)
            )
        params = {promql.PARAM_NAMESPACE: namespace}
        results = await source.refresh(RefreshSpec(queries=[self._fallback_name], params=params, cache=False))
        self._count("batch_queries")
        self._count("recorded_fallbacks")
        fallback = results.get(self._fallback_name)
        if fallback is None or fallback.error is not None:
            self._count("batch_failures")
            logger.warning(
                "Raw query for models without recorded series failed, querying them per model: namespace=%s "
                "models=%d error=%s", namespace, len(missing), fallback.error if fallback is not None else "no result",
            )
            return 1, frozenset(missing)
        raw = split_combined(fallback)
        found: set[str] = set()
        for query in self._recorded:
            got = raw.get(query, {})
            target = parts.setdefault(query, {})
            for model in missing:
                part = got.get(model)
                if part is not None:
                    target[model] = part
                    found.add(model)
        empty = missing - found
        if empty:
            with self._lock:
                waiting = self._raw_empty.setdefault(namespace, {})
                waiting.update(dict.fromkeys(empty, RAW_EMPTY_RECHECK))
        logger.debug(
            "Read raw series for models without recorded series: namespace=%s models=%d found=%d",
            namespace, len(missing), len(found),
        )
        return 1, frozenset()

    def _raw_empty_models(self, namespace: str) -> set[str]:
        """Models of ``namespace`` whose raw series were empty recently (counts one prefetch down)."""
        with self._lock:
            waiting = self._raw_empty.get(namespace)
            if not waiting:
                return set()
            skip = set(waiting)
            for model in skip:
                if waiting[model] <= 1:
                    del waiting[model]
                else:
                    waiting[model] -= 1
            return skip

    def _may_combine(self, namespace: str) -> bool:
        """False while ``namespace`` waits out a failed combined query (counts one prefetch down)."""
        with self._lock:
            left = self._uncombined.get(namespace)
            if left is None:
                return True
            if left <= 1:
                del self._uncombined[namespace]
            else:
                self._uncombined[namespace] = left - 1
            return False

    @staticmethod
    def _table_entry(
        query: str, parts: Mapping[str, MetricResult], collected_at: float, unanswered: frozenset[str] = frozenset()
    ) -> _Entry:
        """(each model's part, the empty result a model the batch missed gets, the models the batch does
        not answer: they are queried per model) for the batcher's table."""
        return parts, MetricResult(query_name=query, values=[], collected_at=collected_at), unanswered

    async def fetch(self, source: MetricsSource, spec: RefreshSpec) -> dict[str, MetricResult]:
        """``source.refresh(spec)``, except that queries covered by this cycle's batch come from that batch.

        A covered query is answered from the batcher's table of this cycle's split answers.
        """
        names = list(dict.fromkeys(spec.queries))
        if not names:  # "every registered query": nothing to serve from a batch
            return await source.refresh(spec)
        params = spec.params
        namespace = params.get(promql.PARAM_NAMESPACE)
        model = params.get(promql.PARAM_MODEL_ID)
        # a batch answers exactly the per-model parameters {namespace, modelID}
        per_model = len(params) == 2 and namespace is not None and model is not None
        table = self._current_table(source) if per_model else None
        out: dict[str, MetricResult] = {}
        missing: list[str] = []
        for name in names:
            entry = table.get((name, namespace)) if table is not None and namespace is not None else None
            if entry is None or model is None or model in entry[2]:
                missing.append(name)
            else:
                parts, empty, _ = entry
                out[name] = parts.get(model) or empty
        if out:
            self._count("served_from_batch", len(out))
        if missing:
            self._count("per_model_queries", len(missing))
            out.update(await source.refresh(RefreshSpec(queries=missing, params=spec.params)))
        return {name: out[name] for name in names if name in out}

    def _register(self, source: MetricsSource) -> None:
        query_list = source.query_list()
        templates = [
            QueryTemplate(
                name=batch_query_name(query),
                type=QueryType.PROMQL,
                template=BATCH_QUERIES[query],
                params=(promql.PARAM_NAMESPACE,),
                description=f"{query} for every model of a namespace, by model_name",
            )
            for query in self._queries
        ]
        if self.combine:
            described = f"{', '.join(self._queries)} for every model of a namespace, tagged {BATCH_TAG_LABEL}"
            combined = [(q, BATCH_QUERIES[q]) for q in self._queries]
            presence = [(PRESENCE_TAG, PRESENCE_FORM)] if self._recorded else []
            forms = [(self._combined_name, tagged_union(combined + presence), described)]
            if self._recorded:
                forms.append((
                    self._recorded_name,
                    tagged_union([(q, RECORDED_FORMS.get(q, f)) if q in self._recorded else (q, f)
                                  for q, f in combined] + presence),
                    described + ", the optimizer metrics from the recording rules",
                ))
                forms.append((
                    self._fallback_name,
                    combined_batch_query(self._recorded),
                    f"{', '.join(self._recorded)} from the raw series, for models without recorded series",
                ))
            templates += [
                QueryTemplate(name=name, type=QueryType.PROMQL, template=text,
                              params=(promql.PARAM_NAMESPACE,), description=description)
                for name, text, description in forms
            ]
        for template in templates:
            if query_list.get(template.name) is None:
                with contextlib.suppress(ValueError):  # registered concurrently
                    query_list.register(template)


def batching_from_env(env: Mapping[str, str] | None = None) -> bool:
    """``WVA_BATCH_QUERIES`` from ``env`` (default: the process environment)."""
    return batch_queries_enabled((os.environ if env is None else env).get(BATCH_QUERIES_ENV))
