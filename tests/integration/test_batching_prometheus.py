"""Batched v2 collection against the real Prometheus: same answers as per-model, fewer queries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from urllib3.util.retry import Retry

from wva.collector import promql
from wva.collector.types import VariantRef
from wva.collector.v2 import PodVAMapper, PrometheusSource, PrometheusSourceConfig, SourceRegistry, V2MetricsCollector
from wva.collector.v2.recording import RecordingMode
from wva.promconnect import MeteredPrometheusConnect
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = pytest.mark.prometheus

MODELS = ["llama", "llama.*", 'quo"te', "back\\slash", "a|b", "(grp)+[x]$", "uni-模型"]


def build(
    prometheus: LocalPrometheus, refs: dict[tuple[str, str], VariantRef], *, batch: bool, combine: bool = True,
    recording: RecordingMode | None = None,
) -> tuple[V2MetricsCollector, MeteredPrometheusConnect]:
    """A v2 collector over the real Prometheus for ``refs``; ``recording`` None: as WVA_RECORDING_RULES says."""
    prom = MeteredPrometheusConnect(url=prometheus.url, disable_ssl=True, retry=Retry(total=0))
    mapper = PodVAMapper()
    for ref in refs.values():
        mapper.register(ref.name, ref.namespace, ref.deployment_name)
    registry = SourceRegistry()
    registry.register("prometheus", PrometheusSource(prom, PrometheusSourceConfig(query_timeout=5.0)))
    fixed_clock = 1_700_000_000.0  # metadata.collected_at must not differ between the two collectors
    collector = V2MetricsCollector(
        registry, mapper, clock=lambda: fixed_clock, batch_queries=batch, combine_batch_queries=combine,
        recording_rules=recording,
    )
    return collector, prom


async def cycle(collector: V2MetricsCollector, refs: dict[tuple[str, str], VariantRef]) -> list[Any]:
    """One engine cycle's collector calls for every model (availability, optimizer, replicas), in order."""
    await collector.begin_cycle(sorted(refs))
    try:
        out: list[Any] = []
        for (model, ns), ref in sorted(refs.items()):
            availability = await collector.validate_metrics_availability(model, ns)
            out.append((availability.available, availability.reason))
            out.append(await collector.collect_optimizer_metrics(model, ns, ref.name))
            out.append(await collector.collect_replica_metrics(model, ns, [ref]))
        return out
    finally:
        await collector.end_cycle()


@pytest.mark.parametrize("combine", [True, False], ids=["combined", "per-metric"])
async def test_batched_equals_per_model_on_real_prometheus_with_hostile_model_names(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str, combine: bool
) -> None:
    namespaces = [unique_ns, unique_ns + "-b"]
    refs: dict[tuple[str, str], VariantRef] = {}
    for n, ns in enumerate(namespaces):
        for i, model in enumerate(MODELS):
            ref = VariantRef(name=f"va{i}", namespace=ns, deployment_name=f"dep{i}", accelerator_name="L4")
            refs[(model, ns)] = ref
            for j in range(2):
                vllm_emulator.add_pod(
                    f"dep{i}-5f7-{j}", ns, model,
                    kv_cache_usage=round(0.05 * (i + 1) + 0.01 * j + 0.3 * n, 4), num_requests_waiting=i + j,
                )
    try:
        want_pods = 2 * len(refs)
        await prometheus.wait_for(
            f'count(vllm:kv_cache_usage_perc{{namespace=~"{unique_ns}.*"}})',
            lambda r: int(float(r[0]["value"][1])) == want_pods,
            timeout=30.0,
        )
        batched, batched_prom = build(prometheus, refs, batch=True, combine=combine)
        single, single_prom = build(prometheus, refs, batch=False)
        # both read the same stored samples: gauges are static, and the [1m] windows see the same points
        got, want = await asyncio.gather(cycle(batched, refs), cycle(single, refs))

        assert got == want
        replicas = [x for x in want if isinstance(x, list)]
        assert [len(x) for x in replicas] == [2] * len(refs)
        assert all(r.model_id == model for x, (model, _ns) in zip(replicas, sorted(refs), strict=True) for r in x)
        # e.g. "llama" got its own pods, not those of "llama.*"
        llama = replicas[sorted(refs).index(("llama", unique_ns))]
        assert sorted(r.kv_cache_usage for r in llama) == [0.05, 0.06]
        assert all(x[0] is True for x in want if isinstance(x, tuple))
        assert single_prom.queries == 8 * len(refs)
        # the combined query answers a namespace in one round trip; without it, one per metric
        assert batched_prom.queries == (1 if combine else 8) * len(namespaces)
        assert batched.batcher.stats.per_model_queries == 0
        assert batched.batcher.stats.batch_failures == 0
    finally:
        for (_model, ns), ref in refs.items():
            for j in range(2):
                vllm_emulator.remove_pod(ns, f"{ref.deployment_name}-5f7-{j}")


def test_batch_names_are_the_catalogue_names() -> None:
    # the per-model keys the batch writes must be the ones the per-model calls read
    from wva.collector.v2.batching import BATCH_QUERIES

    assert set(BATCH_QUERIES) <= set(promql.QUERY_TEMPLATES)
