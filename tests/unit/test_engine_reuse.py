"""A model group keeps its quiet decision while nothing it reads changes (wva.saturation.reuse)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_engine import NS, FakeCollector, FakeKube, _fresh_env, deployment, desired, va

from wva.collector.types import OptimizerMetrics
from wva.inventory import Inventory
from wva.saturation.engine import CycleReport, SaturationEngine

WRITES = ("patch", "variantautoscalings/status")
STEADY = [0.6, 0.62]  # between the rules: neither a scale-up nor a safe scale-down


@pytest.fixture()
def env() -> tuple[SaturationEngine, Inventory, FakeCollector, FakeKube]:
    return _fresh_env()


async def steady_variant(env: tuple[SaturationEngine, Inventory, FakeCollector, FakeKube]) -> CycleReport:
    """VA ``v`` on 2 replicas at a steady load, cycled until its decision is kept (the first cycle
    writes it, the next decides on top of it)."""
    engine, inventory, collector, _kube = env
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = list(STEADY)
    for _ in range(4):
        report = await engine.run_cycle()
        if report.reused:
            return report
    raise AssertionError("the steady group's decision was never reused")


async def test_a_steady_group_keeps_its_decision_and_writes_nothing(env: Any) -> None:
    engine, _inventory, _collector, kube = env
    await steady_variant(env)
    kept, writes = engine.decisions.latest(NS, "v"), kube.calls[WRITES]

    report = await engine.run_cycle()

    assert report.reused == 1
    assert report.decisions[(NS, "v")].target == 2 and report.decisions[(NS, "v")].decided
    assert engine.decisions.latest(NS, "v") is kept  # no new record: the decision stands
    assert kube.calls[WRITES] == writes
    assert desired(kube, "v") == 2


async def test_a_changed_signal_is_decided_again(env: Any) -> None:
    engine, _inventory, collector, kube = env
    await steady_variant(env)
    kept = engine.decisions.latest(NS, "v")

    collector.kv["v"] = [0.9, 0.75]  # one pod saturated, too little spare on the other
    report = await engine.run_cycle()

    assert report.reused == 0
    assert engine.decisions.latest(NS, "v") is not kept
    assert report.decisions[(NS, "v")].target == 3
    assert desired(kube, "v") == 3


async def test_a_changed_configuration_is_decided_again(env: Any) -> None:
    engine, _inventory, _collector, _kube = env
    await steady_variant(env)

    # a lower KV threshold makes the same load saturating
    assert engine.config_store.update({"default": "kvCacheThreshold: 0.55\n"}) == {}
    report = await engine.run_cycle()

    assert report.reused == 0
    assert report.decisions[(NS, "v")].target == 3


async def test_a_failed_status_write_is_retried_next_cycle(env: Any) -> None:
    engine, _inventory, collector, kube = env
    await steady_variant(env)

    # the load profile in status.currentAlloc changes (the decision does not): a write is due, and fails
    async def busier(model_id: str, namespace: str, va_name: str) -> OptimizerMetrics:
        return OptimizerMetrics(arrival_rate=600.0, avg_input_tokens=128, avg_output_tokens=64,
                                ttft_seconds=0.15, itl_seconds=0.01)

    def arrival_rate() -> str:
        return str(kube.status[(NS, "v")]["currentAlloc"]["load"]["arrivalRate"])

    before = arrival_rate()
    collector.collect_optimizer_metrics = busier  # type: ignore[method-assign]
    kube.fail_status = [500] * engine.status_writer.max_attempts
    failed = await engine.run_cycle()
    assert failed.reused == 1 and not kube.fail_status
    assert arrival_rate() == before  # not written

    retried = await engine.run_cycle()

    assert retried.reused == 1
    assert float(arrival_rate()) == pytest.approx(600.0)


async def test_the_status_heartbeat_still_writes_a_kept_decision(env: Any) -> None:
    engine, _inventory, _collector, kube = env
    await steady_variant(env)
    engine.status_writer.heartbeat = 0.0  # due at every cycle
    writes = kube.calls[WRITES]

    report = await engine.run_cycle()

    assert report.reused == 1
    assert kube.calls[WRITES] == writes + 1


async def test_a_group_with_pending_replicas_is_decided_every_cycle(env: Any) -> None:
    engine, inventory, collector, _kube = env
    inventory.apply_variant(va("v"))
    body = deployment("v", 3)
    body["status"]["readyReplicas"] = 2  # one replica on the way: its stuck timer runs by the clock
    inventory.apply_deployment(body)
    collector.kv["v"] = list(STEADY)
    reports = [await engine.run_cycle() for _ in range(4)]
    assert [r.reused for r in reports] == [0, 0, 0, 0]


async def test_reuse_off_decides_every_cycle(env: Any) -> None:
    engine, inventory, collector, _kube = env
    engine.reuse_decisions = False
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = list(STEADY)
    records = []
    for _ in range(4):
        report = await engine.run_cycle()
        assert report.reused == 0
        records.append(engine.decisions.latest(NS, "v"))
    assert len({id(r) for r in records}) == 4  # a record of its own every cycle


async def test_reuse_changes_no_outcome_over_a_changing_load() -> None:
    """The same inputs, cycle by cycle, with and without reuse: the same targets and the same status."""
    loads = [STEADY, STEADY, STEADY, [0.9, 0.75], [0.9, 0.75, 0.6], [0.9, 0.75, 0.6], [*STEADY, 0.6],
             [*STEADY, 0.6], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1], STEADY, STEADY]
    runs = []
    for reuse in (True, False):
        engine, inventory, collector, kube = _fresh_env()
        engine.reuse_decisions = reuse
        inventory.apply_variant(va("v"))
        inventory.apply_deployment(deployment("v", 2))
        seen, reused = [], 0
        for kv in loads:
            collector.kv["v"] = list(kv)
            report = await engine.run_cycle()
            reused += report.reused
            decision = report.decisions[(NS, "v")]
            status = kube.status[(NS, "v")]
            seen.append((decision.target, decision.decided, decision.reason,
                         status["lastDecision"]["reason"],
                         sorted((c["type"], c["status"], c["reason"]) for c in status["conditions"])))
            replicas = max(1, len(kv))  # the Deployment follows the pods the collector reports
            inventory.apply_deployment(deployment("v", replicas))
        runs.append(seen)
        assert (reused > 0) == reuse
    assert runs[0] == runs[1]


async def test_a_scale_down_held_by_the_stabilisation_window_goes_ahead_with_no_input_changed(env: Any) -> None:
    """The window runs by the clock alone: a held scale-down is not a decision to keep."""
    engine, inventory, collector, kube = env
    assert engine.config_store.update({"default": "scaleDownStabilizationWindow: 0.2\n"}) == {}
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 3))
    collector.kv["v"] = [0.1, 0.1, 0.1]  # idle: a scale-down is safe, after the window
    first = await engine.run_cycle()
    assert first.decisions[(NS, "v")].target == 3
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while loop.time() < deadline:
        report = await engine.run_cycle()
        if report.decisions[(NS, "v")].target == 2:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the scale-down never went ahead after its stabilisation window")
    assert desired(kube, "v") == 2
