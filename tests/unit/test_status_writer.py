"""StatusWriter: complete sub-objects, writes only on change (or heartbeat), corrects outside edits."""

from __future__ import annotations

from typing import Any

from wva.actuator.status import ConditionUpdate, StatusUpdate, StatusWriter
from wva.inventory import Inventory


class Kube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_va_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.patches.append(status)
        return {"status": status}


VA = {
    "metadata": {"name": "v", "namespace": "ns", "generation": 2},
    "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "modelID": "m",
             "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 8}]}},
}
UPDATE = StatusUpdate(
    conditions=(ConditionUpdate("MetricsAvailable", True, "MetricsFound", "ok"),),
    desired=(3, "L4"),
    actuation_applied=True,
)


async def test_identical_updates_write_once_and_the_write_is_complete() -> None:
    inventory, kube = Inventory(), Kube()
    record = inventory.apply_variant(VA)
    assert record is not None
    writer = StatusWriter(kube, inventory)  # type: ignore[arg-type]
    for _ in range(3):
        assert await writer.write(record, UPDATE)
    assert len(kube.patches) == 1
    body = kube.patches[0]
    assert body["desiredOptimizedAlloc"]["numReplicas"] == 3 and body["desiredOptimizedAlloc"]["accelerator"] == "L4"
    assert "lastRunTime" in body["desiredOptimizedAlloc"]
    assert body["actuation"] == {"applied": True}
    assert body["conditions"][0]["observedGeneration"] == 2


async def test_an_outside_edit_of_the_status_is_corrected_at_the_next_write() -> None:
    inventory, kube = Inventory(), Kube()
    record = inventory.apply_variant(VA)
    assert record is not None
    writer = StatusWriter(kube, inventory)  # type: ignore[arg-type]
    await writer.write(record, UPDATE)
    # someone else sets the decision to 7; the watch delivers it
    edited = {**VA, "status": {**kube.patches[-1], "desiredOptimizedAlloc": {"accelerator": "L4", "numReplicas": 7}}}
    record = inventory.apply_variant(edited)
    assert record is not None
    await writer.write(record, UPDATE)
    assert len(kube.patches) == 2 and kube.patches[-1]["desiredOptimizedAlloc"]["numReplicas"] == 3


async def test_heartbeat_rewrites_an_unchanged_status() -> None:
    inventory, kube = Inventory(), Kube()
    record = inventory.apply_variant(VA)
    assert record is not None
    writer = StatusWriter(kube, inventory, heartbeat=0.0)  # type: ignore[arg-type]
    await writer.write(record, UPDATE)
    await writer.write(record, UPDATE)
    assert len(kube.patches) == 2
