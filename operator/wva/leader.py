"""Lease-based leader election: only the holder of the Lease runs the engine and publishes decisions.

A standby keeps watching (its inventory stays warm) but writes nothing and exposes no
``wva_desired_replicas`` series, so an HPA never sees two answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wva.kube import KubeClient, KubeError
from wva.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


def _micro_time(ts: datetime.datetime) -> str:
    return ts.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _field(lease: Any, name: str, camel: str) -> Any:
    spec = lease.get("spec") if isinstance(lease, dict) else getattr(lease, "spec", None)
    if spec is None:
        return None
    return spec.get(camel) if isinstance(spec, dict) else getattr(spec, name, None)


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        on_started: Callback,
        on_stopped: Callback,
        lease_duration: float = 15.0,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.lease_duration = lease_duration
        self.renew_interval = max(lease_duration / 3.0, 0.1)
        # A leader that has not renewed for this long steps down, without waiting for a hung request:
        # a standby may take the Lease only once lease_duration has passed since the last renewal, so
        # the two never lead at the same time (client-go's RenewDeadline, here one renew interval short).
        self.renew_deadline = max(lease_duration - self.renew_interval, 0.1)
        self.is_leader = False
        self._now = now or (lambda: datetime.datetime.now(datetime.UTC))
        self._task: asyncio.Task[None] | None = None
        self._last_renew: datetime.datetime | None = None
        self.attempts = 0  # acquire/renew rounds done (tests and status output)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="wva-leader-election")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self.is_leader:
            await self._set_leader(False)
            # release so a standby takes over at once (still ours: we were within the renew deadline),
            # without holding up the shutdown for a server that does not answer
            body = {"spec": {"holderIdentity": None}}
            with contextlib.suppress(KubeError, TimeoutError):
                await asyncio.wait_for(
                    self.kube.patch_lease(self.namespace, self.name, body), timeout=self.renew_interval
                )

    async def _run(self) -> None:
        while True:
            try:
                # a leader's attempt ends by its renew deadline, answered or not
                timeout = max(self._remaining(), 0.0) if self.is_leader else self.renew_deadline
                leader = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=timeout)
            except (KubeError, TimeoutError) as exc:
                log.warning(
                    "Leader election error lease=%s/%s error=%s",
                    self.namespace, self.name, exc if isinstance(exc, KubeError) else "no answer in time",
                )
                leader = self.is_leader and not self._expired_locally()
            self.attempts += 1
            if leader != self.is_leader:
                await self._set_leader(leader)
            pause = min(self.renew_interval, max(self._remaining(), 0.0)) if self.is_leader else self.renew_interval
            await asyncio.sleep(pause)

    def _remaining(self) -> float:
        """Seconds until the renew deadline (counted from the last successful acquire/renew)."""
        last = self._last_renew
        if last is None:
            return 0.0
        return self.renew_deadline - (self._now() - last).total_seconds()

    def _expired_locally(self) -> bool:
        return self._remaining() <= 0

    async def _set_leader(self, leader: bool) -> None:
        self.is_leader = leader
        if leader:
            log.info("Leadership acquired lease=%s/%s identity=%s", self.namespace, self.name, self.identity)
            await self.on_started()
        else:
            log.warning("Leadership lost lease=%s/%s identity=%s", self.namespace, self.name, self.identity)
            await self.on_stopped()

    async def try_acquire_or_renew(self) -> bool:
        now = self._now()
        lease = await self.kube.get_lease(self.namespace, self.name)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(int(self.lease_duration), 1),
            "renewTime": _micro_time(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro_time(now), "leaseTransitions": 0},
            }
            try:
                await self.kube.create_lease(self.namespace, body)
            except KubeError as exc:
                if exc.status == 409:
                    return False  # someone else created it first
                raise
            self._last_renew = now
            return True
        holder = _field(lease, "holder_identity", "holderIdentity")
        renew = _parse_time(_field(lease, "renew_time", "renewTime"))
        duration = _field(lease, "lease_duration_seconds", "leaseDurationSeconds") or self.lease_duration
        expired = renew is None or (now - renew).total_seconds() > float(duration)
        if holder == self.identity or not holder or expired:
            if holder != self.identity:
                transitions = _field(lease, "lease_transitions", "leaseTransitions") or 0
                spec = {**spec, "acquireTime": _micro_time(now), "leaseTransitions": int(transitions) + 1}
            metadata = lease.get("metadata") if isinstance(lease, dict) else getattr(lease, "metadata", None)
            rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else getattr(
                metadata, "resource_version", None
            )
            body = {"metadata": {"resourceVersion": rv}, "spec": spec} if rv else {"spec": spec}
            try:
                await self.kube.patch_lease(self.namespace, self.name, body)
            except KubeError as exc:
                if exc.status == 409:
                    return False
                raise
            self._last_renew = now
            return True
        return False
