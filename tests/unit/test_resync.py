"""Inventory resync: objects deleted while the watches were blind are forgotten, newer watch state wins."""

from __future__ import annotations

import asyncio
from typing import Any

from wva.api.constants import PLURAL
from wva.inventory import Inventory
from wva.resync import InventoryResync


def _va(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": name}, "modelID": "m",
                 "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 8}]}},
    }


def _pod(ns: str, name: str, deployment: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns,
                     "ownerReferences": [{"kind": "ReplicaSet", "name": f"{deployment}-abc", "controller": True}]},
        "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


class FakeKube:
    def __init__(self, objects: dict[str, set[tuple[str, str]]], inventory: Inventory | None = None) -> None:
        self.objects = objects
        self.recovered = asyncio.Event()
        self.listed: list[tuple[str, str | None]] = []
        self.during_list: Any = None  # a callable run while a list is "in flight"

    async def list_keys(self, kind: str, namespace: str | None = None) -> set[tuple[str, str]]:
        self.listed.append((kind, namespace))
        if self.during_list is not None:
            self.during_list(kind)
        return {key for key in self.objects.get(kind, set()) if namespace is None or key[0] == namespace}


async def test_deleted_while_unwatched_is_forgotten_and_reported() -> None:
    inventory = Inventory()
    for name in ("kept", "ghost"):
        inventory.apply_variant(_va("a", name))
    inventory.apply_pod(_pod("a", "kept-abc-1", "kept"))
    inventory.apply_pod(_pod("a", "ghost-abc-1", "ghost"))
    gone: list[tuple[str, str]] = []
    kube = FakeKube({PLURAL: {("a", "kept")}, "deployments": set(), "pods": {("a", "kept-abc-1")}})
    resync = InventoryResync(kube, inventory, lambda ns, name: gone.append((ns, name)))  # type: ignore[arg-type]
    result = await resync.resync_once()
    assert gone == [("a", "ghost")]
    assert [v.name for v in inventory.variants()] == ["kept"]
    assert result.removed == {"variants": [("a", "ghost")], "pods": [("a", "ghost-abc-1")]}
    assert inventory.mapper.get_va_for_pod("ghost-abc-1", "a") is None


async def test_an_object_the_watch_touched_during_the_list_is_kept() -> None:
    inventory = Inventory()
    inventory.apply_variant(_va("a", "fresh"))
    kube = FakeKube({PLURAL: set()})
    # the watch delivers a newer event for "fresh" while the (older) list is in flight
    kube.during_list = lambda kind: inventory.apply_variant(_va("a", "fresh")) if kind == PLURAL else None
    gone: list[tuple[str, str]] = []
    resync = InventoryResync(kube, inventory, lambda ns, name: gone.append((ns, name)))  # type: ignore[arg-type]
    await resync.resync_once()
    assert gone == [] and inventory.variant("a", "fresh") is not None


async def test_only_watched_namespaces_are_listed_and_pruned() -> None:
    inventory = Inventory()
    inventory.apply_variant(_va("a", "x"))
    inventory.apply_variant(_va("other", "y"))
    kube = FakeKube({PLURAL: set()})
    resync = InventoryResync(kube, inventory, lambda ns, name: None, namespaces=["a"])  # type: ignore[arg-type]
    await resync.resync_once()
    assert {(k, n) for k, n in kube.listed} == {(PLURAL, "a"), ("deployments", "a"), ("pods", "a")}
    assert inventory.variant("a", "x") is None and inventory.variant("other", "y") is not None


async def test_a_recovery_triggers_a_resync_without_waiting_for_the_interval() -> None:
    inventory = Inventory()
    inventory.apply_variant(_va("a", "ghost"))
    kube = FakeKube({PLURAL: set()})
    resync = InventoryResync(kube, inventory, lambda ns, name: None, interval=3600, settle=0.0)  # type: ignore[arg-type]
    resync.start()
    try:
        kube.recovered.set()
        for _ in range(200):
            if resync.runs:
                break
            await asyncio.sleep(0.01)
        assert resync.runs == 1 and inventory.variant("a", "ghost") is None
        assert not kube.recovered.is_set(), "the trigger is consumed"
    finally:
        await resync.stop()
