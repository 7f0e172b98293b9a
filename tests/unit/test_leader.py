"""Leader election timing without a server: a leader whose renewals hang steps down at its renew deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from wva.leader import LeaderElector


class FakeLeases:
    """One Lease in memory; ``hang`` makes every call wait forever, as a partitioned network does."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.hang = asyncio.Event()
        self.version = 0

    async def _maybe_hang(self) -> None:
        if self.hang.is_set():
            await asyncio.Event().wait()

    async def get_lease(self, namespace: str, name: str) -> Any:
        await self._maybe_hang()
        return self.lease

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        await self._maybe_hang()
        self.version += 1
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return self.lease

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> Any:
        await self._maybe_hang()
        assert self.lease is not None
        self.version += 1
        self.lease = {**self.lease, "spec": {**self.lease["spec"], **body["spec"]},
                      "metadata": {**self.lease["metadata"], "resourceVersion": str(self.version)}}
        return self.lease


async def test_a_leader_whose_renewals_hang_steps_down_at_its_renew_deadline() -> None:
    leases = FakeLeases()
    led, followed = asyncio.Event(), asyncio.Event()
    stepped_down_at: list[float] = []

    async def started() -> None:
        led.set()

    async def stopped() -> None:
        stepped_down_at.append(time.monotonic())
        followed.set()

    elector = LeaderElector(leases, "ns", "lease", "me", started, stopped, lease_duration=0.9)  # type: ignore[arg-type]
    assert abs(elector.renew_deadline - 0.6) < 1e-9, "two thirds of the lease duration"
    elector.start()
    try:
        await asyncio.wait_for(led.wait(), 5)
        leases.hang.set()
        cut = time.monotonic()
        await asyncio.wait_for(followed.wait(), 5)  # a leader that cannot renew must step down
        assert not elector.is_leader
        after = stepped_down_at[0] - cut
        # before the lease could expire for a standby, and not before the deadline counted from the last
        # renewal (which was at most one renew interval before the cut)
        assert after < elector.lease_duration, after
        assert after > elector.renew_deadline - elector.renew_interval - 0.05, after
    finally:
        leases.hang.clear()
        await elector.stop()
