"""Faults in the full harness (embedded API + kopf + real Prometheus): the operator stays up, holds its
decisions, says why, and recovers."""

from __future__ import annotations

from typing import Any

import pytest

from operator_harness import condition, operator_settings, running_operator, wait_for
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import VA_RESOURCE, LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

MODEL = "acme/faults"
pytestmark = pytest.mark.prometheus


def _va(api: LocalKubernetesAPI, ns: str, name: str) -> dict[str, Any]:
    return dict(api.objects[VA_RESOURCE, ns, name])


async def test_prometheus_outage_holds_decisions_and_recovers_within_two_cycles(
    kube_api: LocalKubernetesAPI, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    """Guarantee: Prometheus stopped mid-run → operator alive, last decision held and published, the
    condition names PrometheusError; after Prometheus returns, metrics are available again within two
    cycles."""
    ns = unique_ns
    own_prometheus = LocalPrometheus(targets=[f"127.0.0.1:{vllm_emulator.port}"])
    own_prometheus.start()
    try:
        settings = operator_settings(
            kube_api, own_prometheus.url, COLLECTOR_V2="true", WVA_PROMETHEUS_QUERY_TIMEOUT="2s"
        )
        runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)
        load = {"kv_cache_usage": 0.95, "num_requests_waiting": 0}
        async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(load)) as cluster:
            await cluster.create_deployment("svc", ns, MODEL, replicas=1)
            await cluster.reconcile()
            await cluster.create_va("svc", ns, MODEL, "svc", "L4")
            async with running_operator(runtime):
                await wait_for(lambda: runtime.inventory.sizes()["pods"] >= 1, what="pod observed")
                await own_prometheus.wait_for(
                    f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}', timeout=30.0
                )
                report = await runtime.engine.run_cycle()
                assert report.decisions[(ns, "svc")].target == 2

                own_prometheus.stop()
                for _ in range(2):
                    report = await runtime.engine.run_cycle()  # the operator survives every cycle
                    assert report.decisions[(ns, "svc")].target == 2
                    assert not report.decisions[(ns, "svc")].decided
                va = _va(kube_api, ns, "svc")
                assert va["status"]["desiredOptimizedAlloc"]["numReplicas"] == 2
                cond = condition(va, "MetricsAvailable")
                assert (cond["status"], cond["reason"]) == ("False", "PrometheusError")
                assert condition(va, "OptimizationReady")["reason"] == "MetricsUnavailable"
                assert runtime.emitter.value(
                    "wva_desired_replicas", variant_name="svc", namespace=ns, accelerator_type="L4"
                ) == 2

                own_prometheus.start()
                await cluster.reconcile()
                recovered = False
                for _ in range(2):
                    await own_prometheus.wait_for("up", timeout=30.0)
                    await runtime.engine.run_cycle()
                    if condition(_va(kube_api, ns, "svc"), "MetricsAvailable")["status"] == "True":
                        recovered = True
                        break
                assert recovered, "metrics not available again within two cycles of Prometheus returning"
    finally:
        own_prometheus.close()


async def test_bad_vas_get_conditions_while_others_keep_scaling_and_409_is_retried(
    kube_api: LocalKubernetesAPI, prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    """Guarantee: a VA without accelerator, one whose Deployment is missing and one with variantCost "abc"
    each get a condition naming the problem, while a healthy VA of the same model keeps scaling; a status
    write answered 409 is retried and lands."""
    ns = unique_ns
    settings = operator_settings(kube_api, prometheus.url, COLLECTOR_V2="true")
    runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)
    load = {"kv_cache_usage": 0.95, "num_requests_waiting": 0}
    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(load)) as cluster:
        for name in ("healthy", "noacc", "badcost"):
            await cluster.create_deployment(name, ns, MODEL, replicas=1)
        await cluster.reconcile()
        await cluster.create_va("healthy", ns, MODEL, "healthy", "L4")
        await cluster.create_va("noacc", ns, MODEL, "noacc", "")
        await cluster.create_va("badcost", ns, MODEL, "badcost", "L4", cost="abc")
        await cluster.create_va("orphan", ns, MODEL, "no-such-deployment", "L4")
        async with running_operator(runtime):
            await wait_for(lambda: len(runtime.inventory.variants()) == 4, what="VAs observed")
            await wait_for(lambda: runtime.inventory.sizes()["pods"] >= 3, what="pods observed")
            await prometheus.wait_for(
                f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}', lambda r: len(r) == 3, timeout=30.0
            )
            fault = kube_api.inject_fault("PATCH", "variantautoscalings", 409, subresource="status", times=1)
            report = await runtime.engine.run_cycle()
            assert fault.hits == 1

            healthy = _va(kube_api, ns, "healthy")
            assert healthy["status"]["desiredOptimizedAlloc"]["numReplicas"] == 2
            for name, text in (("noacc", "no accelerator"), ("badcost", "variantCost")):
                cond = condition(_va(kube_api, ns, name), "OptimizationReady")
                assert (cond["status"], cond["reason"]) == ("False", "InvalidConfiguration"), name
                assert text in cond["message"]
                assert (ns, name) in report.invalid
            orphan = condition(_va(kube_api, ns, "orphan"), "TargetResolved")
            assert (orphan["status"], orphan["reason"]) == ("False", "TargetNotFound")
            event_posts = [
                r for r in kube_api
                if r.resource is not None and r.resource.plural == "events" and isinstance(r.data, dict)
            ]
            reasons = sorted(str(r.data.get("reason")) for r in event_posts)
            assert reasons.count("InvalidConfiguration") == 2  # one per bad VA
            assert "ScaledUp" in reasons
