"""The operator restarted in the middle of a scale-up."""

from __future__ import annotations

import pytest

from operator_harness import operator_settings, running_operator
from reliability.support import SATURATED, VA_RESOURCE, wait_for, wait_prometheus_pods
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI, request_method
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = [pytest.mark.prometheus]

A = "alpha"


def _scale_patches(api: LocalKubernetesAPI, ns: str) -> int:
    return sum(
        1
        for r in list(api)
        if r.resource is not None and r.resource.plural == "deployments" and r.subresource == "scale"
        and request_method(r) == "PATCH" and r.namespace == ns
    )


def _scaled_up_events(api: LocalKubernetesAPI, ns: str) -> int:
    return sum(
        1
        for r in list(api)
        if r.resource is not None and r.resource.plural == "events" and request_method(r) == "POST"
        and r.namespace == ns and isinstance(r.data, dict) and r.data.get("reason") == "ScaledUp"
    )


async def test_restart_mid_scale_resumes_from_status(
    kube_api: LocalKubernetesAPI, prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    """Direct actuation decided 2 -> 3 and patched the Deployment, then the operator stopped before the
    new pod existed. A fresh operator process reads the persisted decision from status: its first
    cycle keeps 3 (never drops to the 2 running replicas, never steps again to 4 on top of the pending
    decision), sends no second scale patch and posts no second ScaledUp Event. Once the pod is up it
    decides normally again."""
    ns = unique_ns
    settings = operator_settings(kube_api, prometheus.url, COLLECTOR_V2="true", ACTUATION_MODE="direct")
    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(SATURATED)) as cluster:
        await cluster.create_deployment(A, ns, f"acme/{A}", replicas=2)
        await cluster.reconcile()
        await cluster.create_va(A, ns, f"acme/{A}", A, "A100", max_replicas=6)
        await wait_prometheus_pods(prometheus, ns, pods=2, kv=0.9)

        first = Runtime.build(settings, serve_http=False, run_engine_loop=False)
        async with running_operator(first):
            await wait_for(lambda: len(first.inventory.ready_pods(ns, A)) == 2, what="pods observed")
            report = await first.engine.run_cycle()
            assert report.decisions[(ns, A)].target == 3
        assert (await cluster.get_deployment(A, ns))["spec"]["replicas"] == 3  # applied, pod not created yet
        patches, events = _scale_patches(kube_api, ns), _scaled_up_events(kube_api, ns)
        assert (patches, events) == (1, 1)
        assert kube_api.objects[VA_RESOURCE, ns, A]["status"]["desiredOptimizedAlloc"]["numReplicas"] == 3

        second = Runtime.build(settings, serve_http=False, run_engine_loop=False)
        async with running_operator(second):
            await wait_for(lambda: second.inventory.variant(ns, A) is not None, what="VA re-observed")
            assert second.inventory.variant(ns, A).previous_desired == 3  # resumed from persisted status
            await wait_for(lambda: len(second.inventory.ready_pods(ns, A)) == 2, what="pods re-observed")
            report = await second.engine.run_cycle()
            decision = report.decisions[(ns, A)]
            assert decision.target == 3, decision
            assert second.emitter.value(
                "wva_desired_replicas", variant_name=A, namespace=ns, accelerator_type="A100"
            ) == 3
            assert _scale_patches(kube_api, ns) == patches
            assert _scaled_up_events(kube_api, ns) == events
            assert (await cluster.get_deployment(A, ns))["spec"]["replicas"] == 3

            # the pending pod arrives and stays saturated: the next step is a normal one
            await cluster.reconcile()
            await wait_for(lambda: len(second.inventory.ready_pods(ns, A)) == 3, what="third pod")
            await wait_prometheus_pods(prometheus, ns, pods=3, kv=0.9)
            report = await second.engine.run_cycle()
            assert report.decisions[(ns, A)].target == 4
            assert _scale_patches(kube_api, ns) == patches + 1
