"""Cold-start times learnt from the pod watch, and the scale-down hold they drive."""

from __future__ import annotations

from typing import Any

from wva.coldstart import ColdStartTracker
from wva.collector.types import ReplicaMetrics, ReplicaMetricsMetadata
from wva.decisions import ReasonCode, VariantInput, decide_group
from wva.decisions.decide import GroupHistory, next_history
from wva.inventory import Inventory
from wva.saturation.config import SaturationScalingConfig

NS = "llm"


def pod(name: str, created: str, ready_at: str | None, *, ready: bool = True) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_at}]
    return {
        "metadata": {"name": name, "namespace": NS, "uid": name, "creationTimestamp": created,
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "llama-7c9d"}]},
        "status": {"podIP": "10.0.0.1", "phase": "Running", "conditions": conditions},
    }


def test_the_median_of_creation_to_ready_counts_each_pod_once() -> None:
    inventory = Inventory()
    inventory.apply_pod(pod("llama-7c9d-a", "2026-01-01T00:00:00Z", None, ready=False))  # still starting
    assert inventory.cold_starts.median(NS, "llama") is None
    inventory.apply_pod(pod("llama-7c9d-a", "2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z"))  # 90 s
    inventory.apply_pod(pod("llama-7c9d-a", "2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z"))  # the same, again
    inventory.apply_pod(pod("llama-7c9d-b", "2026-01-01T00:00:00Z", "2026-01-01T00:02:00Z"))  # 120 s
    inventory.apply_pod(pod("llama-7c9d-c", "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z"))  # 600 s: slow node
    assert inventory.cold_starts.samples(NS, "llama") == 3
    assert inventory.cold_starts.median(NS, "llama") == 120.0  # one slow pod does not move the median much
    inventory.apply_pod(pod("llama-7c9d-d", "not a time", "2026-01-01T00:02:00Z"))  # unusable: ignored
    assert inventory.cold_starts.samples(NS, "llama") == 3


def test_the_window_keeps_the_most_recent_pods() -> None:
    tracker = ColdStartTracker(window=3)
    for i, seconds in enumerate((10.0, 20.0, 300.0, 310.0, 320.0)):
        tracker.observe(NS, "d", f"p{i}", 0.0, seconds)
    assert tracker.median(NS, "d") == 310.0


def _rows() -> list[ReplicaMetrics]:
    meta = ReplicaMetricsMetadata(collected_at=1.0)
    return [ReplicaMetrics(f"{v}-{i}", 0.1, 0, v, NS, "m", cost=c, metadata=meta)
            for v, c, n in (("cheap", 5.0, 2), ("pricey", 20.0, 2)) for i in range(n)]


def test_a_variant_that_just_scaled_up_gives_no_replica_back_within_its_cold_start() -> None:
    variants = [VariantInput("cheap", cost=5, current_replicas=2, previous_desired=2, cold_start=90.0),
                VariantInput("pricey", cost=20, current_replicas=2, previous_desired=2, cold_start=90.0)]
    config = SaturationScalingConfig(scale_down_stabilization_window=0.0)
    history = GroupHistory(scaled_up_at={"pricey": 950.0})
    held = decide_group("m", NS, variants, _rows(), config, now=1000.0, history=history)
    # the most expensive variant would give the -1, but it came up 50 s ago (cold start 90 s): cheap does
    assert held.outcome("pricey").code == ReasonCode.HOLD_COLD_START and held.outcome("pricey").target == 2
    assert held.outcome("cheap").code == ReasonCode.SCALE_DOWN_REDISTRIBUTABLE and held.outcome("cheap").target == 1
    assert any(g.name == "cold-start-hold" for g in held.record.guards)
    later = decide_group("m", NS, variants, _rows(), config, now=1041.0, history=history)
    assert later.outcome("pricey").code == ReasonCode.SCALE_DOWN_REDISTRIBUTABLE  # 91 s: past its cold start
    strict = decide_group("m", NS, variants, _rows(), config.model_copy(update={"strict_upstream": True}),
                          now=1000.0, history=history)
    assert strict.outcome("pricey").code == ReasonCode.SCALE_DOWN_REDISTRIBUTABLE


def test_history_remembers_each_variants_last_scale_up() -> None:
    variants = [VariantInput("cheap", cost=5, current_replicas=1, previous_desired=1)]
    meta = ReplicaMetricsMetadata(collected_at=1.0)
    rows = [ReplicaMetrics("cheap-0", 0.95, 0, "cheap", NS, "m", cost=5.0, metadata=meta)]
    up = decide_group("m", NS, variants, rows, SaturationScalingConfig(), now=500.0)
    assert up.outcome("cheap").target == 2
    assert next_history(None, up.record).scaled_up_at == {"cheap": 500.0}
