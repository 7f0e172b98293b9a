"""Writes VariantAutoscaling status: complete sub-objects, all three conditions, retried on transient errors.

Each VA's status is built from the last status we know (what we wrote, or what the watch delivered)
plus the changes of this cycle, and sent as a merge patch to the status subresource, guarded by the
resourceVersion it was built on: when the object changed meanwhile, the server answers 409, the VA is
read again and the same changes are applied on top of what is stored (conditions of other writers
survive). Conditions are
a list, which a merge patch replaces whole, so the full list is always sent. Writes for one VA are
serialised; a write that changes nothing but ``lastRunTime`` is skipped until the heartbeat is due,
which keeps API traffic proportional to change rather than to fleet size.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wva.api.v1alpha1 import (
    ActuationStatus,
    Allocation,
    Condition,
    LastDecision,
    OptimizedAlloc,
    VariantAutoscalingStatus,
    set_condition,
)
from wva.inventory import Inventory, VariantRecord
from wva.kube import KubeClient, KubeError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DecisionSummary:
    """``status.lastDecision``. Only the code and the config hash make a write due; the message's
    numbers, the record id and the time ride along with writes made for other reasons (and the heartbeat)."""

    code: str
    config_hash: str
    message: str = field(default="", compare=False)
    record_id: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What one cycle (or handler) wants to change; None fields are left as they are."""

    conditions: tuple[ConditionUpdate, ...] = ()
    desired: tuple[int, str] | None = None  # (replicas, accelerator)
    current_alloc: Allocation | None = None
    actuation_applied: bool | None = None
    decision: DecisionSummary | None = None


class StatusWriter:
    def __init__(
        self,
        kube: KubeClient,
        inventory: Inventory,
        *,
        heartbeat: float = 300.0,
        max_attempts: int = 4,
        max_conflicts: int = 5,
        backoff: float = 0.2,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.kube = kube
        self.inventory = inventory
        self.heartbeat = heartbeat
        self.max_attempts = max_attempts
        self.max_conflicts = max_conflicts
        self.backoff = backoff
        self._now = now or (lambda: datetime.datetime.now(datetime.UTC))
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._last_full_write: dict[tuple[str, str], float] = {}
        self._last_written: dict[tuple[str, str], tuple[VariantAutoscalingStatus, dict[str, Any]]] = {}
        self._last_update: dict[tuple[str, str], StatusUpdate] = {}
        self.failed_writes = 0
        self.conflicts = 0  # writes that lost a resourceVersion race and were rebuilt on a fresh read

    def tracked(self) -> set[tuple[str, str]]:
        """Every VA (namespace, name) the writer keeps state for."""
        return {*self._locks, *self._last_full_write, *self._last_written, *self._last_update}

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._last_full_write.pop((namespace, name), None)
        self._last_written.pop((namespace, name), None)
        self._last_update.pop((namespace, name), None)

    def build(self, record: VariantRecord, update: StatusUpdate) -> VariantAutoscalingStatus:
        """The complete status after applying ``update`` to what we know (pure; for tests too)."""
        now = self._now().replace(microsecond=0)
        status = record.status
        conditions: list[Condition] = list(status.conditions)
        for cond in update.conditions:
            conditions = set_condition(
                conditions, cond.type, cond.status, cond.reason, cond.message[:32768], record.generation, now
            )
        desired = status.desired_optimized_alloc
        if update.desired is not None:
            replicas, accelerator = update.desired
            if len(accelerator) >= 2:  # the CRD's minLength; otherwise leave the old decision in place
                desired = OptimizedAlloc(accelerator=accelerator, num_replicas=replicas, last_run_time=now)
        actuation = status.actuation
        if update.actuation_applied is not None:
            actuation = ActuationStatus(applied=update.actuation_applied)
        last_decision = status.last_decision
        if update.decision is not None:
            last_decision = LastDecision(
                reason=update.decision.code,
                message=update.decision.message[:1024],
                record_id=update.decision.record_id[:64] or None,
                config_hash=update.decision.config_hash[:64] or None,
                time=now,
            )
        return VariantAutoscalingStatus(
            current_alloc=update.current_alloc or status.current_alloc,
            desired_optimized_alloc=desired,
            last_decision=last_decision,
            actuation=actuation,
            conditions=conditions,
        )

    async def write(self, record: VariantRecord, update: StatusUpdate) -> bool:
        """Apply ``update``; True once the API accepted it (or nothing needed writing)."""
        key = record.key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            # the record may have changed while we waited for the lock
            record = self.inventory.variant(record.namespace, record.name) or record
            if self._unchanged(key, record.status, update):
                return True  # same inputs on top of the status we wrote: nothing to build or send
            new_status, body, comparable = self._prepare(record, update)
            if not self._needs_write(key, record.status, comparable):
                # the stored status already says this: remember it so the next identical update is free
                self._remember(key, record.status, comparable, update)
                return True
            attempt = conflicts = 0  # failed attempts (backed off) and lost races (re-read at once)
            while True:
                try:
                    result = await self.kube.patch_va_status(
                        record.namespace, record.name, body, record.resource_version
                    )
                except KubeError as exc:
                    if exc.status == 404:
                        log.info("VA vanished before its status write namespace=%s name=%s", *key)
                        return False
                    if exc.status == 409 and conflicts < self.max_conflicts:
                        # someone wrote the object since the version we built on: re-read it and apply
                        # this cycle's changes on top of what is stored now, so neither write is lost
                        conflicts += 1
                        self.conflicts += 1
                        log.info(
                            "Status write conflict namespace=%s name=%s resourceVersion=%s: re-reading",
                            record.namespace, record.name, record.resource_version,
                        )
                        fresh = await self._reread(record)
                        if fresh is None:
                            return False
                        record = fresh
                        new_status, body, comparable = self._prepare(record, update)
                        if not self._needs_write(key, record.status, comparable):
                            self._remember(key, record.status, comparable, update)
                            return True
                        continue
                    attempt += 1
                    if not exc.retryable or attempt >= self.max_attempts:
                        self.failed_writes += 1
                        log.warning(
                            "Status write failed namespace=%s name=%s attempt=%d error=%s",
                            record.namespace, record.name, attempt, exc,
                        )
                        return False
                    delay = self.backoff * (2 ** (attempt - 1)) * (1 + random.random() * 0.1)
                    log.info(
                        "Status write retry namespace=%s name=%s status=%s delay=%.2fs",
                        record.namespace, record.name, exc.status, delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                version = (result.get("metadata") or {}).get("resourceVersion")
                self.inventory.update_variant_status(
                    record.namespace, record.name, new_status, str(version) if version else None
                )
                self._last_full_write[key] = time.monotonic()
                self._remember(key, new_status, comparable, update)
                return True

    def current(self, record: VariantRecord) -> bool:
        """Whether ``record`` holds the status this writer last wrote or confirmed for it, and its heartbeat
        is not due: the engine may then skip building an update it knows to be the same."""
        return self._holds_written(record.key, record.status)

    def _holds_written(self, key: tuple[str, str], current: VariantAutoscalingStatus) -> bool:
        """``current`` is the status last written or confirmed for ``key``, and the heartbeat is not due."""
        written = self._last_written.get(key)
        if written is None or written[0] is not current:
            return False
        last = self._last_full_write.get(key)
        return last is not None and time.monotonic() - last < self.heartbeat

    def _prepare(
        self, record: VariantRecord, update: StatusUpdate
    ) -> tuple[VariantAutoscalingStatus, dict[str, Any], dict[str, Any]]:
        """The new status, its JSON body, and the body without the per-cycle ``lastRunTime``."""
        new_status = self.build(record, update)
        body = new_status.dump()
        return new_status, body, _comparable(body)

    def _remember(
        self, key: tuple[str, str], status: VariantAutoscalingStatus, comparable: dict[str, Any], update: StatusUpdate
    ) -> None:
        self._last_written[key] = (status, comparable)
        self._last_update[key] = update

    async def _reread(self, record: VariantRecord) -> VariantRecord | None:
        """The VA as the server holds it now, put into the inventory; None when it is gone or unreadable."""
        try:
            body = await self.kube.get_va(record.namespace, record.name)
        except KubeError as exc:
            log.warning(
                "Status re-read after conflict failed namespace=%s name=%s error=%s", record.namespace, record.name, exc
            )
            return None
        if self.inventory.variant(record.namespace, record.name) is None:
            # deleted while we read it: the DELETED event has been handled, and putting the body read
            # before it back into the inventory would keep a VA that no longer exists
            log.info("VA deleted during its status re-read namespace=%s name=%s", record.namespace, record.name)
            return None
        return self.inventory.apply_variant(body)

    def _unchanged(self, key: tuple[str, str], current: VariantAutoscalingStatus, update: StatusUpdate) -> bool:
        return self._holds_written(key, current) and self._last_update.get(key) == update

    def _needs_write(self, key: tuple[str, str], current: VariantAutoscalingStatus, comparable: dict[str, Any]) -> bool:
        """Write when the status differs from the stored one, or when the heartbeat is due.

        ``current`` is the status the inventory holds: what we wrote last (then its serialised form is
        remembered) or what a watch event brought (someone else changed it: serialise it to compare).
        """
        written = self._last_written.get(key)
        stored = written[1] if written is not None and written[0] is current else _comparable(current.dump())
        if stored != comparable:
            return True
        last = self._last_full_write.get(key)
        return last is None or time.monotonic() - last >= self.heartbeat


_VOLATILE_DECISION_FIELDS = frozenset({"message", "recordID", "time"})


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """The status without the parts that change every cycle (``lastRunTime``, the decision's numbers and id)."""
    desired = body.get("desiredOptimizedAlloc")
    decision = body.get("lastDecision")
    if (desired is None or "lastRunTime" not in desired) and decision is None:
        return body
    out = dict(body)
    if desired is not None:
        out["desiredOptimizedAlloc"] = {k: v for k, v in desired.items() if k != "lastRunTime"}
    if decision is not None:
        out["lastDecision"] = {k: v for k, v in decision.items() if k not in _VOLATILE_DECISION_FIELDS}
    return out
