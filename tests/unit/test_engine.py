"""SaturationEngine with fake edges: decisions, holding on faults, conditions, events, bounds."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from wva.actuator.metrics import MetricsEmitter
from wva.actuator.status import StatusWriter
from wva.collector.types import (
    AvailabilityReason,
    MetricsValidationResult,
    OptimizerMetrics,
    ReplicaMetrics,
    VariantRef,
)
from wva.inventory import Inventory
from wva.kube import KubeError
from wva.saturation.config import SaturationConfigStore
from wva.saturation.engine import SaturationEngine

NS = "llm"
MODEL = "acme/llama"


class FakeKube:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.status: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.scaled: dict[tuple[str, str], int] = {}
        self.fail_status: list[int] = []  # statuses to answer the next status patches with
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # what get_va answers

    async def get_va(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls[("get", "variantautoscalings")] += 1
        return self.objects[(namespace, name)]

    async def patch_va_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.calls[("patch", "variantautoscalings/status")] += 1
        if self.fail_status:
            raise KubeError(self.fail_status.pop(0), "injected")
        self.status[(namespace, name)] = status
        return {"status": status}

    async def create_event(self, involved: dict[str, str], reason: str, message: str, event_type: str = "Normal",
                           component: str = "wva") -> None:
        self.calls[("create", "events")] += 1
        self.events.append((involved["name"], reason, message))

    async def patch_deployment_scale(self, namespace: str, name: str, replicas: int) -> None:
        self.calls[("patch", "deployments/scale")] += 1
        self.scaled[(namespace, name)] = replicas


class FakeCollector:
    def __init__(self) -> None:
        self.kv: dict[str, list[float]] = {}  # va -> per pod kv usage
        self.error: str | None = None
        self.availability_error = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def validate_metrics_availability(self, model_id: str, namespace: str) -> MetricsValidationResult:
        if self.availability_error:
            return MetricsValidationResult(False, AvailabilityReason.PROMETHEUS_ERROR, "Failed to query Prometheus")
        return MetricsValidationResult(True, AvailabilityReason.METRICS_FOUND, "vLLM metrics are available")

    async def collect_optimizer_metrics(self, model_id: str, namespace: str, va_name: str) -> OptimizerMetrics:
        return OptimizerMetrics(arrival_rate=120.0, avg_input_tokens=128, avg_output_tokens=64,
                                ttft_seconds=0.15, itl_seconds=0.01)

    async def collect_replica_metrics(self, model_id: str, namespace: str,
                                      variants: Sequence[VariantRef]) -> list[ReplicaMetrics]:
        if self.error:
            raise RuntimeError(self.error)
        out = []
        for ref in variants:
            for i, kv in enumerate(self.kv.get(ref.name, [])):
                out.append(ReplicaMetrics(f"{ref.deployment_name}-abc-{i}", kv, 0, ref.name, namespace, model_id,
                                          ref.accelerator_name, ref.cost))
        return out


def va(name: str, cost: str = "10.0", acc: str | None = "A100", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "generation": 1, "uid": f"uid-{name}"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": name}, "modelID": MODEL, "variantCost": cost,
                 **spec},
    }
    if acc:
        body["spec"]["modelProfile"] = {"accelerators": [{"acc": acc, "accCount": 1, "maxBatchSize": 8}]}
    return body


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas}}


def _fresh_env() -> tuple[SaturationEngine, Inventory, FakeCollector, FakeKube]:
    inventory = Inventory()
    kube = FakeKube()
    collector = FakeCollector()
    emitter = MetricsEmitter()
    writer = StatusWriter(kube, inventory, backoff=0.001)  # type: ignore[arg-type]
    engine = SaturationEngine(inventory, collector, SaturationConfigStore(), writer, emitter, kube)  # type: ignore[arg-type]
    return engine, inventory, collector, kube


@pytest.fixture()
def env() -> tuple[SaturationEngine, Inventory, FakeCollector, FakeKube]:
    return _fresh_env()


def conditions(kube: FakeKube, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.status[(NS, name)]["conditions"]}


def desired(kube: FakeKube, name: str) -> int:
    return int(kube.status[(NS, name)]["desiredOptimizedAlloc"]["numReplicas"])


async def test_saturated_group_scales_cheapest_variant_up_by_one(env: Any) -> None:
    engine, inventory, collector, kube = env
    for name, cost in (("cheap", "5"), ("pricey", "20")):
        inventory.apply_variant(va(name, cost))
        inventory.apply_deployment(deployment(name, 2))
        collector.kv[name] = [0.95, 0.95]
    report = await engine.run_cycle()
    assert (desired(kube, "cheap"), desired(kube, "pricey")) == (3, 2)
    assert report.decisions[(NS, "cheap")].decided
    assert engine.emitter.value("wva_desired_replicas", variant_name="cheap", namespace=NS,
                                accelerator_type="A100") == 3
    # every replica saturated: no spare anywhere, both triggers fire
    assert ("cheap", "ScaledUp", "ScaleUpKVAndQueueSpareLow: 2→3: all 4 reporting replicas are saturated "
            "(no spare capacity); cheapest variant below its maximum") in kube.events
    cond = conditions(kube, "cheap")
    assert cond["OptimizationReady"]["reason"] == "SaturationOnlyMode"
    assert cond["MetricsAvailable"]["status"] == "True"
    assert kube.status[(NS, "cheap")]["currentAlloc"] == {
        "accelerator": "A100", "numReplicas": 2, "maxBatch": 256, "itlAverage": "10.00", "ttftAverage": "150.00",
        "load": {"arrivalRate": "120.00", "avgInputTokens": "128.00", "avgOutputTokens": "64.00"},
    }


async def test_decision_is_clamped_to_max_replicas(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("only", maxReplicas=2))
    inventory.apply_deployment(deployment("only", 2))
    collector.kv["only"] = [0.99, 0.99]
    await engine.run_cycle()
    assert desired(kube, "only") == 2


async def test_missing_pod_metrics_never_scale_down(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 4))
    collector.kv["v"] = [0.05, 0.05, 0.05]  # one of four replicas did not report
    await engine.run_cycle()
    assert desired(kube, "v") == 4
    collector.kv["v"] = [0.05] * 4  # all report: now it is safe
    await engine.run_cycle()
    assert desired(kube, "v") == 3


async def test_metrics_outage_holds_last_decision_and_says_why(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = [0.95, 0.95]
    await engine.run_cycle()
    assert desired(kube, "v") == 3
    collector.availability_error = True
    report = await engine.run_cycle()
    assert desired(kube, "v") == 3
    assert not report.decisions[(NS, "v")].decided
    cond = conditions(kube, "v")
    assert (cond["MetricsAvailable"]["status"], cond["MetricsAvailable"]["reason"]) == ("False", "PrometheusError")
    assert cond["OptimizationReady"]["reason"] == "MetricsUnavailable"
    collector.availability_error = False
    await engine.run_cycle()
    assert conditions(kube, "v")["MetricsAvailable"]["status"] == "True"


async def test_collector_exception_in_one_group_does_not_stop_others(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("a"))
    inventory.apply_deployment(deployment("a", 1))
    other = va("b")
    other["spec"]["modelID"] = "other/model"
    inventory.apply_variant(other)
    inventory.apply_deployment(deployment("b", 1))
    collector.kv = {"a": [0.95], "b": [0.95]}

    original = collector.collect_replica_metrics

    async def flaky(model_id: str, namespace: str, variants: Sequence[VariantRef]) -> list[ReplicaMetrics]:
        if model_id == MODEL:
            raise RuntimeError("boom")
        return await original(model_id, namespace, variants)

    collector.collect_replica_metrics = flaky  # type: ignore[method-assign]
    report = await engine.run_cycle()
    assert desired(kube, "b") == 2
    assert desired(kube, "a") == 1
    assert any("boom" in e for e in report.group_errors.values())
    assert conditions(kube, "a")["MetricsAvailable"]["reason"] == "PrometheusError"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (va("noacc", acc=None), "no accelerator"),
        (va("badcost", cost="abc"), "variantCost"),
    ],
)
async def test_invalid_va_gets_condition_and_one_event_while_others_scale(env: Any, body: Any, problem: str) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(body)
    name = body["metadata"]["name"]
    inventory.apply_deployment(deployment(name, 1))
    inventory.apply_variant(va("good"))
    inventory.apply_deployment(deployment("good", 1))
    collector.kv["good"] = [0.95]
    await engine.run_cycle()
    await engine.run_cycle()
    cond = conditions(kube, name)["OptimizationReady"]
    assert (cond["status"], cond["reason"]) == ("False", "InvalidConfiguration")
    assert problem in cond["message"]
    assert len([e for e in kube.events if e[0] == name and e[1] == "InvalidConfiguration"]) == 1
    assert desired(kube, "good") == 2  # decided once; held while the Deployment catches up


async def test_missing_deployment_sets_target_not_found(env: Any) -> None:
    engine, inventory, _collector, kube = env
    inventory.apply_variant(va("orphan"))
    await engine.run_cycle()
    cond = conditions(kube, "orphan")["TargetResolved"]
    assert (cond["status"], cond["reason"]) == ("False", "TargetNotFound")
    assert cond["message"] == "Scale target Deployment orphan not found"


async def test_status_write_conflict_is_retried(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 1))
    collector.kv["v"] = [0.95]
    kube.objects[(NS, "v")] = va("v")
    kube.fail_status = [409, 500]
    await engine.run_cycle()
    assert desired(kube, "v") == 2
    assert kube.calls[("patch", "variantautoscalings/status")] == 3
    assert kube.calls[("get", "variantautoscalings")] == 1, "a conflict re-reads the object before retrying"


async def test_a_va_deleted_during_the_conflict_re_read_is_not_brought_back(env: Any) -> None:
    """The DELETED event is handled while the re-read is in flight: the body read before it must not
    put the VA back into the inventory (it would stay there, decided for, until a resync)."""
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 1))
    collector.kv["v"] = [0.95]
    kube.objects[(NS, "v")] = va("v")
    kube.fail_status = [409]
    get_va = kube.get_va

    async def read_then_deleted(namespace: str, name: str) -> dict[str, Any]:
        body = await get_va(namespace, name)
        inventory.delete_variant(namespace, name)  # the watch's DELETED event, handled meanwhile
        return body

    kube.get_va = read_then_deleted  # type: ignore[method-assign]
    await engine.run_cycle()
    assert inventory.variant(NS, "v") is None
    assert inventory.mapper.va_count() == 0
    assert kube.calls[("patch", "variantautoscalings/status")] == 1  # no retry for a VA that is gone


async def test_unchanged_status_is_not_rewritten_every_cycle(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = [0.6, 0.6]
    await engine.run_cycle()
    writes = kube.calls[("patch", "variantautoscalings/status")]
    await engine.run_cycle()
    assert kube.calls[("patch", "variantautoscalings/status")] == writes


async def test_direct_actuation_patches_scale_and_deleted_va_loses_its_series(env: Any) -> None:
    engine, inventory, collector, kube = env
    engine.direct_actuation = True
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 1))
    collector.kv["v"] = [0.95]
    await engine.run_cycle()
    assert kube.scaled[(NS, "v")] == 2
    assert kube.status[(NS, "v")]["actuation"] == {"applied": True}
    inventory.delete_variant(NS, "v")
    engine.forget(NS, "v")
    assert engine.emitter.value("wva_desired_replicas", variant_name="v", namespace=NS, accelerator_type="A100") is None


async def test_grouping_across_accelerators_lets_the_cheaper_accelerator_scale(env: Any) -> None:
    engine, inventory, collector, kube = env
    inventory.apply_variant(va("l4", "5", acc="L4"))
    inventory.apply_variant(va("h100", "50", acc="H100"))
    for name in ("l4", "h100"):
        inventory.apply_deployment(deployment(name, 1))
        collector.kv[name] = [0.95]
    await engine.run_cycle()  # one group per accelerator (upstream): both scale
    assert (desired(kube, "l4"), desired(kube, "h100")) == (2, 2)

    engine2, inventory2, collector2, kube2 = _fresh_env()
    engine2.group_by_accelerator = False
    inventory2.apply_variant(va("l4", "5", acc="L4"))
    inventory2.apply_variant(va("h100", "50", acc="H100"))
    for name in ("l4", "h100"):
        inventory2.apply_deployment(deployment(name, 1))
        collector2.kv[name] = [0.95]
    await engine2.run_cycle()  # one group for the model: only the cheapest takes the step
    assert (desired(kube2, "l4"), desired(kube2, "h100")) == (2, 1)


def test_effective_interval_spaces_out_cycles_that_need_the_whole_tick() -> None:
    from wva.saturation.engine import MAX_STRETCH, effective_interval

    assert effective_interval(30.0, 1.0) == 30.0
    assert effective_interval(30.0, 24.0) == 30.0  # 80 % of the tick: still on time
    assert effective_interval(30.0, 28.0) == pytest.approx(35.0)  # the cycle gets 80 % of the new tick
    assert effective_interval(30.0, 1000.0) == 30.0 * MAX_STRETCH  # bounded
    assert effective_interval(0.0, 5.0) == 0.0


async def test_a_slow_cycle_stretches_the_interval_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    inventory = Inventory()
    kube = FakeKube()
    emitter = MetricsEmitter()
    engine = SaturationEngine(
        inventory, FakeCollector(), SaturationConfigStore(), StatusWriter(kube, inventory),  # type: ignore[arg-type]
        emitter, kube, interval=0.1,  # type: ignore[arg-type]
    )
    work = {"seconds": 0.095}
    cycles: list[float] = []

    async def cycle() -> None:
        cycles.append(asyncio.get_running_loop().time())
        await asyncio.sleep(work["seconds"])  # stands for a cycle that waits on a slow Prometheus

    engine.run_cycle = cycle  # type: ignore[method-assign]

    def gauge() -> float | None:
        return emitter.registry.get_sample_value("wva_engine_effective_interval_seconds")

    async def until(condition: Any, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, (gauge(), len(cycles))
            await asyncio.sleep(0.01)

    with caplog.at_level("INFO", logger="wva.saturation.engine"):
        engine.start()
        try:
            await until(lambda: len(cycles) >= 3)
            assert emitter.registry.get_sample_value("wva_engine_interval_seconds") == 0.1
            stretched = gauge()
            assert stretched is not None and 0.095 / 0.8 <= stretched <= 0.4
            assert cycles[2] - cycles[1] >= 0.095 / 0.8 * 0.95  # the cycles really are spaced out
            work["seconds"] = 0.0
            await until(lambda: gauge() == 0.1)
        finally:
            await engine.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("Engine interval stretched interval=0.1s")]) == 1
    assert any(m.startswith("Engine interval back to normal interval=0.1s") for m in messages)


async def test_a_cycle_cancelled_midway_leaves_no_group_unawaited() -> None:
    """Losing the lease (or stopping) while a cycle runs cancels it: the groups the worker pool had not
    started yet are closed, not dropped as never-awaited coroutines, which Python reports one warning
    each for (the soak benchmark saw them when a loaded leader stepped down mid-cycle)."""

    class Blocking(FakeCollector):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()

        async def validate_metrics_availability(self, model_id: str, namespace: str) -> MetricsValidationResult:
            self.entered.set()
            await asyncio.Event().wait()  # Prometheus never answers
            raise AssertionError("unreachable")

    inventory, kube, collector = Inventory(), FakeKube(), Blocking()
    writer = StatusWriter(kube, inventory, backoff=0.001)  # type: ignore[arg-type]
    engine = SaturationEngine(inventory, collector, SaturationConfigStore(), writer, MetricsEmitter(), kube,  # type: ignore[arg-type]
                              max_concurrent_groups=2)
    for i in range(6):  # six model groups for two workers: four are still waiting when the cycle is cancelled
        inventory.apply_deployment(deployment(f"v{i}", 1))
        inventory.apply_variant(va(f"v{i}", modelID=f"acme/model-{i}"))
    cycle = asyncio.create_task(engine.run_cycle())
    await asyncio.wait_for(collector.entered.wait(), 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cycle.cancel()
        try:
            await cycle
        except asyncio.CancelledError:
            pass  # no excinfo kept: its traceback would hold the coroutines past this block
        else:
            raise AssertionError("the cycle was not cancelled")
        del cycle
        for _ in range(10):  # the pool's cancelled workers finish on later turns of the loop
            await asyncio.sleep(0)
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


async def test_a_deleted_va_loses_its_decision_counters(env: Any) -> None:
    """``wva_scaling_decisions_total`` is per variant: a deleted VA's counters go with its gauges, or a fleet
    that replaces its VAs would expose ever more dead series (the soak benchmark saw the heap grow by
    them, a few objects per deleted VA)."""
    engine, inventory, collector, _kube = env
    for name in ("kept", "gone"):
        inventory.apply_variant(va(name, modelID=f"acme/{name}"))
        inventory.apply_deployment(deployment(name, 1))
        collector.kv[name] = [0.95]
    await engine.run_cycle()

    def counted() -> set[tuple[str, str]]:
        return {(s.labels["variant_name"], s.labels["direction"])
                for family in engine.emitter.operator.decisions.collect() for s in family.samples
                if s.name == "wva_scaling_decisions_total"}

    assert counted() == {("kept", "up"), ("gone", "up")}
    inventory.delete_variant(NS, "gone")
    engine.forget(NS, "gone")
    assert counted() == {("kept", "up")}


async def test_the_collectors_cache_lookups_are_published_per_cycle(env: Any) -> None:
    engine, inventory, collector, _kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = [0.6, 0.6]
    lookups = iter([(3, 1), (5, 4), (0, 1)])  # the last: a new collector, counting from 0 again
    collector.cache_lookups = lambda: next(lookups)  # type: ignore[attr-defined]
    def published() -> tuple[float | None, float | None]:
        get = engine.emitter.registry.get_sample_value
        return (get("wva_metrics_cache_requests_total", {"result": "hit"}),
                get("wva_metrics_cache_requests_total", {"result": "miss"}))

    await engine.run_cycle()
    assert published() == (3, 1)
    await engine.run_cycle()
    assert published() == (5, 4)
    await engine.run_cycle()  # never a negative step: the counter holds, and counts on from the new start
    assert published() == (5, 4)
