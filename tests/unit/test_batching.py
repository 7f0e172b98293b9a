"""Batched collection (wva.collector.v2.batching) over a fake Prometheus that answers from one dataset.

The fake answers both the per-model queries and their batch forms from the same in-memory series,
so a batched collector and a per-model collector can be compared call for call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_v2_support import FakeSource

from fakes import FakeClock
from wva.collector import promql
from wva.collector.types import VariantRef
from wva.collector.v2 import (
    MetricResult,
    MetricValue,
    PodVAMapper,
    PrometheusSource,
    PrometheusSourceConfig,
    QueryList,
    SourceRegistry,
    V2MetricsCollector,
    register_default_queries,
)
from wva.collector.v2.batching import (
    BATCH_QUERIES,
    BATCH_TAG_LABEL,
    QueryBatcher,
    batch_cache,
    batch_queries_enabled,
    batch_query_name,
    batching_from_env,
    combined_batch_query,
    split_by_model,
    split_combined,
)

NOW = 1_700_000_000.0
TRICKY_MODELS = ["llama", "llama.*", 'quo"te', "back\\slash", "a|b", "(grp)+", "tab\there", "new\nline"]
OPTIMIZER_VALUES = {
    promql.Q_ARRIVAL_RATE: 2.5,
    promql.Q_AVG_INPUT_TOKENS: 512.0,
    promql.Q_AVG_OUTPUT_TOKENS: 128.0,
    promql.Q_TTFT_AVERAGE: 0.2,
    promql.Q_ITL_AVERAGE: 0.02,
}


@dataclass
class Pod:
    namespace: str
    model: str
    name: str
    kv: float
    queue: float


@dataclass
class FakePrometheus:
    """Answers the exact text of every per-model and batch query from ``pods``; counts queries.

    ``fail`` holds query texts answered with an HTTP 400 (not retried by the source). A combined
    batch query fails, as in Prometheus, when any of its branches would.
    """

    pods: list[Pod]
    queries: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.catalogue = QueryList()
        register_default_queries(self.catalogue)

    def _vector(self, rows: list[tuple[dict[str, str], float]]) -> list[dict[str, Any]]:
        return [{"metric": labels, "value": [NOW, repr(value)]} for labels, value in rows]

    def answers(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        keys = sorted({(p.namespace, p.model) for p in self.pods})
        for ns, model in keys:
            params = {promql.PARAM_NAMESPACE: ns, promql.PARAM_MODEL_ID: model}
            mine = [p for p in self.pods if (p.namespace, p.model) == (ns, model)]
            build = self.catalogue.build
            out[build(promql.Q_KV_CACHE_USAGE, params)] = self._vector([({"pod": p.name}, p.kv) for p in mine])
            out[build(promql.Q_QUEUE_LENGTH, params)] = self._vector([({"pod": p.name}, p.queue) for p in mine])
            for name, value in OPTIMIZER_VALUES.items():
                out[build(name, params)] = self._vector([({}, value)])
            out[build(promql.Q_METRICS_AVAILABILITY, params)] = self._vector(
                [({"__name__": promql.NUM_REQUESTS_RUNNING, "namespace": ns, "pod": p.name,
                   "model_name": model}, 1.0) for p in mine]
            )
        batch = QueryList()
        batcher = QueryBatcher()
        batcher._register(_Holder(batch))
        self.combined_parts: dict[str, list[str]] = {}
        for ns in sorted({p.namespace for p in self.pods}):
            mine = [p for p in self.pods if p.namespace == ns]
            models = sorted({p.model for p in mine})
            params = {promql.PARAM_NAMESPACE: ns}

            def b(name: str) -> str:
                return batch.build(batch_query_name(name), params)  # noqa: B023

            out[b(promql.Q_KV_CACHE_USAGE)] = self._vector(
                [({"pod": p.name, "model_name": p.model}, p.kv) for p in mine]
            )
            out[b(promql.Q_QUEUE_LENGTH)] = self._vector(
                [({"pod": p.name, "model_name": p.model}, p.queue) for p in mine]
            )
            for name, value in OPTIMIZER_VALUES.items():
                out[b(name)] = self._vector([({"model_name": m}, value) for m in models])
            out[b(promql.Q_METRICS_AVAILABILITY)] = self._vector(
                [({"model_name": m}, float(sum(p.model == m for p in mine))) for m in models]
            )
            combined = batch.build(batcher._combined_name, params)
            self.combined_parts[combined] = [b(name) for name in BATCH_QUERIES]
            out[combined] = [
                {**row, "metric": {**row["metric"], BATCH_TAG_LABEL: name}}
                for name in BATCH_QUERIES
                for row in out[b(name)]
            ]
        return out

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any:
        with self.lock:
            self.queries.append(query)
        answers = self.answers()
        if query in self.fail or self.fail.intersection(self.combined_parts.get(query, ())):
            raise RuntimeError('HTTP Status Code 400 (b\'{"errorType": "bad_data", "error": "nope"}\')')
        return answers.get(query, [])


@dataclass
class _Holder:
    queries: QueryList

    def query_list(self) -> QueryList:
        return self.queries


def dataset(models: list[str], namespaces: list[str], pods_per_model: int = 2) -> list[Pod]:
    pods = []
    for n, ns in enumerate(namespaces):
        for i, model in enumerate(models):
            for j in range(pods_per_model):
                pods.append(Pod(ns, model, f"dep{i}-abc-{j}", kv=0.1 * ((i + j + n) % 10), queue=float(i + j)))
    return pods


def variants(models: list[str], namespaces: list[str]) -> dict[tuple[str, str], list[VariantRef]]:
    return {
        (model, ns): [VariantRef(name=f"va{i}", namespace=ns, deployment_name=f"dep{i}", accelerator_name="L4")]
        for ns in namespaces
        for i, model in enumerate(models)
    }


def build_collector(
    prom: FakePrometheus,
    refs: Mapping[tuple[str, str], list[VariantRef]],
    *,
    batch: bool,
    clock: FakeClock | None = None,
    combine: bool = True,
) -> tuple[V2MetricsCollector, PrometheusSource]:
    mapper = PodVAMapper()
    for group in refs.values():
        for ref in group:
            mapper.register(ref.name, ref.namespace, ref.deployment_name)
    source = PrometheusSource(prom, PrometheusSourceConfig(query_timeout=2.0, retry_max_attempts=1))
    registry = SourceRegistry()
    registry.register("prometheus", source)
    collector = V2MetricsCollector(
        registry, mapper, clock=clock or FakeClock(NOW), batch_queries=batch, combine_batch_queries=combine
    )
    return collector, source


async def one_cycle(collector: V2MetricsCollector, refs: Mapping[tuple[str, str], list[VariantRef]]) -> list[Any]:
    """What the engine does in a cycle: begin_cycle, then the three calls per (model, namespace)."""
    await collector.begin_cycle(sorted(refs))
    out: list[Any] = []
    for (model, ns), group in sorted(refs.items()):
        out.append(await collector.validate_metrics_availability(model, ns))
        out.append(await collector.collect_optimizer_metrics(model, ns, group[0].name))
        out.append(await collector.collect_replica_metrics(model, ns, group))
    return out


# --- splitting -----------------------------------------------------------------------------------


def test_split_uses_exact_model_name_equality_and_keeps_the_samples() -> None:
    result = MetricResult(
        query_name="batch",
        values=[
            MetricValue(0.5, NOW, {"pod": "p1", "model_name": "llama"}),
            MetricValue(0.7, NOW, {"pod": "p2", "model_name": "llama.*"}),
            MetricValue(0.9, NOW, {"pod": "p3", "model_name": 'quo"te'}),
            MetricValue(0.3, NOW, {"pod": "p4"}),  # no model: no per-model matcher selects it
        ],
        collected_at=NOW,
    )
    parts = split_by_model(result, promql.Q_KV_CACHE_USAGE)

    assert sorted(parts) == ["llama", "llama.*", 'quo"te']
    # the batch's own samples, labels and all (nothing copied)
    assert parts["llama"].values == [result.values[0]] and parts["llama"].values[0] is result.values[0]
    assert [(v.value, v.labels["pod"]) for v in parts["llama.*"].values] == [(0.7, "p2")]
    assert all(p.query_name == promql.Q_KV_CACHE_USAGE and p.collected_at == NOW for p in parts.values())


def test_split_combined_uses_the_tag_and_model_name() -> None:
    def mv(value: float, **labels: str) -> MetricValue:
        return MetricValue(value, NOW, labels)

    result = MetricResult(
        query_name="combined",
        values=[
            mv(0.5, pod="p1", model_name="a|b", wva_query=promql.Q_KV_CACHE_USAGE),
            mv(3.0, pod="p1", model_name="a|b", wva_query=promql.Q_QUEUE_LENGTH),
            mv(2.5, model_name="a|b", wva_query=promql.Q_ARRIVAL_RATE),
            mv(0.9, pod="p2", model_name="a", wva_query=promql.Q_KV_CACHE_USAGE),
            mv(1.0, pod="p3", wva_query=promql.Q_KV_CACHE_USAGE),  # no model: dropped
            mv(1.0, pod="p4", model_name="a"),  # no tag: dropped
        ],
        collected_at=NOW,
    )
    parts = split_combined(result)

    assert sorted(parts) == sorted([promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH, promql.Q_ARRIVAL_RATE])
    assert sorted(parts[promql.Q_KV_CACHE_USAGE]) == ["a", "a|b"]
    kv = parts[promql.Q_KV_CACHE_USAGE]["a|b"]
    assert kv.query_name == promql.Q_KV_CACHE_USAGE and kv.collected_at == NOW
    assert [(v.value, v.labels["pod"]) for v in kv.values] == [(0.5, "p1")]
    assert [v.value for v in parts[promql.Q_ARRIVAL_RATE]["a|b"].values] == [2.5]
    assert kv.values[0] is result.values[0]  # the samples themselves, not copies


def test_combined_query_tags_every_batch_form_and_rejects_unknown_names() -> None:
    text = combined_batch_query([promql.Q_KV_CACHE_USAGE, promql.Q_ARRIVAL_RATE])
    assert text == (
        f'label_replace({BATCH_QUERIES[promql.Q_KV_CACHE_USAGE]}, "wva_query", "kv_cache_usage", "", "")'
        f' or label_replace({BATCH_QUERIES[promql.Q_ARRIVAL_RATE]}, "wva_query", "arrival_rate", "", "")'
    )
    with pytest.raises(ValueError, match="nope"):
        combined_batch_query(["nope"])
    with pytest.raises(ValueError):
        combined_batch_query([])


def test_batch_templates_drop_the_model_matcher_and_group_by_model() -> None:
    assert set(BATCH_QUERIES) == {*promql.SATURATION_QUERIES, *promql.OPTIMIZER_QUERIES,
                                  promql.Q_METRICS_AVAILABILITY}
    for name, text in BATCH_QUERIES.items():
        assert "modelID" not in text and "model_name=" not in text, name
        assert "by (model_name)" in text or "by (pod, model_name)" in text, name
    assert BATCH_QUERIES[promql.Q_KV_CACHE_USAGE] == (
        'max by (pod, model_name) (max_over_time(vllm:kv_cache_usage_perc{namespace="{{.namespace}}"}[1m]))'
    )


def test_batch_query_escapes_the_namespace() -> None:
    holder = _Holder(QueryList())
    QueryBatcher()._register(holder)
    text = holder.queries.build(batch_query_name(promql.Q_QUEUE_LENGTH), {"namespace": 'x"} or vector(1) #'})
    assert 'namespace="x\\"} or vector(1) #"' in text


def test_flag_parsing() -> None:
    assert batch_queries_enabled(None) and batch_queries_enabled("") and batch_queries_enabled("ON")
    assert not batch_queries_enabled("false") and not batch_queries_enabled(" 0 ")
    with pytest.raises(ValueError, match="WVA_BATCH_QUERIES='maybe'"):
        batch_queries_enabled("maybe")
    assert batching_from_env({}) is True
    assert batching_from_env({"WVA_BATCH_QUERIES": "no"}) is False


# --- batched vs per-model ------------------------------------------------------------------------


@pytest.mark.parametrize(("combine", "queries_per_namespace"), [(True, 1), (False, 8)], ids=["combined", "per-metric"])
async def test_batched_and_per_model_give_equal_answers_with_far_fewer_queries(
    combine: bool, queries_per_namespace: int
) -> None:
    namespaces = ["ns-a", "ns-b"]
    refs = variants(TRICKY_MODELS, namespaces)
    prom_batched = FakePrometheus(dataset(TRICKY_MODELS, namespaces))
    prom_single = FakePrometheus(dataset(TRICKY_MODELS, namespaces))
    batched, _ = build_collector(prom_batched, refs, batch=True, combine=combine)
    single, _ = build_collector(prom_single, refs, batch=False)

    got = await one_cycle(batched, refs)
    want = await one_cycle(single, refs)

    assert got == want
    replica_lists = [x for x in want if isinstance(x, list)]
    assert sum(len(x) for x in replica_lists) == 2 * len(refs)  # every pod found, none crossed models
    assert all(r.model_id == model for x, (model, _ns) in zip(replica_lists, sorted(refs), strict=True) for r in x)
    assert len(prom_single.queries) == 8 * len(refs)
    assert len(prom_batched.queries) == queries_per_namespace * len(namespaces)
    assert all(("wva_query" in q) is combine for q in prom_batched.queries)
    assert batched.batcher.stats.per_model_queries == 0


@pytest.mark.parametrize("n_models", [3, 40])
async def test_queries_per_cycle_do_not_grow_with_models(n_models: int) -> None:
    models = [f"m{i}" for i in range(n_models)]
    refs = variants(models, ["ns"])
    prom = FakePrometheus(dataset(models, ["ns"], pods_per_model=1))
    collector, _ = build_collector(prom, refs, batch=True)
    await one_cycle(collector, refs)
    assert len(prom.queries) == 1


async def test_a_model_missing_from_the_batch_is_empty_not_queried_again() -> None:
    refs = variants(["present", "absent"], ["ns"])
    prom = FakePrometheus(dataset(["present"], ["ns"]))
    collector, _ = build_collector(prom, refs, batch=True)
    await collector.begin_cycle(sorted(refs))
    assert await collector.collect_replica_metrics("absent", "ns", refs[("absent", "ns")]) == []
    assert len(prom.queries) == 1  # the batch only; no per-model fallback for a covered namespace


async def test_failed_batch_query_falls_back_per_model_and_never_serves_last_cycle() -> None:
    models = ["m1", "m2"]
    refs = variants(models, ["ns"])
    prom = FakePrometheus(dataset(models, ["ns"]))
    collector, _ = build_collector(prom, refs, batch=True)
    await one_cycle(collector, refs)
    first = await collector.collect_replica_metrics("m1", "ns", refs[("m1", "ns")])
    assert {r.kv_cache_usage for r in first} == {0.0, 0.1}

    # next cycle: the data moves and the kv batch query fails; its cached split is still within TTL
    for pod in prom.pods:
        pod.kv = 0.95
    holder = _Holder(QueryList())
    QueryBatcher()._register(holder)
    prom.fail.add(holder.queries.build(batch_query_name(promql.Q_KV_CACHE_USAGE), {"namespace": "ns"}))
    prom.queries.clear()
    await collector.begin_cycle(sorted(refs))
    second = await collector.collect_replica_metrics("m1", "ns", refs[("m1", "ns")])

    assert {r.kv_cache_usage for r in second} == {0.95}
    # the combined query fails as a whole, then only the kv batch form: kv alone goes per model
    assert collector.batcher.stats.batch_failures == 2
    assert collector.batcher.stats.per_model_queries == 1  # kv only; queue came from its batch form
    assert len(prom.queries) == 1 + 8 + 1


async def test_batch_is_served_no_longer_than_the_source_cache_ttl() -> None:
    clock = FakeClock(100.0)
    batcher = QueryBatcher(max_age=60.0, clock=clock)
    prom = FakePrometheus(dataset(["m"], ["ns"]))
    source = PrometheusSource(prom, PrometheusSourceConfig(default_ttl=10.0))
    register_default_queries(source.query_list())
    await batcher.prefetch(source, [("m", "ns")])
    clock.advance(10.0)
    assert batcher.covered(promql.Q_KV_CACHE_USAGE, "ns")
    clock.advance(0.5)
    assert not batcher.covered(promql.Q_KV_CACHE_USAGE, "ns")
    prom.queries.clear()
    await batcher.fetch(source, _spec("m", "ns"))
    assert len(prom.queries) == 2  # both saturation queries went out per model


async def test_a_batch_is_only_served_for_the_source_it_came_from() -> None:
    batcher = QueryBatcher()
    prom, other_prom = FakePrometheus(dataset(["m"], ["ns"])), FakePrometheus(dataset(["m"], ["ns"]))
    source, other = PrometheusSource(prom), PrometheusSource(other_prom)
    for s in (source, other):
        register_default_queries(s.query_list())
    await batcher.prefetch(source, [("m", "ns")])
    await batcher.fetch(other, _spec("m", "ns"))
    assert len(other_prom.queries) == 2 and batcher.stats.per_model_queries == 2


async def test_batch_expires_after_max_age_without_a_new_cycle() -> None:
    clock = FakeClock(100.0)
    batcher = QueryBatcher(max_age=30.0, clock=clock)
    prom = FakePrometheus(dataset(["m"], ["ns"]))
    source = PrometheusSource(prom)
    register_default_queries(source.query_list())
    await batcher.prefetch(source, [("m", "ns")])
    assert batcher.covered(promql.Q_KV_CACHE_USAGE, "ns")
    clock.advance(31.0)
    assert not batcher.covered(promql.Q_KV_CACHE_USAGE, "ns")
    prom.queries.clear()
    await batcher.fetch(source, _spec("m", "ns"))
    assert len(prom.queries) == 2


async def test_disabled_batching_and_sources_that_cannot_batch_query_per_model() -> None:
    refs = variants(["m1", "m2"], ["ns"])
    prom = FakePrometheus(dataset(["m1", "m2"], ["ns"]))
    collector, _ = build_collector(prom, refs, batch=False)
    await one_cycle(collector, refs)
    assert len(prom.queries) == 16 and collector.batcher.stats.batch_queries == 0

    fake = FakeSource()
    assert batch_cache(fake) is None  # has a cache, but is no PromQL source
    batcher = QueryBatcher()
    assert await batcher.prefetch(fake, [("m1", "ns")]) == 0
    await batcher.fetch(fake, _spec("m1", "ns"))
    assert [list(s.queries) for s in fake.specs] == [list(promql.SATURATION_QUERIES)]


def _spec(model: str, ns: str) -> Any:
    from wva.collector.v2 import RefreshSpec

    return RefreshSpec(queries=list(promql.SATURATION_QUERIES),
                       params={promql.PARAM_NAMESPACE: ns, promql.PARAM_MODEL_ID: model})


async def test_a_batch_caches_only_what_it_ran_and_serves_every_model_from_its_table() -> None:
    """Neither the split parts (under per-model keys) nor the namespace-wide answers are written into
    the source's cache (nothing reads them there): the cycle reads the batch from its own table."""
    models = [f"m{i}" for i in range(5)]
    prom = FakePrometheus(dataset(models, ["ns"], pods_per_model=1))
    source = PrometheusSource(prom, PrometheusSourceConfig(cache_maxsize=20))
    register_default_queries(source.query_list())
    batcher = QueryBatcher()
    sent = await batcher.prefetch(source, [(m, "ns") for m in models])
    assert sent == 1 and len(source.cache) == 0  # one combined query for the namespace, nothing kept
    prom.queries.clear()
    for m in models:
        got = await batcher.fetch(source, _spec(m, "ns"))
        assert [v.labels["pod"] for v in got[promql.Q_KV_CACHE_USAGE].values] == [f"dep{models.index(m)}-abc-0"]
    assert prom.queries == [] and batcher.stats.per_model_queries == 0
    assert len(source.cache) == 0


async def test_a_failing_combined_query_is_retried_only_every_few_cycles() -> None:
    refs = variants(["m1", "m2"], ["ns"])
    prom = FakePrometheus(dataset(["m1", "m2"], ["ns"]))
    holder = _Holder(QueryList())
    QueryBatcher()._register(holder)
    prom.fail.add(holder.queries.build(batch_query_name(promql.Q_ITL_AVERAGE), {"namespace": "ns"}))
    source = PrometheusSource(prom, PrometheusSourceConfig(retry_max_attempts=1))
    register_default_queries(source.query_list())
    batcher = QueryBatcher(combined_retry_after=2)

    combined_sent = []
    for _ in range(7):
        prom.queries.clear()
        await batcher.prefetch(source, sorted(refs))
        combined_sent.append(any("wva_query" in q for q in prom.queries))
        # every cycle still covers everything but the failing metric
        assert batcher.covered(promql.Q_KV_CACHE_USAGE, "ns") and not batcher.covered(promql.Q_ITL_AVERAGE, "ns")

    assert combined_sent == [True, False, False, True, False, False, True]

    prom.fail.clear()
    for _ in range(3):
        await batcher.prefetch(source, sorted(refs))
    prom.queries.clear()
    await batcher.prefetch(source, sorted(refs))
    assert len(prom.queries) == 1  # combined again once it works


async def test_a_cycle_longer_than_the_batch_lifetime_is_still_served_from_its_batch() -> None:
    """A 10,000-model cycle outlived the batch's 30 s and fell back to tens of thousands of per-model
    queries; the collector now holds its cycle's batch from begin_cycle to end_cycle."""
    models = ["m1", "m2", "m3"]
    refs = variants(models, ["ns"])
    prom = FakePrometheus(dataset(models, ["ns"]))
    collector, _ = build_collector(prom, refs, batch=True)
    clock = FakeClock(100.0)
    collector.batcher._clock = clock  # the batcher's own clock (monotonic in the operator)
    await collector.begin_cycle(sorted(refs))
    prom.queries.clear()
    for model, ns in sorted(refs):
        clock.advance(45.0)  # each model much later than the batch's lifetime
        assert await collector.collect_replica_metrics(model, ns, refs[(model, ns)])
    assert prom.queries == [] and collector.batcher.stats.per_model_queries == 0
    # once the cycle is over the batch is gone: a late call goes to Prometheus itself
    await collector.end_cycle()
    await collector.collect_replica_metrics("m1", "ns", refs[("m1", "ns")])
    assert len(prom.queries) == 2
