"""The saturation engine drives batching: one begin_cycle per cycle, per-namespace queries, no API reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from test_batching import NOW, FakePrometheus, Pod

from wva.actuator.metrics import MetricsEmitter
from wva.actuator.status import StatusWriter
from wva.api.constants import API_VERSION, KIND
from wva.collector.v2 import PodVAMapper, PrometheusSource, PrometheusSourceConfig, SourceRegistry, V2MetricsCollector
from wva.inventory import Inventory
from wva.saturation.config import SaturationConfigStore
from wva.saturation.engine import SaturationEngine

WRITES = {"patch_va_status", "create_event", "patch_deployment_scale"}


class RecordingKube:
    """Answers every call at once and records it; anything but the three writes is an API read."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    async def patch_va_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.calls[("write", "patch_va_status")] += 1
        return {"status": status}

    async def create_event(self, *args: Any, **kwargs: Any) -> None:
        self.calls[("write", "create_event")] += 1

    async def patch_deployment_scale(self, *args: Any, **kwargs: Any) -> None:
        self.calls[("write", "patch_deployment_scale")] += 1

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def read(*args: Any, **kwargs: Any) -> None:
            self.calls[("read", name)] += 1

        return read

    def reads(self) -> int:
        return sum(n for (kind, _), n in self.calls.items() if kind == "read")


def fleet(inventory: Inventory, n: int, namespaces: int) -> list[Pod]:
    pods = []
    for i in range(n):
        ns, dep, model = f"ns{i % namespaces}", f"dep{i}", f"org/model-{i}"
        inventory.apply_deployment(
            {"metadata": {"name": dep, "namespace": ns}, "spec": {"replicas": 2},
             "status": {"replicas": 2, "readyReplicas": 2}}
        )
        inventory.apply_variant(
            {
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": f"va{i}", "namespace": ns, "generation": 1},
                "spec": {
                    "scaleTargetRef": {"kind": "Deployment", "name": dep},
                    "modelID": model,
                    "variantCost": "10.0",
                    "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 256}]},
                },
            }
        )
        for j in range(2):
            pod = f"{dep}-5d8f9c7b6-x{j}"
            inventory.apply_pod(
                {
                    "metadata": {
                        "name": pod, "namespace": ns, "labels": {"pod-template-hash": "5d8f9c7b6"},
                        "ownerReferences": [{"kind": "ReplicaSet", "name": f"{dep}-5d8f9c7b6", "controller": True}],
                    },
                    "status": {"phase": "Running", "podIP": "10.0.0.1",
                               "conditions": [{"type": "Ready", "status": "True"}]},
                }
            )
            pods.append(Pod(ns, model, pod, kv=0.95 if i % 2 else 0.3, queue=0.0))
    return pods


def engine_for(n: int, namespaces: int, *, batch: bool) -> tuple[SaturationEngine, FakePrometheus, RecordingKube]:
    inventory = Inventory(PodVAMapper())
    prom = FakePrometheus(fleet(inventory, n, namespaces))
    registry = SourceRegistry()
    registry.register("prometheus", PrometheusSource(prom, PrometheusSourceConfig(retry_max_attempts=1)))
    collector = V2MetricsCollector(registry, inventory.mapper, batch_queries=batch, clock=lambda: NOW)
    kube = RecordingKube()
    engine = SaturationEngine(
        inventory, collector, SaturationConfigStore(), StatusWriter(kube, inventory),  # type: ignore[arg-type]
        MetricsEmitter(), kube,  # type: ignore[arg-type]
    )
    return engine, prom, kube


async def test_engine_cycle_batches_per_namespace_and_reads_nothing_from_the_api() -> None:
    engine, prom, kube = engine_for(30, 3, batch=True)
    first = await engine.run_cycle()
    assert not first.group_errors
    assert len(prom.queries) == 3  # one combined batch query per namespace
    # saturated models (odd i, kv 0.95) scale up, the others hold or go down: the batch fed real decisions
    ups = {d.variant for d in first.decisions.values() if d.target > 2}
    assert ups == {f"va{i}" for i in range(30) if i % 2}
    prom.queries.clear()
    writes_before = sum(kube.calls.values())
    second = await engine.run_cycle()
    assert len(prom.queries) == 3  # a new batch every cycle; nothing served from the old one
    assert kube.reads() == 0  # pod -> VA mapping came from the inventory alone
    assert second.kube_calls == sum(kube.calls.values()) - writes_before


async def test_engine_decisions_equal_with_and_without_batching() -> None:
    batched, prom_b, _ = engine_for(12, 2, batch=True)
    single, prom_s, _ = engine_for(12, 2, batch=False)
    got, want = await batched.run_cycle(), await single.run_cycle()
    assert {k: d.target for k, d in got.decisions.items()} == {k: d.target for k, d in want.decisions.items()}
    assert len(got.decisions) == 12
    assert (len(prom_b.queries), len(prom_s.queries)) == (2, 96)
