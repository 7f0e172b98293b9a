"""FailoverCollector's state machine with fake collectors: switch on error/staleness, probe, switch back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from wva.collector.failover import FailoverCollector
from wva.collector.types import (
    AvailabilityReason,
    FreshnessStatus,
    MetricsValidationResult,
    OptimizerMetrics,
    ReplicaMetrics,
    ReplicaMetricsMetadata,
    VariantRef,
)

M, NS = "model", "ns"
VARIANTS = [VariantRef("va", NS, "dep")]
FOUND = MetricsValidationResult(True, AvailabilityReason.METRICS_FOUND, "ok")
ERROR = MetricsValidationResult(False, AvailabilityReason.PROMETHEUS_ERROR, "connection refused")
MISSING = MetricsValidationResult(False, AvailabilityReason.METRICS_MISSING, "none")


def replica(pod: str, kv: float, freshness: FreshnessStatus = FreshnessStatus.FRESH) -> ReplicaMetrics:
    return ReplicaMetrics(pod, kv, 0, "va", NS, M, metadata=ReplicaMetricsMetadata(0.0, freshness_status=freshness))


@dataclass
class Fake:
    name: str
    availability: MetricsValidationResult = FOUND
    replicas: list[ReplicaMetrics] = field(default_factory=list)
    replica_error: Exception | None = None
    hang: bool = False
    calls: list[str] = field(default_factory=list)
    batches: list[list[tuple[str, str]]] = field(default_factory=list)

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def validate_metrics_availability(self, model_id: str, namespace: str) -> MetricsValidationResult:
        self.calls.append("validate")
        if self.hang:
            await asyncio.Event().wait()
        return self.availability

    async def collect_optimizer_metrics(self, model_id: str, namespace: str, va_name: str) -> OptimizerMetrics:
        self.calls.append("optimizer")
        return OptimizerMetrics(arrival_rate=1.0 if self.name == "prometheus" else 2.0)

    async def collect_replica_metrics(
        self, model_id: str, namespace: str, variants: Sequence[VariantRef]
    ) -> list[ReplicaMetrics]:
        self.calls.append("replicas")
        if self.replica_error is not None:
            raise self.replica_error
        return list(self.replicas)

    async def begin_cycle(self, models: Sequence[tuple[str, str]]) -> None:
        self.batches.append(list(models))


async def cycle(collector: FailoverCollector) -> tuple[MetricsValidationResult, list[ReplicaMetrics], str]:
    """What the engine does per model group: availability, optimizer if available, replicas, source_for."""
    await collector.begin_cycle([(M, NS)])
    availability = await collector.validate_metrics_availability(M, NS)
    if availability.available:
        await collector.collect_optimizer_metrics(M, NS, "va")
    replicas = await collector.collect_replica_metrics(M, NS, VARIANTS)
    return availability, replicas, collector.source_for(M, NS)


@pytest.fixture()
def pair() -> tuple[Fake, Fake]:
    return Fake("prometheus", replicas=[replica("p1", 0.5)]), Fake("pods", replicas=[replica("p1", 0.6)])


async def test_auto_fails_over_on_a_prometheus_error_probes_each_cycle_and_returns(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    switches: list[tuple[str, str]] = []
    collector = FailoverCollector(primary, fallback, "auto", on_switch=lambda _m, _n, a, b: switches.append((a, b)))

    assert (await cycle(collector))[1:] == ([replica("p1", 0.5)], "prometheus")

    primary.availability = ERROR
    availability, replicas, source = await cycle(collector)
    assert source == "pods" and replicas == [replica("p1", 0.6)] and availability.available
    assert switches == [("prometheus", "pods")]
    assert "PrometheusError" in collector.failed_over()[(M, NS)]

    primary.calls.clear()
    assert (await cycle(collector))[2] == "pods"
    assert primary.calls == ["validate"]  # probed once, nothing else asked of it
    assert fallback.batches[-1] == [(M, NS)]  # the fallback gets begin_cycle while it serves

    primary.availability = FOUND  # Prometheus is back
    assert (await cycle(collector))[1:] == ([replica("p1", 0.5)], "prometheus")
    assert switches == [("prometheus", "pods"), ("pods", "prometheus")]
    assert collector.failed_over() == {}


async def test_a_raised_replica_error_switches_within_the_same_cycle(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    primary.replica_error = RuntimeError("KV cache query failed: timed out")
    collector = FailoverCollector(primary, fallback, "auto")
    _availability, replicas, source = await cycle(collector)
    assert (replicas, source) == ([replica("p1", 0.6)], "pods")


async def test_stale_replica_metrics_switch_to_the_fallback(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    primary.replicas = [replica("p1", 0.5, FreshnessStatus.STALE)]
    collector = FailoverCollector(primary, fallback, "auto")
    assert (await cycle(collector))[2] == "pods"
    primary.availability = MetricsValidationResult(False, AvailabilityReason.METRICS_STALE, "old")
    assert (await cycle(collector))[2] == "pods"


async def test_switch_back_waits_until_the_primary_has_replica_data(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    collector = FailoverCollector(primary, fallback, "auto")
    primary.availability = ERROR
    await cycle(collector)
    primary.availability = MISSING  # restarted, nothing scraped yet
    availability, replicas, source = await cycle(collector)
    assert source == "pods" and replicas == [replica("p1", 0.6)] and availability.available
    primary.availability, primary.replicas = FOUND, []  # answers, but its window is still empty
    assert (await cycle(collector))[1:] == ([replica("p1", 0.6)], "pods")
    primary.replicas = [replica("p1", 0.5)]
    assert (await cycle(collector))[2] == "prometheus"


async def test_the_probe_of_a_hanging_primary_is_bounded(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    collector = FailoverCollector(primary, fallback, "auto", probe_timeout=0.05)
    primary.availability = ERROR
    await cycle(collector)
    primary.hang = True
    availability, _replicas, source = await asyncio.wait_for(cycle(collector), 5.0)
    assert source == "pods" and availability.available


async def test_fixed_modes_use_one_collector_only(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    primary.availability = ERROR
    only_primary = FailoverCollector(primary, fallback, "prometheus")
    availability, _replicas, source = await cycle(only_primary)
    assert source == "prometheus" and availability.reason == AvailabilityReason.PROMETHEUS_ERROR
    assert fallback.calls == []

    only_pods = FailoverCollector(primary, fallback, "pods")
    primary.calls.clear()
    batches_before = len(primary.batches)
    assert (await cycle(only_pods))[2] == "pods"
    assert primary.calls == [] and len(primary.batches) == batches_before
    assert fallback.batches == [[(M, NS)]]


async def test_a_per_model_override_replaces_the_global_mode(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    collector = FailoverCollector(primary, fallback, "auto", mode_for=lambda m, n: "pods" if m == M else None)
    assert (await cycle(collector))[2] == "pods"
    assert "validate" not in primary.calls
    bogus = FailoverCollector(primary, fallback, "auto", mode_for=lambda m, n: "carrier-pigeon")
    assert bogus.mode_of(M, NS) == "auto"
    with pytest.raises(ValueError, match="metrics source mode"):
        FailoverCollector(primary, fallback, "both")


async def test_lifecycle_reaches_both_collectors(pair: tuple[Fake, Fake]) -> None:
    primary, fallback = pair
    collector = FailoverCollector(primary, fallback)
    await collector.start()
    await collector.stop()
    assert primary.calls == fallback.calls == ["start", "stop"]
