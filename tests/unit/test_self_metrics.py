"""The per-variant gauges the dashboard and alerts read: ready and reporting replicas, the decision's
reason code, configuration errors — published by a real engine cycle with fake edges."""

from __future__ import annotations

from typing import Any

from test_engine import MODEL, NS, _fresh_env, deployment, va

from wva.actuator.metrics import MetricsEmitter


def _gauge(engine: Any, name: str, **labels: str) -> float | None:
    value: float | None = engine.emitter.value(name, **labels)
    return value


def _reasons(emitter: MetricsEmitter) -> dict[str, str]:
    """variant -> reason of every wva_decision_reason series (each must be 1)."""
    out: dict[str, str] = {}
    for metric in emitter.registry.collect():
        if metric.name != "wva_decision_reason":
            continue
        for sample in metric.samples:
            assert sample.value == 1
            assert sample.labels["variant_name"] not in out, "one reason series per variant"
            out[sample.labels["variant_name"]] = sample.labels["reason"]
    return out


async def test_cycle_publishes_ready_reporting_and_the_reason_code() -> None:
    engine, inventory, collector, _kube = _fresh_env()
    inventory.apply_variant(va("v", maxReplicas=3))
    dep = deployment("v", 3)
    dep["status"]["readyReplicas"] = 3
    inventory.apply_deployment(dep)
    collector.kv["v"] = [0.95, 0.95]  # one of three ready replicas reports nothing
    await engine.run_cycle()
    labels = {"variant_name": "v", "namespace": NS, "accelerator_type": "A100"}
    assert _gauge(engine, "wva_ready_replicas", **labels) == 3
    assert _gauge(engine, "wva_reporting_replicas", **labels) == 2
    assert _gauge(engine, "wva_decision_reason", variant_name="v", namespace=NS, model_id=MODEL,
                  reason="AtMaxReplicas") == 1

    # the reason series is replaced, never accumulated, when the code changes
    collector.kv["v"] = [0.5, 0.5, 0.5]
    await engine.run_cycle()
    assert _gauge(engine, "wva_reporting_replicas", **labels) == 3
    assert _reasons(engine.emitter) == {"v": "HoldSteady"}

    # metrics unavailable: nobody reports, and the reason says so
    collector.availability_error = True
    await engine.run_cycle()
    assert _gauge(engine, "wva_reporting_replicas", **labels) == 0
    assert _reasons(engine.emitter) == {"v": "HoldMetricsUnavailable"}

    # a deleted VA loses every series
    inventory.delete_variant(NS, "v")
    engine.forget(NS, "v")
    assert _reasons(engine.emitter) == {}
    assert _gauge(engine, "wva_ready_replicas", **labels) is None
    assert _gauge(engine, "wva_reporting_replicas", **labels) is None


async def test_invalid_variants_are_counted_as_config_errors() -> None:
    engine, inventory, collector, _kube = _fresh_env()
    assert _gauge(engine, "wva_config_errors", kind="variant") == 0  # present from the start
    assert _gauge(engine, "wva_config_errors", kind="saturation_config") == 0
    inventory.apply_variant(va("noacc", acc=None))
    inventory.apply_deployment(deployment("noacc", 1))
    inventory.apply_variant(va("good"))
    inventory.apply_deployment(deployment("good", 1))
    collector.kv["good"] = [0.5]
    await engine.run_cycle()
    assert _gauge(engine, "wva_config_errors", kind="variant") == 1
    inventory.apply_variant(va("noacc"))  # fixed
    await engine.run_cycle()
    assert _gauge(engine, "wva_config_errors", kind="variant") == 0


def test_a_standby_publishes_no_reason_and_no_config_errors() -> None:
    emitter = MetricsEmitter(controller_instance="ci-1")
    emitter.emit("v", NS, "A100", 2, 2, ready=2, reporting=1)
    emitter.emit_reason("v", NS, MODEL, "HoldSteady")
    emitter.operator.config_errors.labels("variant").set(2)
    assert emitter.value("wva_decision_reason", variant_name="v", namespace=NS, model_id=MODEL,
                         reason="HoldSteady", controller_instance="ci-1") == 1
    assert emitter.value("wva_reporting_replicas", variant_name="v", namespace=NS, accelerator_type="A100",
                         controller_instance="ci-1") == 1
    emitter.clear()
    assert _reasons(emitter) == {}
    assert emitter.value("wva_ready_replicas", variant_name="v", namespace=NS, accelerator_type="A100",
                         controller_instance="ci-1") is None
    assert emitter.value("wva_config_errors", kind="variant") == 0


def test_emit_without_ready_keeps_the_last_value() -> None:
    emitter = MetricsEmitter()
    emitter.emit("v", NS, "A100", 2, 2, ready=2, reporting=2)
    emitter.emit("v", NS, "A100", 1, 0)  # a wake from zero publishes the decision only
    labels = {"variant_name": "v", "namespace": NS, "accelerator_type": "A100"}
    assert emitter.value("wva_desired_replicas", **labels) == 1
    assert emitter.value("wva_ready_replicas", **labels) == 2
