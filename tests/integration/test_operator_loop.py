"""The full loop: kopf watches the embedded API, the engine reads real Prometheus scraping emulated
vLLM pods, decides, writes status, publishes gauges and (direct mode) scales the Deployments."""

from __future__ import annotations

from typing import Any

import pytest

from operator_harness import (
    OPERATOR_NAMESPACE,
    condition,
    operator_api_calls,
    operator_settings,
    running_operator,
    unauthorised_calls,
    wait_for,
)
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

MODEL = "acme/llama-3.1-8b"
CHEAP, PREMIUM = "chat-cheap", "chat-premium"

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


async def _wait_prometheus_sees(prometheus: LocalPrometheus, ns: str, pods: int, kv: float) -> None:
    """Wait until every pod's 1-minute peak KV usage (what the engine reads) equals ``kv``."""
    query = f'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{namespace="{ns}"}}[1m]))'

    def ok(result: list[dict[str, Any]]) -> bool:
        return len(result) == pods and all(abs(float(r["value"][1]) - kv) < 1e-9 for r in result)

    await prometheus.wait_for(query, ok, timeout=90.0)


def _desired(api: LocalKubernetesAPI, ns: str, name: str) -> int:
    va = api.objects["llmd.ai/v1alpha1/variantautoscalings", ns, name]
    return int(va["status"]["desiredOptimizedAlloc"]["numReplicas"])


@pytest.mark.parametrize("collector_v2", ["true", "false"], ids=["collector-v2", "collector-v1"])
async def test_scale_up_cheapest_first_then_down_most_expensive_first(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
    collector_v2: str,
) -> None:
    ns = unique_ns
    load: dict[str, Any] = {"kv_cache_usage": 0.6, "num_requests_waiting": 0}
    settings = operator_settings(kube_api, prometheus.url, COLLECTOR_V2=collector_v2, ACTUATION_MODE="direct")
    runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)
    decisions: list[dict[str, int]] = []

    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(load)) as cluster:
        for name in (CHEAP, PREMIUM):
            await cluster.create_deployment(name, ns, MODEL, replicas=2)
        await cluster.reconcile()
        # collector v1 caches metrics for PROMETHEUS_METRICS_CACHE_TTL (30s, one engine interval); this test
        # runs cycles back to back, so it turns that cache off the way an operator would, in the main ConfigMap
        await cluster.request(
            "POST",
            f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": settings.config_map_name, "namespace": OPERATOR_NAMESPACE},
                "data": {"PROMETHEUS_METRICS_CACHE_ENABLED": "false", "GLOBAL_OPT_INTERVAL": "30s"},
            },
        )
        await cluster.create_va(CHEAP, ns, MODEL, CHEAP, "A100", cost="5.0", max_replicas=4)
        await cluster.create_va(PREMIUM, ns, MODEL, PREMIUM, "A100", cost="20.0", max_replicas=4)

        async with running_operator(runtime):
            await wait_for(lambda: len(runtime.inventory.variants()) == 2, what="VAs in the inventory")
            await wait_for(lambda: runtime.inventory.sizes()["pods"] >= 4, what="pods in the inventory")

            async def cycle() -> dict[str, int]:
                report = await runtime.engine.run_cycle()
                assert not report.group_errors, report.group_errors
                await cluster.reconcile()
                result = {name: _desired(kube_api, ns, name) for name in (CHEAP, PREMIUM)}
                decisions.append(result)
                return result

            # steady load (spare KV 0.2 now, 0 if a replica were removed): nothing moves
            await _wait_prometheus_sees(prometheus, ns, pods=4, kv=0.6)
            assert await cycle() == {CHEAP: 2, PREMIUM: 2}
            va = kube_api.objects["llmd.ai/v1alpha1/variantautoscalings", ns, CHEAP]
            assert condition(va, "MetricsAvailable")["status"] == "True"
            assert condition(va, "OptimizationReady")["status"] == "True"
            assert condition(va, "TargetResolved")["reason"] == "TargetFound"

            # saturation: the cheap variant grows by one per cycle, the premium one stays
            load["kv_cache_usage"] = 0.9
            cluster.set_load(ns, CHEAP, **load)
            cluster.set_load(ns, PREMIUM, **load)
            await _wait_prometheus_sees(prometheus, ns, pods=4, kv=0.9)
            assert await cycle() == {CHEAP: 3, PREMIUM: 2}
            assert runtime.emitter.value(
                "wva_desired_replicas", variant_name=CHEAP, namespace=ns, accelerator_type="A100"
            ) == 3
            deployment = await cluster.get_deployment(CHEAP, ns)
            assert deployment["spec"]["replicas"] == 3  # direct actuation patched the scale subresource
            await _wait_prometheus_sees(prometheus, ns, pods=5, kv=0.9)
            assert await cycle() == {CHEAP: 4, PREMIUM: 2}

            # a ConfigMap edit applies at the next cycle: with more headroom nothing is saturated any more,
            # and at maxReplicas=4 the cheap variant could not grow anyway, so the premium one would have
            await _wait_prometheus_sees(prometheus, ns, pods=6, kv=0.9)
            await cluster.request(
                "POST",
                f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "saturation-scaling-config", "namespace": OPERATOR_NAMESPACE},
                    # no scale-down stabilisation: the -1s follow one per cycle (the window has tests of its own)
                    "data": {"default": "kvCacheThreshold: 0.99\nkvSpareTrigger: 0.05\n"
                                        "scaleDownStabilizationWindow: 0s\n"},
                },
            )
            assert await cycle() == {CHEAP: 4, PREMIUM: 2}
            assert runtime.config_store.get(MODEL, ns).kv_cache_threshold == 0.99

            # load drops: the premium (most expensive) variant goes down first
            load["kv_cache_usage"] = 0.1
            cluster.set_load(ns, CHEAP, **load)
            cluster.set_load(ns, PREMIUM, **load)
            await _wait_prometheus_sees(prometheus, ns, pods=6, kv=0.1)
            assert await cycle() == {CHEAP: 4, PREMIUM: 1}
            await wait_for(lambda: runtime.inventory.sizes()["pods"] == 5, what="premium pod removed")
            assert await cycle() == {CHEAP: 3, PREMIUM: 1}

    # both conditions were persisted and are what a client reads back
    va = kube_api.objects["llmd.ai/v1alpha1/variantautoscalings", ns, PREMIUM]
    assert condition(va, "MetricsAvailable")["reason"] == "MetricsFound"
    assert condition(va, "OptimizationReady")["reason"] == "SaturationOnlyMode"
    assert decisions[-1] == {CHEAP: 3, PREMIUM: 1}

    # every API call the operator made is granted by the least-privilege rules the manifests render
    calls = operator_api_calls(kube_api)
    assert {(c.resource, c.subresource, c.verb) for c in calls} >= {
        ("variantautoscalings", "", "watch"),
        ("variantautoscalings", "status", "patch"),
        ("deployments", "scale", "patch"),
        ("events", "", "create"),
    }
    assert unauthorised_calls(kube_api, "direct") == []
