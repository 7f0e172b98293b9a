"""Inventory resync: forget objects that were deleted while the watches could not see it.

kopf keeps its watches alive across apiserver restarts, and after a ``410 Gone`` it lists again, but a
relist reports only the objects that exist: a VariantAutoscaling, Deployment or Pod deleted while wva
was disconnected never produces a DELETED event. Left alone, such a ghost keeps its
``wva_desired_replicas`` series (an HPA would act on it) and ghost pods count as replicas without
metrics, which blocks scale-down.

So the runtime lists the three kinds (names only, paged) and drops inventory entries the server no
longer has: shortly after the API becomes reachable again following transport failures, and every
``WVA_RESYNC_INTERVAL`` (default 5 minutes) as a safety net. Entries that a watch event touched
after the snapshot are kept: the watch is newer than the list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wva.api.constants import PLURAL
from wva.inventory import Inventory, Key
from wva.kube import KubeClient, KubeError
from wva.tasks import cancel_and_wait

log = logging.getLogger(__name__)

KINDS = (("variants", PLURAL), ("deployments", "deployments"), ("pods", "pods"))


@dataclass
class ResyncResult:
    removed: dict[str, list[Key]] = field(default_factory=dict)  # by inventory kind, what was forgotten


class InventoryResync:
    def __init__(
        self,
        kube: KubeClient,
        inventory: Inventory,
        on_variant_gone: Callable[[str, str], None],
        namespaces: Sequence[str] = (),
        interval: float = 300.0,
        settle: float = 3.0,
    ) -> None:
        self.kube = kube
        self.inventory = inventory
        self.on_variant_gone = on_variant_gone
        self.namespaces = list(namespaces)
        self.interval = interval
        self.settle = settle  # after a recovery, give the watches a moment to reconnect and relist first
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="wva-inventory-resync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kube.recovered.wait(), timeout=self.interval)
            if self.kube.recovered.is_set():
                self.kube.recovered.clear()
                log.info("Kubernetes API reachable again; resyncing the inventory in %.0fs", self.settle)
                await asyncio.sleep(self.settle)
            try:
                await self.resync_once()
            except KubeError as exc:
                log.warning("Inventory resync failed error=%s", exc)

    async def resync_once(self) -> ResyncResult:
        result = ResyncResult()
        scopes: list[str | None] = list(self.namespaces) or [None]
        watched = set(self.namespaces)
        for kind, resource in KINDS:
            before = self.inventory.snapshot(kind)
            present: set[Key] = set()
            for namespace in scopes:
                present |= await self.kube.list_keys(resource, namespace)
            if watched:
                before = {key: record for key, record in before.items() if key[0] in watched}
            gone = self.inventory.prune(kind, before, present)
            if gone:
                result.removed[kind] = gone
                for namespace, name in gone:
                    log.info("Resync: %s gone while unwatched namespace=%s name=%s", kind, namespace, name)
                    if kind == "variants":
                        self.on_variant_gone(namespace, name)
        self.runs += 1
        return result
