"""The API server misbehaving: 409/429/500 on status patches and Event posts, watch streams cut."""

from __future__ import annotations

import contextlib

import aiohttp
import kmock
import pytest

from operator_harness import operator_settings, running_operator
from reliability.support import SATURATED, capture_logs, fleet, wait_for, wait_prometheus_pods
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = [pytest.mark.prometheus]

A, B = "alpha", "beta"


@pytest.mark.parametrize("status", [409, 429, 500])
async def test_transient_status_patch_errors_are_retried_within_the_cycle(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
    status: int,
) -> None:
    """One 409/429/500 answer to a status patch is retried (a 409 after re-reading the VA, the others with
    backoff) inside the same cycle: the
    decision lands in status, nothing is counted as a failed write, and the other VA is unaffected."""
    async with fleet(kube_api, prometheus.url, vllm_emulator, unique_ns, [A, B], load=SATURATED) as f:
        await wait_prometheus_pods(prometheus, f.namespace, pods=4, kv=0.9)
        fault = kube_api.inject_fault("PATCH", "variantautoscalings", status, subresource="status", times=2,
                                      namespace=f.namespace)
        with capture_logs() as logs:
            report = await f.cycle()
        assert fault.hits == 2
        assert not report.group_errors
        assert (f.desired(A), f.desired(B)) == (3, 3)
        assert f.runtime.engine.status_writer.failed_writes == 0
        if status == 409:  # a conflict is not waited out: the VA is read again and the write rebuilt on it
            assert f"Status write conflict namespace={f.namespace}" in logs.text()
            assert f.runtime.engine.status_writer.conflicts == 2
        else:
            assert f"Status write retry namespace={f.namespace}" in logs.text()
            assert f"status={status}" in logs.text()


async def test_persistent_status_patch_failure_loses_no_decision(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
) -> None:
    """Every status patch failing for a whole cycle: the decision is still published as the gauge the
    HPA reads, the failure is logged naming the VA and the status code, the operator keeps running,
    and the next cycle persists the same decision (recovery within one cycle, no decision lost)."""
    async with fleet(kube_api, prometheus.url, vllm_emulator, unique_ns, [A, B], load=SATURATED) as f:
        await wait_prometheus_pods(prometheus, f.namespace, pods=4, kv=0.9)
        fault = kube_api.inject_fault("PATCH", "variantautoscalings", 500, subresource="status", times=None,
                                      namespace=f.namespace)
        with capture_logs() as logs:
            await f.cycle()
        assert fault.hits >= 2 * f.runtime.engine.status_writer.max_attempts
        # both VAs failed (a late TargetResolved write from a watch event may fail as well)
        assert f.runtime.engine.status_writer.failed_writes >= 2
        assert (f.gauge(A), f.gauge(B)) == (3, 3)
        assert f"Status write failed namespace={f.namespace} name={A}" in logs.text()
        fault.remaining = 0
        await f.cycle()
        assert (f.desired(A), f.desired(B)) == (3, 3)
        assert (f.gauge(A), f.gauge(B)) == (3, 3)


@pytest.mark.parametrize("status", [409, 429, 500])
async def test_event_post_failures_never_block_decisions(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
    status: int,
) -> None:
    """Event posts answered 409/429/500: Events are best-effort, so decisions, status and gauges are
    unaffected; the failure is counted and logged with the Event's reason."""
    async with fleet(kube_api, prometheus.url, vllm_emulator, unique_ns, [A, B], load=SATURATED) as f:
        await wait_prometheus_pods(prometheus, f.namespace, pods=4, kv=0.9)
        fault = kube_api.inject_fault("POST", "events", status, times=None, namespace=f.namespace)
        with capture_logs() as logs:
            report = await f.cycle()
        assert fault.hits >= 2  # one ScaledUp Event per VA was attempted
        assert not report.group_errors
        assert (f.desired(A), f.desired(B)) == (3, 3)
        assert (f.gauge(A), f.gauge(B)) == (3, 3)
        assert f"Event post failed namespace={f.namespace} va={A} reason=ScaledUp" in logs.text()
        errors = f.runtime.emitter.operator.errors.labels("events", "post")._value.get()
        assert errors >= 2


async def test_watch_streams_cut_inventory_converges(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    """The API server goes away (every watch stream is cut) and comes back on the same address: kopf
    reconnects, objects created while it was away and after it returned reach the inventory, a VA
    deleted after the return leaves it, and the engine keeps deciding for everything it knows."""
    ns = unique_ns
    async with LocalKubernetesAPI() as api:
        server = kmock.Server(api)
        await server.__aenter__()
        api.declare_resources()
        url = api.base_url
        settings = operator_settings(api, prometheus.url, COLLECTOR_V2="true")
        runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)
        try:
            async with SimulatedCluster(url, vllm_emulator, lambda _d, _p: dict(SATURATED)) as cluster:
                for name in (A, B):
                    await cluster.create_deployment(name, ns, f"acme/{name}", replicas=1)
                await cluster.reconcile()
                await cluster.create_va(A, ns, f"acme/{A}", A, "A100")
                async with running_operator(runtime):
                    await wait_for(lambda: runtime.inventory.variant(ns, A) is not None, what="first VA")
                    watches_before = _watch_requests(api)
                    cut = _cut_connections(server)  # every open watch stream is dropped mid-flight
                    assert cut > 0
                    with contextlib.suppress(aiohttp.ServerDisconnectedError, RuntimeError):
                        await cluster.get(f"/api/v1/namespaces/{ns}")  # our own pooled connection was cut too
                    await cluster.create_va(B, ns, f"acme/{B}", B, "A100")
                    await wait_for(lambda: runtime.inventory.variant(ns, B) is not None, timeout=30,
                                   what="VA created after the cut")
                    assert _watch_requests(api) > watches_before  # kopf really re-established its watches
                    await cluster.request(
                        "DELETE", f"/apis/llmd.ai/v1alpha1/namespaces/{ns}/variantautoscalings/{A}"
                    )
                    await wait_for(lambda: runtime.inventory.variant(ns, A) is None, timeout=30,
                                   what="VA deleted after the cut")
                    await wait_prometheus_pods(prometheus, ns, pods=2, kv=0.9)
                    report = await runtime.engine.run_cycle()
                    assert set(report.decisions) == {(ns, B)}
                    assert report.decisions[(ns, B)].target == 2
        finally:
            await server.__aexit__(None, None, None)


def _cut_connections(server: kmock.Server) -> int:
    """Abort every open connection of the API server (as a proxy or load balancer dropping them)."""
    raw = server._managed_server
    assert raw is not None and raw.runner is not None and raw.runner.server is not None
    connections = list(raw.runner.server.connections)
    for handler in connections:
        if handler.transport is not None:
            handler.transport.abort()
    return len(connections)


def _watch_requests(api: LocalKubernetesAPI) -> int:
    return sum(1 for r in list(api) if (r.params or {}).get("watch") in ("true", "1", True))


