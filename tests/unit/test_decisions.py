"""Decision records: each rule and guard, run through an engine cycle, leaves its numbers and code.

The engine's fakes come from test_engine; every test runs a real ``run_cycle`` and reads the record
the engine stored, the status it wrote and the Event it posted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_engine import MODEL, NS, FakeCollector, FakeKube, _fresh_env, deployment, va

from wva.collector.types import ReplicaMetrics, ReplicaMetricsMetadata
from wva.decisions import DecisionStore, ReasonCode, VariantInput, decide_group
from wva.decisions.decide import GroupHistory, next_history
from wva.decisions.explain import counterfactuals, render_explanation
from wva.inventory import Inventory
from wva.saturation.config import SaturationConfigStore, SaturationScalingConfig, parse_saturation_config_data
from wva.saturation.engine import SaturationEngine

GOLDEN = Path(__file__).parent / "golden"
Env = tuple[SaturationEngine, Inventory, FakeCollector, FakeKube]


@pytest.fixture()
def env() -> Env:
    return _fresh_env()


def setup(env: Env, variants: dict[str, tuple[str, int, list[float]]], **spec: dict[str, Any]) -> None:
    """variants: name -> (cost, replicas, per-pod kv)."""
    _engine, inventory, collector, _kube = env
    for name, (cost, replicas, kvs) in variants.items():
        inventory.apply_variant(va(name, cost, **spec.get(name, {})))
        inventory.apply_deployment(deployment(name, replicas))
        collector.kv[name] = kvs


def last(env: Env, name: str) -> dict[str, Any]:
    record = env[0].decisions.latest(NS, name)
    assert record is not None
    return record.to_dict()


def result(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in record["results"] if r["variant"] == name)


def status_decision(env: Env, name: str) -> dict[str, Any]:
    decision: dict[str, Any] = env[3].status[(NS, name)]["lastDecision"]
    return decision


async def test_scale_up_on_low_kv_spare_records_numbers_and_code(env: Env) -> None:
    setup(env, {"cheap": ("5", 2, [0.75, 0.75]), "pricey": ("20", 1, [0.7])})
    await env[0].run_cycle()
    record = last(env, "cheap")
    assert record["rule"] == "scale-up"
    assert record["analysis"]["spareKV"] == pytest.approx((0.05 + 0.05 + 0.1) / 3)
    assert record["analysis"]["nonSaturated"] == 3
    assert record["choice"]["chosen"] == "cheap" and record["choice"]["order"] == "cheapest first"
    assert [c["variant"] for c in record["choice"]["candidates"]] == ["cheap", "pricey"]
    assert result(record, "cheap")["code"] == ReasonCode.SCALE_UP_KV_SPARE_LOW
    assert result(record, "cheap")["target"] == 3
    assert result(record, "pricey")["code"] == ReasonCode.HOLD_CHEAPER_VARIANT_SCALED
    # the status tells each variant's own story, with the record's id and the config digest
    cheap, pricey = status_decision(env, "cheap"), status_decision(env, "pricey")
    assert cheap["reason"] == "ScaleUpKVSpareLow" and cheap["message"].startswith("2→3: spare KV 0.067 < 0.100")
    assert pricey["reason"] == "HoldCheaperVariantScaled" and "cheaper variant cheap" in pricey["message"]
    assert cheap["recordID"] == pricey["recordID"] == record["id"]
    assert cheap["configHash"] == record["config"]["hash"]
    assert ("cheap", "ScaledUp", f"ScaleUpKVSpareLow: {cheap['message']}") in env[3].events
    # the variants of one group share one record object
    assert env[0].decisions.latest(NS, "cheap") is env[0].decisions.latest(NS, "pricey")


async def test_queue_trigger_and_both_triggers_have_their_own_codes() -> None:
    config = SaturationScalingConfig()
    variants = [VariantInput("a", cost=5, current_replicas=2, previous_desired=2)]
    queue_only = [_replica("a", 0.2, 4), _replica("a", 0.2, 4, pod="a-2")]
    both = [_replica("a", 0.78, 4), _replica("a", 0.78, 4, pod="a-2")]
    assert decide_group(MODEL, NS, variants, queue_only, config, now=1.0).outcome("a").code == (
        ReasonCode.SCALE_UP_QUEUE_SPARE_LOW)
    assert decide_group(MODEL, NS, variants, both, config, now=1.0).outcome("a").code == (
        ReasonCode.SCALE_UP_KV_AND_QUEUE_SPARE_LOW)


async def test_scale_down_records_the_n_minus_1_check(env: Env) -> None:
    setup(env, {"cheap": ("5", 2, [0.1, 0.1]), "pricey": ("20", 2, [0.1, 0.1])})
    await env[0].run_cycle()
    record = last(env, "pricey")
    check = record["analysis"]["scaleDownCheck"]
    assert record["rule"] == "scale-down"
    assert check["nonSaturated"] == 4 and check["kvAfter"] == pytest.approx(0.4 / 3)
    assert check["spareKVAfter"] == pytest.approx(0.8 - 0.4 / 3) and check["safe"] is True
    assert record["choice"]["chosen"] == "pricey" and record["choice"]["order"] == "most expensive first"
    assert result(record, "pricey")["code"] == ReasonCode.SCALE_DOWN_REDISTRIBUTABLE
    assert result(record, "pricey")["target"] == 1
    assert result(record, "cheap")["code"] == ReasonCode.HOLD_COSTLIER_VARIANT_SCALED


async def test_steady_hold_says_why_neither_rule_fired(env: Env) -> None:
    setup(env, {"only": ("10", 2, [0.6, 0.6])})
    await env[0].run_cycle()
    record = last(env, "only")
    assert record["rule"] == "steady" and record["guards"] == []
    outcome = result(record, "only")
    assert outcome["code"] == ReasonCode.HOLD_STEADY and outcome["target"] == 2
    assert "spare KV 0.200 ≥ 0.100" in outcome["message"] and "(no scale-down)" in outcome["message"]
    assert counterfactuals(record)[0] == "would scale up if spare KV < 0.100; now 0.200 (0.100 away)"


async def test_max_bound_moves_the_step_and_is_recorded_as_a_guard(env: Env) -> None:
    setup(env, {"cheap": ("5", 2, [0.78, 0.78]), "pricey": ("20", 1, [0.78])}, cheap={"maxReplicas": 2})
    await env[0].run_cycle()
    record = last(env, "cheap")
    assert {"guard": "max-bound", "variant": "cheap", "detail": "at its maximum: not eligible for this cycle's "
            "step"} in record["guards"]
    assert record["choice"]["excludedAtBound"] == ["cheap"] and record["choice"]["chosen"] == "pricey"
    assert result(record, "cheap")["code"] == ReasonCode.AT_MAX_REPLICAS
    assert "the step went to pricey" in result(record, "cheap")["message"]
    assert result(record, "pricey")["code"] == ReasonCode.SCALE_UP_KV_SPARE_LOW


async def test_min_bound_keeps_a_variant_out_of_the_scale_down(env: Env) -> None:
    setup(env, {"cheap": ("5", 2, [0.1, 0.1]), "pricey": ("20", 2, [0.1, 0.1])}, pricey={"minReplicas": 2})
    await env[0].run_cycle()
    record = last(env, "pricey")
    assert result(record, "pricey")["code"] == ReasonCode.AT_MIN_REPLICAS
    assert result(record, "cheap")["code"] == ReasonCode.SCALE_DOWN_REDISTRIBUTABLE
    assert any(g["guard"] == "min-bound" and g["variant"] == "pricey" for g in record["guards"])


async def test_unknown_signal_hold_blocks_scale_down(env: Env) -> None:
    # three replicas exist, two report: the third one's load is unknown, so no scale-down
    setup(env, {"only": ("10", 3, [0.1, 0.1])})
    await env[0].run_cycle()
    record = last(env, "only")
    assert record["analysis"]["scaleDownCheck"]["safe"] is True and record["analysis"]["scaleDownSafe"] is False
    assert [g["guard"] for g in record["guards"]] == ["unknown-signal-hold", "replicas-not-reporting"]
    assert result(record, "only")["code"] == ReasonCode.HOLD_UNKNOWN_SIGNAL
    assert result(record, "only")["target"] == 3


async def test_pending_previous_decision_is_held_by_the_cascade_guard(env: Env) -> None:
    engine, inventory, _collector, _kube = env
    setup(env, {"cheap": ("5", 2, [0.78, 0.78])})
    await engine.run_cycle()  # decides 3; the Deployment still has 2
    record = inventory.variant(NS, "cheap")
    assert record is not None and record.previous_desired == 3
    await engine.run_cycle()
    rec = last(env, "cheap")
    assert result(rec, "cheap")["code"] == ReasonCode.HOLD_PENDING_DECISION
    assert rec["choice"]["heldPending"] == ["cheap"] and result(rec, "cheap")["target"] == 3
    assert any(g["guard"] == "pending-decision" for g in rec["guards"])


async def test_replicas_not_reporting_hold(env: Env) -> None:
    setup(env, {"only": ("10", 3, [0.6, 0.6])})
    await env[0].run_cycle()
    record = last(env, "only")
    assert result(record, "only")["code"] == ReasonCode.HOLD_REPLICAS_NOT_REPORTING
    assert record["choice"]["heldNotReporting"] == ["only"]


async def test_clamp_to_min_replicas(env: Env) -> None:
    setup(env, {"only": ("10", 1, [0.6])}, only={"minReplicas": 3})
    await env[0].run_cycle()
    record = last(env, "only")
    assert result(record, "only")["code"] == ReasonCode.CLAMPED_TO_MIN_REPLICAS
    assert result(record, "only")["target"] == 3
    assert any(g["guard"] == "clamp" for g in record["guards"])


async def test_metrics_unavailable_holds_and_is_recorded(env: Env) -> None:
    engine, _inventory, collector, _kube = env
    setup(env, {"only": ("10", 2, [0.6, 0.6])})
    collector.error = "prometheus down"
    await engine.run_cycle()
    record = last(env, "only")
    assert record["rule"] == "no-metrics" and record["analysis"] is None
    assert "prometheus down" in record["inputs"]["unavailable"]
    assert result(record, "only")["code"] == ReasonCode.HOLD_METRICS_UNAVAILABLE
    assert result(record, "only")["decided"] is False
    assert status_decision(env, "only")["reason"] == "HoldMetricsUnavailable"


async def test_steady_cycles_do_not_rewrite_the_status_for_new_numbers(env: Env) -> None:
    engine, _inventory, collector, kube = env
    setup(env, {"only": ("10", 2, [0.6, 0.6])})
    await engine.run_cycle()
    writes = kube.calls[("patch", "variantautoscalings/status")]
    collector.kv["only"] = [0.61, 0.59]  # new numbers, same code
    await engine.run_cycle()
    assert kube.calls[("patch", "variantautoscalings/status")] == writes
    assert len(engine.decisions.records(NS, "only")) == 2  # but the ring has both cycles


async def test_shadow_config_is_evaluated_but_not_acted_on(env: Env) -> None:
    engine, _inventory, _collector, _kube = env
    parsed = parse_saturation_config_data({"default": "kvSpareTrigger: 0.1\nshadow:\n  kvSpareTrigger: 0.25\n"})
    assert not parsed.errors
    engine.config_store.update({"default": "kvSpareTrigger: 0.1\nshadow:\n  kvSpareTrigger: 0.25\n"})
    setup(env, {"only": ("10", 2, [0.6, 0.6])})
    await engine.run_cycle()
    record = last(env, "only")
    assert result(record, "only")["target"] == 2  # live: spare 0.2 >= 0.1
    assert record["shadow"]["results"][0]["target"] == 3  # shadow: 0.2 < 0.25 would scale up
    assert record["shadow"]["config"]["hash"] != record["config"]["hash"]
    labels = {"variant_name": "only", "namespace": NS, "accelerator_type": "A100"}
    assert engine.emitter.value("wva_shadow_desired_replicas", **labels) == 3
    assert engine.emitter.value("wva_desired_replicas", **labels) == 2
    engine.forget(NS, "only")
    assert engine.emitter.value("wva_shadow_desired_replicas", **labels) is None
    assert engine.decisions.latest(NS, "only") is None


def test_ring_is_bounded_and_shared() -> None:
    store = DecisionStore(ring_size=3)
    records = [decide_group(MODEL, NS, [VariantInput("a")], None, SaturationScalingConfig(), now=float(i)).record
               for i in range(5)]
    for record in records:
        store.add(record, [(NS, "a"), (NS, "b")])
    assert [r.time for r in store.records(NS, "a")] == [2.0, 3.0, 4.0]
    assert store.records(NS, "a")[0] is store.records(NS, "b")[0]
    with pytest.raises(ValueError, match="at least 1, got 0"):
        DecisionStore(ring_size=0)


def test_pod_inputs_are_tri_state_with_their_own_sample_age() -> None:
    rows = [
        _replica("a", 0.0, 0, pod="a-1", stamp=95.0),
        ReplicaMetrics("a-2", 0.0, 2, "a", NS, MODEL, metadata=ReplicaMetricsMetadata(collected_at=100.0),
                       sample_time=90.0, kv_known=False),
    ]
    variants = [VariantInput("a", current_replicas=3, previous_desired=3, pods=("a-1", "a-2", "a-3"))]
    pods = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(), now=100.0).record.to_dict()[
        "inputs"]["pods"]
    by_pod = {p["pod"]: p for p in pods}
    assert by_pod["a-1"]["kvState"] == "zero" and by_pod["a-1"]["age"] == 5.0
    assert by_pod["a-2"]["kvState"] == "unknown" and by_pod["a-2"]["kvCacheUsage"] is None
    assert by_pod["a-2"]["queueState"] == "value" and by_pod["a-2"]["age"] == 10.0
    assert by_pod["a-3"]["kvState"] == by_pod["a-3"]["queueState"] == "unknown"


def test_explain_text_of_a_known_record_is_pinned() -> None:
    """The flap of the default demo (L4 at its maximum, spare KV 0.075): the text a person reads."""
    config = SaturationScalingConfig(shadow=SaturationScalingConfig(kv_spare_trigger=0.05))
    rows = [_replica("l4", 0.7467, 0, pod=f"llama-l4-7d9f-{i}", stamp=1_765_000_000.0, cost=5.0) for i in range(6)]
    rows += [_replica("h100", 0.6588, 0, pod=f"llama-h100-5c4b-{i}", stamp=1_765_000_000.0, cost=20.0)
             for i in range(2)]
    variants = [VariantInput("l4", "L4", 5.0, 6, 6, 1, 6), VariantInput("h100", "H100", 20.0, 2, 2, 1, None)]
    record = decide_group(MODEL, NS, variants, rows, config, now=1_765_000_002.5, source="prometheus").record
    text = render_explanation(json.loads(json.dumps(record.to_dict())), "l4")
    golden = GOLDEN / "explain_l4_at_max.txt"
    assert text == golden.read_text(encoding="utf-8")


def _replica(variant: str, kv: float, queue: int, *, pod: str | None = None, stamp: float = 0.0,
             cost: float = 10.0) -> ReplicaMetrics:
    return ReplicaMetrics(pod or f"{variant}-1", kv, queue, variant, NS, MODEL, variant.upper(), cost,
                          ReplicaMetricsMetadata(collected_at=stamp or 1.0, source="prometheus"), sample_time=stamp)


def test_every_reason_code_is_documented_in_the_troubleshooting_guide() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert [c.value for c in ReasonCode if f"| `{c.value}` |" not in guide] == []


# --- wva's guards beyond upstream -------------------------------------------------------------------
FLAP_VARIANTS = [VariantInput("l4", "L4", 5.0, 6, 6, 1, 6), VariantInput("h100", "H100", 20.0, 2, 2, 1, None)]


def _flap_rows(l4: float = 0.7467, h100: float = 0.6588) -> list[ReplicaMetrics]:
    """The default demo at t≈1590 s: six L4 pods and two H100 pods just out of saturation."""
    rows = [_replica("l4", l4, 0, pod=f"llama-l4-7d9f-{i}", cost=5.0) for i in range(6)]
    return rows + [_replica("h100", h100, 0, pod=f"llama-h100-5c4b-{i}", cost=20.0) for i in range(2)]


def _after_spike() -> GroupHistory:
    """The previous cycle: every pod saturated at 0.85 (total KV 6.8), no queue."""
    return GroupHistory(load=(8 * 0.85, 0.0))


def test_the_demo_flap_numbers_do_not_scale_up_while_the_load_falls() -> None:
    rows = _flap_rows()
    config = SaturationScalingConfig()
    decision = decide_group(MODEL, NS, FLAP_VARIANTS, rows, config, now=10.0, history=_after_spike())
    record = decision.record
    # upstream's spare rule fires: (6 x 0.0533 + 2 x 0.1412) / 8 = 0.075 < 0.10 ...
    assert record.analysis is not None and record.analysis.avg_spare_kv_capacity == pytest.approx(0.075, abs=1e-3)
    # ... but the load is falling and no pod is within 0.05 of saturation: no scale-up
    assert record.rule == "steady"
    assert [g.name for g in record.guards] == ["falling-load"]
    assert decision.outcome("h100").target == 2 and decision.outcome("h100").code == ReasonCode.HOLD_FALLING_LOAD
    assert decision.outcome("l4").code == ReasonCode.HOLD_FALLING_LOAD
    assert "the load is falling" in decision.outcome("h100").message


def test_strict_upstream_keeps_upstreams_scale_up_on_the_same_numbers() -> None:
    config = SaturationScalingConfig(strict_upstream=True)
    decision = decide_group(MODEL, NS, FLAP_VARIANTS, _flap_rows(), config, now=10.0, history=_after_spike())
    assert decision.record.rule == "scale-up" and decision.record.guards[0].name == "max-bound"
    assert decision.outcome("h100").target == 3 and decision.outcome("h100").code == ReasonCode.SCALE_UP_KV_SPARE_LOW
    assert decision.outcome("l4").code == ReasonCode.AT_MAX_REPLICAS


@pytest.mark.parametrize(
    ("history", "rows", "why"),
    [
        (None, _flap_rows(), "a first cycle has no trend: capacity first"),
        (GroupHistory(load=(5.0, 0.0)), _flap_rows(), "a rising load"),
        (_after_spike(), _flap_rows(l4=0.76), "a pod within the margin of saturation (0.76 >= 0.75)"),
    ],
)
def test_the_falling_load_guard_lets_real_demand_through(
    history: GroupHistory | None, rows: list[ReplicaMetrics], why: str
) -> None:
    decision = decide_group(MODEL, NS, FLAP_VARIANTS, rows, SaturationScalingConfig(), now=10.0, history=history)
    assert decision.record.rule == "scale-up", why
    assert decision.outcome("h100").target == 3, why


async def test_engine_remembers_the_load_between_cycles_so_the_flap_is_held(env: Env) -> None:
    engine, inventory, collector, _kube = env
    setup(env, {"l4": ("5", 6, [0.85] * 6), "h100": ("20", 2, [0.85] * 2)}, l4={"maxReplicas": 6})
    await engine.run_cycle()  # saturated: the step goes to h100 (l4 is at its maximum)
    assert result(last(env, "h100"), "h100")["target"] == 3
    inventory.apply_deployment(deployment("h100", 3))
    collector.kv = {"l4": [0.7467] * 6, "h100": [0.6588] * 3}
    await engine.run_cycle()
    record = last(env, "h100")
    assert record["rule"] == "steady" and result(record, "h100")["code"] == "HoldFallingLoad"


async def test_scale_down_waits_for_the_window_then_goes_ahead(env: Env) -> None:
    engine, _inventory, _collector, _kube = env
    engine.config_store.update({"default": "scaleDownStabilizationWindow: 0.5s\n"})
    setup(env, {"cheap": ("5", 2, [0.1, 0.1]), "pricey": ("20", 2, [0.1, 0.1])})
    await engine.run_cycle()
    first = result(last(env, "pricey"), "pricey")
    assert first["code"] == "HoldScaleDownStabilizing" and first["target"] == 2 and first["recommended"] == 1
    deadline = time.monotonic() + 10
    while True:
        await engine.run_cycle()
        outcome = result(last(env, "pricey"), "pricey")
        if outcome["code"] == "ScaleDownRedistributable" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert outcome["code"] == "ScaleDownRedistributable" and outcome["target"] == 1


def test_the_window_defaults_by_actuation_mode() -> None:
    from wva.actuator.metrics import MetricsEmitter
    from wva.actuator.status import StatusWriter

    def engine(direct: bool) -> SaturationEngine:
        inventory = Inventory()
        kube = FakeKube()
        writer = StatusWriter(kube, inventory)  # type: ignore[arg-type]
        return SaturationEngine(inventory, FakeCollector(), SaturationConfigStore(), writer, MetricsEmitter(),
                                kube, direct_actuation=direct)  # type: ignore[arg-type]

    assert engine(True).default_stabilization_window == 300.0  # wva scales: wva's window
    assert engine(False).default_stabilization_window == 0.0  # the HPA/KEDA path: its own window, not a second one


def test_pending_replicas_make_the_model_wait_and_stuck_ones_pass_the_step() -> None:
    config = SaturationScalingConfig(pending_stuck_after=60.0)
    variants = [VariantInput("cheap", cost=5, current_replicas=3, previous_desired=3, ready_replicas=2),
                VariantInput("pricey", cost=20, current_replicas=1, previous_desired=1, ready_replicas=1)]
    rows = [_replica("cheap", 0.79, 0, pod=f"cheap-{i}", cost=5.0) for i in range(2)]
    rows.append(_replica("pricey", 0.79, 0, pod="pricey-0", cost=20.0))
    waiting = decide_group(MODEL, NS, variants, rows, config, now=100.0,
                           history=GroupHistory(pending_since={"cheap": 70.0}))
    assert waiting.record.plan is not None and waiting.record.plan.waiting_on == "cheap"
    assert {o.code for o in waiting.record.outcomes} == {ReasonCode.HOLD_PENDING_REPLICAS}
    assert waiting.targets == {"cheap": 3, "pricey": 1}
    stuck = decide_group(MODEL, NS, variants, rows, config, now=140.0,
                         history=GroupHistory(pending_since={"cheap": 70.0}))
    assert stuck.outcome("cheap").code == ReasonCode.PENDING_REPLICAS_STUCK
    assert stuck.outcome("pricey").target == 2 and stuck.outcome("pricey").code.startswith("ScaleUp")
    assert any(g.name == "pending-stuck" for g in stuck.record.guards)
    # next_history keeps the pending clock running while the replica stays pending
    assert next_history(GroupHistory(pending_since={"cheap": 70.0}), stuck.record).pending_since == {"cheap": 70.0}


async def test_a_direct_scale_down_marks_the_least_loaded_pod_first() -> None:
    """The engine hands the cycle's per-pod loads to the drain-aware scaler before the scale patch."""
    from wva.actuator.drain import DrainAwareScaler
    from wva.actuator.metrics import MetricsEmitter
    from wva.actuator.status import StatusWriter

    inventory = Inventory()
    kube = FakeKube()
    patched: list[tuple[str, dict[str, str]]] = []

    async def patch_pod_annotations(namespace: str, name: str, annotations: dict[str, str]) -> None:
        patched.append((name, annotations))

    kube.patch_pod_annotations = patch_pod_annotations  # type: ignore[attr-defined]
    collector = FakeCollector()
    engine = SaturationEngine(
        inventory, collector, SaturationConfigStore(), StatusWriter(kube, inventory),  # type: ignore[arg-type]
        MetricsEmitter(), kube, direct_actuation=True,  # type: ignore[arg-type]
        drain=DrainAwareScaler(kube, inventory.ready_pods),  # type: ignore[arg-type]
    )
    engine.config_store.update({"default": "scaleDownStabilizationWindow: 0s\n"})
    inventory.apply_variant(va("only", "10"))
    inventory.apply_deployment(deployment("only", 3))
    for i in range(3):
        inventory.apply_pod({"metadata": {"name": f"only-abc-{i}", "namespace": NS, "uid": f"p{i}",
                                          "ownerReferences": [{"kind": "ReplicaSet", "name": "only-abc"}]},
                             "status": {"podIP": f"10.0.0.{i}", "conditions": [{"type": "Ready", "status": "True"}]}})
    collector.kv["only"] = [0.1, 0.05, 0.2]
    await engine.run_cycle()
    assert kube.scaled[(NS, "only")] == 2
    costs = {name: int(a["controller.kubernetes.io/pod-deletion-cost"]) for name, a in patched}
    assert min(costs, key=lambda n: costs[n]) == "only-abc-1"  # the least loaded goes first


# --- scale to zero ----------------------------------------------------------------------------------
ZERO = SaturationScalingConfig(scale_to_zero=True, scale_to_zero_retention=600.0)
TWO = [VariantInput("cheap", cost=5, current_replicas=1, previous_desired=1),
       VariantInput("pricey", cost=20, current_replicas=1, previous_desired=1)]


def _quiet_rows() -> list[ReplicaMetrics]:
    return [_replica("cheap", 0.0, 0, pod="cheap-1", cost=5.0), _replica("pricey", 0.0, 0, pod="pricey-1", cost=20.0)]


@pytest.mark.parametrize(
    ("idle", "awake_since", "zero"),
    [
        (True, 0.0, True),  # idle for the whole window since it woke: every variant to 0
        (True, 401.0, False),  # awake for 599 s only: one second short of the window
        (True, 400.0, True),  # exactly the window
        (False, 0.0, False),  # a request during the window
        (None, 0.0, False),  # unknown (no series, Prometheus down): never zero
    ],
)
def test_scale_to_zero_needs_a_whole_idle_window(idle: bool | None, awake_since: float, zero: bool) -> None:
    decision = decide_group(MODEL, NS, TWO, _quiet_rows(), ZERO, now=1000.0, idle=idle,
                            history=GroupHistory(awake_since=awake_since))
    targets = decision.targets
    if zero:
        assert targets == {"cheap": 0, "pricey": 0} and decision.record.rule == "scale-to-zero"
        assert {o.code for o in decision.record.outcomes} == {ReasonCode.SCALE_TO_ZERO_IDLE}
    else:
        assert targets == {"cheap": 1, "pricey": 1} and decision.record.rule != "scale-to-zero"


def test_a_model_at_zero_holds_there_without_metrics_and_off_means_never() -> None:
    at_zero = [VariantInput("cheap", cost=5, current_replicas=0, previous_desired=0),
               VariantInput("pricey", cost=20, current_replicas=0, previous_desired=0)]
    decision = decide_group(MODEL, NS, at_zero, None, ZERO, now=1000.0)
    assert decision.targets == {"cheap": 0, "pricey": 0}
    assert {o.code for o in decision.record.outcomes} == {ReasonCode.HOLD_AT_ZERO}
    assert next_history(GroupHistory(awake_since=5.0), decision.record).awake_since is None
    # without scaleToZero an idle model keeps its minimum
    off = decide_group(MODEL, NS, TWO, _quiet_rows(), SaturationScalingConfig(), now=1000.0, idle=True,
                       history=GroupHistory(awake_since=0.0))
    assert off.targets == {"cheap": 1, "pricey": 1}


async def test_engine_scales_an_idle_model_to_zero_keeps_it_there_and_lists_it_for_the_poller(env: Env) -> None:
    engine, inventory, _collector, kube = env
    engine.config_store.update({"default": "scaleToZero: true\nscaleToZeroRetention: 0s\n"})
    asked: list[tuple[str, str, float]] = []

    class Idle:
        async def idle(self, model_id: str, namespace: str, window: float) -> bool | None:
            asked.append((model_id, namespace, window))
            return True

    engine.activity = Idle()  # type: ignore[assignment]
    setup(env, {"cheap": ("5", 1, [0.0]), "pricey": ("20", 1, [0.0])})
    await engine.run_cycle()
    assert asked == [(MODEL, NS, 0.0)]
    assert result(last(env, "cheap"), "cheap")["code"] == "ScaleToZeroIdle"
    assert kube.status[(NS, "cheap")]["desiredOptimizedAlloc"]["numReplicas"] == 0
    assert engine.zero_groups() == []  # the Deployments still have their replica
    for name in ("cheap", "pricey"):
        inventory.apply_deployment(deployment(name, 0))
    assert engine.zero_groups() == [(NS, MODEL, "cheap")]  # the cheapest variant comes back first
    await engine.run_cycle()
    assert len(asked) == 1  # nothing asked at zero
    assert result(last(env, "pricey"), "pricey")["code"] == "HoldAtZero"
    assert kube.status[(NS, "pricey")]["desiredOptimizedAlloc"]["numReplicas"] == 0


async def test_a_wake_at_zero_brings_the_cheapest_variant_to_one_until_it_has_replicas(env: Env) -> None:
    engine, inventory, _collector, kube = env
    engine.config_store.update({"default": "scaleToZero: true\n"})
    setup(env, {"cheap": ("5", 0, []), "pricey": ("20", 0, [])})
    await engine.run_cycle()
    assert result(last(env, "cheap"), "cheap")["code"] == "HoldAtZero"
    engine.wake(NS, MODEL)
    await engine.run_cycle()
    record = last(env, "cheap")
    assert record["rule"] == "from-zero"
    assert (result(record, "cheap")["code"], result(record, "cheap")["target"]) == ("ScaleFromZeroQueued", 1)
    assert (result(record, "pricey")["code"], result(record, "pricey")["target"]) == ("HoldAtZero", 0)
    assert kube.status[(NS, "cheap")]["desiredOptimizedAlloc"]["numReplicas"] == 1
    await engine.run_cycle()  # the Deployment has not caught up yet: the wake still holds
    assert result(last(env, "cheap"), "cheap")["target"] == 1
    inventory.apply_deployment(deployment("cheap", 1))
    await engine.run_cycle()  # replicas again: the normal rules take over and the wake is spent
    assert last(env, "cheap")["rule"] not in ("from-zero", "at-zero")
    assert (NS, MODEL) not in engine._woken


async def test_replicas_ready_condition_says_starting_or_stuck_and_stuck_posts_one_event(env: Env) -> None:
    engine, inventory, _collector, kube = env
    setup(env, {"cheap": ("5", 2, [0.79]), "pricey": ("20", 1, [0.79])})
    body = deployment("cheap", 2)
    body["status"]["readyReplicas"] = 1  # one replica still starting
    inventory.apply_deployment(body)
    await engine.run_cycle()

    def replicas_ready(name: str) -> dict[str, Any]:
        return next(c for c in kube.status[(NS, name)]["conditions"] if c["type"] == "ReplicasReady")

    assert (replicas_ready("cheap")["status"], replicas_ready("cheap")["reason"]) == ("False", "ReplicasStarting")
    assert (replicas_ready("pricey")["status"], replicas_ready("pricey")["reason"]) == ("True", "AllReplicasReady")
    engine.config_store.update({"default": "pendingStuckAfter: 0s\n"})  # stuck at once: no GPU for it
    for _ in range(2):
        await engine.run_cycle()
    assert replicas_ready("cheap")["reason"] == "PendingReplicasStuck"
    stuck_events = [e for e in kube.events if e[1] == "PendingReplicasStuck"]
    assert [e[0] for e in stuck_events] == ["cheap"]  # one Event per episode, not one per cycle
    # the step went on to the next variant by cost (and is now held while it rolls out)
    assert kube.status[(NS, "pricey")]["desiredOptimizedAlloc"]["numReplicas"] == 2


def test_a_saw_tooth_load_does_not_flap_with_the_stabilization_window() -> None:
    """Load that swings between busy and quiet every other cycle (30 s): with the 300 s window the
    variant never gives back a replica it needs again a cycle later; without it, it flaps."""

    def run(window: float) -> list[int]:
        config = SaturationScalingConfig(scale_down_stabilization_window=window)
        replicas, history, seen = 3, None, []
        for step in range(40):
            busy = step % 2 == 0
            kv = 0.78 if busy else 0.2
            rows = [_replica("a", kv, 0, pod=f"a-{i}") for i in range(replicas)]
            variant = [VariantInput("a", cost=5, current_replicas=replicas, previous_desired=replicas, max_replicas=4)]
            decision = decide_group(MODEL, NS, variant, rows, config, now=1000.0 + 30 * step, history=history)
            history = next_history(history, decision.record)
            replicas = decision.outcome("a").target
            seen.append(replicas)
        return seen

    steady = run(300.0)
    changes = sum(1 for a, b in itertools.pairwise(steady) if a != b)
    assert changes <= 1, steady  # at most the first +1 to absorb the peaks, never a -1/+1 see-saw
    flapping = run(0.0)
    assert sum(1 for a, b in itertools.pairwise(flapping) if b < a) >= 5, flapping  # upstream's behaviour


def test_a_pod_reporting_one_signal_is_recorded_with_the_other_unknown() -> None:
    """The record says which signal was unknown (the rules' use of it is pinned below)."""
    meta = ReplicaMetricsMetadata(collected_at=10.0, source="prometheus")
    rows = [ReplicaMetrics("a-1", 0.5, 0, "a", NS, MODEL, metadata=meta, queue_known=False),
            ReplicaMetrics("a-2", 0.0, 3, "a", NS, MODEL, metadata=meta, kv_known=False)]
    variants = [VariantInput("a", current_replicas=2, previous_desired=2)]
    record = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(), now=10.0).record
    pods = {p["pod"]: p for p in record.to_dict()["inputs"]["pods"]}
    one, two = pods["a-1"], pods["a-2"]
    assert (one["kvState"], one["queueState"], one["queueLength"]) == ("value", "unknown", None)
    assert (two["kvState"], two["kvCacheUsage"], two["queueState"]) == ("unknown", None, "value")
    assert record.analysis is not None and record.analysis.non_saturated_count == 2


def test_scale_to_zero_needs_every_replica_reporting() -> None:
    """One replica without metrics may be serving requests the counters never saw: no zero then."""
    partial = [_replica("cheap", 0.0, 0, pod="cheap-1", cost=5.0)]  # pricey's replica reports nothing
    decision = decide_group(MODEL, NS, TWO, partial, ZERO, now=1000.0, idle=True,
                            history=GroupHistory(awake_since=0.0))
    assert decision.record.rule != "scale-to-zero" and decision.targets.get("cheap") == 1
    half = [_replica("cheap", 0.0, 0, pod="cheap-1", cost=5.0),
            ReplicaMetrics("pricey-1", 0.0, 0, "pricey", NS, MODEL, cost=20.0, kv_known=False)]
    decision = decide_group(MODEL, NS, TWO, half, ZERO, now=1000.0, idle=True,
                            history=GroupHistory(awake_since=0.0))
    assert decision.record.rule != "scale-to-zero"


def test_the_zero_list_is_empty_at_once_unless_some_configuration_turns_scale_to_zero_on(env: Env) -> None:
    engine, _inventory, _collector, _kube = env
    setup(env, {"cheap": ("5", 0, [])})
    assert not engine.config_store.any_scale_to_zero and engine.zero_groups() == []
    engine.config_store.update({"default": "scaleToZero: false\n", "m": f"model_id: {MODEL}\nscaleToZero: true\n"})
    assert engine.config_store.any_scale_to_zero and engine.zero_groups() == [(NS, MODEL, "cheap")]
    engine.config_store.update({"default": "scaleToZero: false\n"})
    assert not engine.config_store.any_scale_to_zero and engine.zero_groups() == []


def test_variant_overrides_of_scale_to_zero_merge_to_the_safe_side() -> None:
    from wva.saturation.config import ScaleToZeroOverride as O
    from wva.saturation.config import with_variant_overrides

    on = SaturationScalingConfig(scale_to_zero=True, scale_to_zero_retention=600.0)
    off = SaturationScalingConfig()
    assert with_variant_overrides(on, [O(), O()]) is on  # nothing set: the ConfigMap's word
    assert with_variant_overrides(off, [O(enabled=True), O()]).scale_to_zero  # a variant opts its model in
    assert not with_variant_overrides(on, [O(enabled=True), O(enabled=False)]).scale_to_zero  # one says no
    merged = with_variant_overrides(on, [O(retention=120.0), O(retention=900.0)])
    assert (merged.scale_to_zero, merged.scale_to_zero_retention) == (True, 900.0)  # the longest window


async def test_a_va_opts_its_model_into_scale_to_zero_and_another_keeps_it_up(env: Env) -> None:
    engine, inventory, _collector, kube = env
    windows: list[float] = []

    class Idle:
        async def idle(self, model_id: str, namespace: str, window: float) -> bool | None:
            windows.append(window)
            return True

    engine.activity = Idle()  # type: ignore[assignment]
    engine._histories.clear()
    setup(env, {"cheap": ("5", 1, [0.0]), "pricey": ("20", 1, [0.0])},
          cheap={"scaleToZero": {"enabled": True, "retention": "1ms"}})
    assert engine.zero_groups() == []  # the ConfigMap says nothing: the VA's own opt-in counts
    assert inventory.any_scale_to_zero_opt_in
    await engine.run_cycle()  # first cycle: awake since now, the window has not passed
    assert result(last(env, "cheap"), "cheap")["code"] != "ScaleToZeroIdle"
    for key, history in engine._histories.items():  # the model has been up for long
        engine._histories[key] = dataclasses.replace(history, awake_since=0.0)
    await engine.run_cycle()
    assert windows and windows[-1] == 0.001
    assert result(last(env, "cheap"), "cheap")["code"] == "ScaleToZeroIdle"
    assert kube.status[(NS, "pricey")]["desiredOptimizedAlloc"]["numReplicas"] == 0
    # the pricey variant says no: the model keeps a replica on its cheapest variant
    inventory.apply_variant(va("pricey", "20", scaleToZero={"enabled": False}))
    inventory.apply_deployment(deployment("cheap", 1))
    inventory.apply_deployment(deployment("pricey", 1))
    await engine.run_cycle()
    assert result(last(env, "cheap"), "cheap")["code"] != "ScaleToZeroIdle"
    assert kube.status[(NS, "cheap")]["desiredOptimizedAlloc"]["numReplicas"] >= 1
    inventory.apply_variant(va("cheap", "5"))
    assert not inventory.any_scale_to_zero_opt_in


@pytest.mark.parametrize("retention", ["0s", "10 minutes", "-5m", "5"])
def test_a_bad_scale_to_zero_retention_on_a_va_is_a_problem_naming_the_field(retention: str) -> None:
    inventory = Inventory()
    record = inventory.apply_variant(va("x", "5", scaleToZero={"retention": retention}))
    assert record is not None and record.problem is not None
    assert "spec.scaleToZero.retention" in record.problem and retention in record.problem


def _busy(n: int, kv: float, queue: int = 0) -> list[ReplicaMetrics]:
    return [_replica("a", kv, queue, pod=f"a-{i}") for i in range(n)]


@pytest.mark.parametrize(("max_step", "max_replicas", "strict", "target"), [
    (1, None, False, 5),    # upstream's +1 by default
    (4, None, False, 6),    # 4 pods at 0.9 carry 3.6 of KV: 6 replicas at ≤ 0.7 each, so +2 (not +4)
    (4, 5, False, 5),       # never past maxReplicas
    (4, None, True, 5),     # strictUpstream: +1
])
def test_a_scale_up_adds_what_the_load_needs_up_to_the_max_step(
    max_step: int, max_replicas: int | None, strict: bool, target: int
) -> None:
    config = SaturationScalingConfig(scale_up_max_step=max_step, strict_upstream=strict)
    variants = [VariantInput("a", cost=5, current_replicas=4, previous_desired=4, max_replicas=max_replicas)]
    decision = decide_group(MODEL, NS, variants, _busy(4, 0.9), config, now=100.0)
    outcome = decision.outcome("a")
    assert outcome.target == target
    steps = [g for g in decision.record.guards if g.name == "scale-up-step"]
    if target - 4 > 1:
        assert "+2 at once" in outcome.message and len(steps) == 1 and "about 6 replicas" in steps[0].detail
        assert decision.record.to_dict()["choice"]["step"] == 2
    else:
        assert "at once" not in outcome.message and steps == []


def test_the_queue_alone_can_ask_for_a_bigger_step() -> None:
    # 2 pods with queues of 10 each: 20 / (5 - 3) = 10 replicas needed; the step stops at the max of 3
    config = SaturationScalingConfig(scale_up_max_step=3)
    variants = [VariantInput("a", cost=5, current_replicas=2, previous_desired=2)]
    decision = decide_group(MODEL, NS, variants, _busy(2, 0.1, 10), config, now=100.0)
    assert decision.outcome("a").target == 5


@pytest.mark.parametrize("bad", ["0", "2.5", "true", "'3'", "1001"])
def test_scale_up_max_step_must_be_a_whole_number(bad: str) -> None:
    parsed = parse_saturation_config_data({"default": f"scaleUpMaxStep: {bad}\n"})
    assert "scaleUpMaxStep" in parsed.errors["default"] and "whole number" in parsed.errors["default"]


# --- complete tri-state: a missing signal is unknown, not 0; coverage gates scale-down ----------------
def _partial(pod: str, kv: float | None, queue: int | None, variant: str = "a") -> ReplicaMetrics:
    meta = ReplicaMetricsMetadata(collected_at=10.0, source="prometheus")
    return ReplicaMetrics(pod, kv if kv is not None else 0.0, queue if queue is not None else 0, variant, NS, MODEL,
                          metadata=meta, kv_known=kv is not None, queue_known=queue is not None)


def test_a_missing_signal_is_left_out_of_its_average_instead_of_read_as_zero() -> None:
    # a-1 knows only KV (0.5), a-2 only its queue (3). Upstream reads the gaps as 0: spare KV (0.3 + 0.8) / 2
    # = 0.55 and spare queue (5 + 2) / 2 = 3.5, no trigger. Known values only: spare queue 2 < 3, scale up.
    rows = [_partial("a-1", 0.5, None), _partial("a-2", None, 3)]
    variants = [VariantInput("a", current_replicas=2, previous_desired=2)]
    tri = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(), now=10.0)
    assert tri.record.analysis is not None
    assert (tri.record.analysis.avg_spare_kv_capacity, tri.record.analysis.avg_spare_queue_length) == \
        pytest.approx((0.3, 2.0))
    assert tri.outcome("a").target == 3 and tri.outcome("a").code == ReasonCode.SCALE_UP_QUEUE_SPARE_LOW
    upstream = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(strict_upstream=True), now=10.0)
    assert upstream.record.analysis is not None
    assert (upstream.record.analysis.avg_spare_kv_capacity, upstream.record.analysis.avg_spare_queue_length) == \
        pytest.approx((0.55, 3.5))
    assert upstream.outcome("a").target == 2


def test_only_a_known_signal_saturates_and_a_signal_nobody_knows_fires_no_trigger() -> None:
    variants = [VariantInput("a", current_replicas=2, previous_desired=2)]
    # every pod lacks KV (a renamed metric): the KV trigger cannot fire on made-up zeros, the queue decides
    rows = [_partial("a-1", None, 1), _partial("a-2", None, 0)]
    decision = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(), now=10.0)
    assert decision.record.analysis is not None and not decision.record.analysis.should_scale_up
    assert decision.outcome("a").code == ReasonCode.HOLD_UNKNOWN_SIGNAL  # coverage 0 of 2: held, and says so
    assert "coverage 0.00" in decision.outcome("a").message
    # a pod whose only known signal is at its threshold is saturated
    rows = [_partial("a-1", None, 6), _partial("a-2", 0.1, 0)]
    analysis = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(), now=10.0).record.analysis
    assert analysis is not None and analysis.non_saturated_count == 1


@pytest.mark.parametrize(("minimum", "strict", "target", "code"), [
    (1.0, False, 3, ReasonCode.HOLD_UNKNOWN_SIGNAL),       # 2 of 3 serving replicas covered: no scale-down
    (0.6, False, 2, ReasonCode.SCALE_DOWN_REDISTRIBUTABLE),  # 0.67 is enough for this model
    (1.0, True, 2, ReasonCode.SCALE_DOWN_REDISTRIBUTABLE),  # upstream reads the gap as 0 and scales down
])
def test_coverage_below_the_minimum_holds_a_scale_down(
    minimum: float, strict: bool, target: int, code: ReasonCode
) -> None:
    # three ready replicas at low load; a-3 reports its KV but not its queue
    rows = [_partial("a-1", 0.1, 0), _partial("a-2", 0.1, 0), _partial("a-3", 0.1, None)]
    variants = [VariantInput("a", current_replicas=3, previous_desired=3, ready_replicas=3)]
    config = SaturationScalingConfig(min_signal_coverage=minimum, strict_upstream=strict,
                                     scale_down_stabilization_window=0.0)
    decision = decide_group(MODEL, NS, variants, rows, config, now=10.0)
    outcome = decision.outcome("a")
    assert (outcome.target, outcome.code) == (target, code)
    if code == ReasonCode.HOLD_UNKNOWN_SIGNAL:
        assert "signal coverage 0.67 (2 of 3 serving replicas" in outcome.message
        assert "minSignalCoverage 1.00" in outcome.message


def test_a_ready_replica_that_is_not_scraped_lowers_the_coverage_but_a_pending_one_blocks_anyway() -> None:
    rows = [_partial("a-1", 0.1, 0), _partial("a-2", 0.1, 0)]
    loose = SaturationScalingConfig(min_signal_coverage=0.5, scale_down_stabilization_window=0.0)
    ready = [VariantInput("a", current_replicas=3, previous_desired=3, ready_replicas=3)]
    assert decide_group(MODEL, NS, ready, rows, loose, now=10.0).outcome("a").target == 2  # 2/3 ≥ 0.5
    pending = [VariantInput("a", current_replicas=3, previous_desired=3, ready_replicas=2)]
    held = decide_group(MODEL, NS, pending, rows, loose, now=10.0)
    assert held.outcome("a").target == 3  # a replica on the way: no scale-down before it reports
    assert any(g.name == "unknown-signal-hold" and g.variant == "a" for g in held.record.guards)


def test_low_coverage_never_scales_to_zero() -> None:
    rows = [_partial("cheap-1", 0.0, 0, "cheap"), _partial("pricey-1", 0.0, None, "pricey")]
    config = SaturationScalingConfig(scale_to_zero=True, min_signal_coverage=0.4)
    decision = decide_group(MODEL, NS, TWO, rows, config, now=1000.0, idle=True, history=GroupHistory(awake_since=0.0))
    assert decision.record.rule != "scale-to-zero" and all(t >= 1 for t in decision.targets.values())


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "true", "'0.5'"])
def test_min_signal_coverage_must_be_a_share(bad: str) -> None:
    parsed = parse_saturation_config_data({"default": f"minSignalCoverage: {bad}\n"})
    assert "minSignalCoverage" in parsed.errors["default"]


def test_a_queue_scale_up_with_kv_unknown_everywhere_is_coded_and_worded_as_queue_only() -> None:
    rows = [_partial("a-1", None, 4), _partial("a-2", None, 4)]  # spare queue 1 < 3; KV unknown on both
    variants = [VariantInput("a", current_replicas=2, previous_desired=2)]
    outcome = decide_group(MODEL, NS, variants, rows, SaturationScalingConfig(), now=10.0).outcome("a")
    assert (outcome.target, outcome.code) == (3, ReasonCode.SCALE_UP_QUEUE_SPARE_LOW)
    assert "spare queue 1.0 < 3.0" in outcome.message and "spare KV" not in outcome.message
