"""Run the real operator (kopf + runtime) in the test's event loop against the embedded API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kopf

from wva.runtime import Runtime
from wva.settings import Settings
from wva.sim.local_api import LocalKubernetesAPI

OPERATOR_NAMESPACE = "wva-system"


def operator_settings(api: LocalKubernetesAPI, prometheus_url: str, **env: str) -> Settings:
    base = {
        "PROMETHEUS_BASE_URL": prometheus_url,
        "WVA_KUBE_API_URL": api.base_url,
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
        "POD_NAME": "wva-test-0",
        "LEADER_ELECTION": "false",
        "GLOBAL_OPT_INTERVAL": "30s",
    }
    base.update(env)
    return Settings.from_env(base)


@contextlib.asynccontextmanager
async def running_operator(runtime: Runtime) -> AsyncIterator[Runtime]:
    """kopf with wva's handlers, started and stopped inside the test body (see the testing notes)."""
    import wva.handlers  # noqa: F401  (registers the handlers on kopf's default registry)

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready, memo=kopf.Memo(runtime=runtime)
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await wait_for(lambda: runtime.started, timeout=15, what="runtime start")
        yield runtime
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=20)


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (on the wall clock) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def condition(va: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (va.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None
