"""METRICS_SOURCE=auto in the full loop: Prometheus stops mid-run, pod scraping takes over, and back."""

from __future__ import annotations

from typing import Any

import pytest

from operator_harness import condition, operator_settings, running_operator, wait_for
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

MODEL = "acme/failover"

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _events(api: LocalKubernetesAPI, ns: str, reason: str) -> list[dict[str, Any]]:
    return [
        r.data for r in list(api)
        if r.resource is not None and r.resource.plural == "events" and isinstance(r.data, dict)
        and r.data.get("reason") == reason and r.data.get("metadata", {}).get("namespace", r.namespace) == ns
    ]


async def test_prometheus_outage_switches_to_pod_scraping_and_back(
    kube_api: LocalKubernetesAPI, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    ns = unique_ns
    own = LocalPrometheus(targets=[f"127.0.0.1:{vllm_emulator.port}"])  # never stop the shared one
    own.start()
    load: dict[str, Any] = {"kv_cache_usage": 0.5, "num_requests_waiting": 0}
    settings = operator_settings(
        kube_api, own.url,
        COLLECTOR_V2="true",
        METRICS_SOURCE="auto",
        WVA_PROMETHEUS_QUERY_TIMEOUT="2s",
        WVA_POD_METRICS_URL_TEMPLATE=vllm_emulator.base_url + "/pods/{namespace}/{pod}/metrics",
    )
    runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)

    def source_gauge(source: str) -> float | None:
        return runtime.emitter.value("wva_metrics_source_active", namespace=ns, model_id=MODEL, source=source)

    def metrics_message() -> str:
        va = kube_api.objects["llmd.ai/v1alpha1/variantautoscalings", ns, "chat"]
        cond = condition(va, "MetricsAvailable")
        assert cond is not None and cond["status"] == "True", cond
        return str(cond["message"])

    def desired() -> int:
        va = kube_api.objects["llmd.ai/v1alpha1/variantautoscalings", ns, "chat"]
        return int(va["status"]["desiredOptimizedAlloc"]["numReplicas"])

    try:
        async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(load)) as cluster:
            await cluster.create_deployment("chat", ns, MODEL, replicas=2)
            await cluster.reconcile()
            await cluster.create_va("chat", ns, MODEL, "chat", "A100", max_replicas=5)
            async with running_operator(runtime):
                await wait_for(lambda: runtime.inventory.variants(), what="VA in the inventory")
                await wait_for(lambda: runtime.inventory.sizes()["pods"] >= 2, what="pods in the inventory")
                await own.wait_for(
                    f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}', lambda r: len(r) == 2, timeout=30.0
                )
                report = await runtime.engine.run_cycle()
                assert not report.group_errors, report.group_errors
                assert desired() == 2
                assert metrics_message().endswith("(source: prometheus)")

                # Prometheus goes away and the load rises: only pod scraping can see it
                own.stop()
                load["kv_cache_usage"] = 0.95
                cluster.set_load(ns, "chat", **load)
                report = await runtime.engine.run_cycle()
                assert not report.group_errors, report.group_errors
                assert report.decisions[(ns, "chat")].decided
                assert desired() == 3  # saturation seen through the pods' own /metrics
                assert metrics_message().endswith("(source: pods)")
                assert (source_gauge("pods"), source_gauge("prometheus")) == (1.0, None)
                changed = _events(kube_api, ns, "MetricsSourceChanged")
                assert len(changed) == 1 and "now come from pods" in changed[0]["message"]

                # Prometheus is back (with its data): the next cycle is served by it again
                own.start()
                report = await runtime.engine.run_cycle()
                assert not report.group_errors, report.group_errors
                assert metrics_message().endswith("(source: prometheus)")
                assert (source_gauge("prometheus"), source_gauge("pods")) == (1.0, None)
                changed = _events(kube_api, ns, "MetricsSourceChanged")
                assert len(changed) == 2 and "now come from prometheus" in changed[1]["message"]
    finally:
        own.close()
