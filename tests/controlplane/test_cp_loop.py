"""The whole loop on the real control plane, for each metrics path (collector v1, collector v2, pod scraping).

wva runs as a local process configured like the chart's pod and authenticated as the chart's
ServiceAccount. Load rises on the emulated vLLM pods → wva decides → with direct actuation the
Deployment's replicas change through the scale subresource → the deployment and replicaset
controllers create pods → the scheduler places them on GPU nodes → the node agent runs them → wva
maps them from its pod watch → status and ``wva_desired_replicas`` follow. Then the load falls and
it scales back down to ``minReplicas``.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from conftest import LiveCluster
from cpsupport import (
    LoadDriver,
    assert_clean_log,
    deploy_variant,
    desired_replicas,
    get_va,
    pods_left,
    samples,
    wait_ready_pods,
    wait_until,
)

SATURATED = {"kv_cache_usage": 0.95, "num_requests_waiting": 8.0, "num_requests_running": 8.0}
IDLE = {"kv_cache_usage": 0.05, "num_requests_waiting": 0.0, "num_requests_running": 0.0}

PATHS = {
    "collector-v1": {"COLLECTOR_V2": "false"},
    "collector-v2": {"COLLECTOR_V2": "true"},
    "pod-scraping": {"COLLECTOR_V2": "true", "METRICS_SOURCE": "pods"},
}


def gauge(metrics: str, name: str, namespace: str, variant_name: str) -> float | None:
    for labels, value in samples(metrics, name):
        if (labels.get("namespace"), labels.get("variant_name")) == (namespace, variant_name):
            return value
    return None


@pytest.mark.parametrize("path", sorted(PATHS))
def test_load_scales_the_deployment_up_through_real_pods_and_back_down(path: str, live: LiveCluster) -> None:
    kube, namespace = live.kube, live.namespace
    apps = k8s.AppsV1Api(kube)
    model = f"meta/llama-{path}"
    deploy_variant(kube, namespace, "llama-l4", model, accelerator="L4", cost="5", min_replicas=1, max_replicas=3)
    wait_ready_pods(kube, namespace, "llama-l4", 1, 60, "the first pod ready")

    wva = live.wva(f"loop-{path}", **PATHS[path]).start("--namespace", namespace)
    try:
        wva.wait_ready()
        with LoadDriver(kube, namespace, "llama-l4") as load:
            # idle at first: the decision settles at the minimum, nothing is scaled
            load.set(**IDLE)
            wait_until(lambda: desired_replicas(get_va(kube, namespace, "llama-l4")) == 1, 60, "a first decision")

            load.set(**SATURATED)
            wait_until(lambda: apps.read_namespaced_deployment("llama-l4", namespace).spec.replicas == 3, 90,
                       f"scale-up to maxReplicas; wva log:\n{wva.tail()}")
            pods = wait_ready_pods(kube, namespace, "llama-l4", 3, 60, "three ready pods")
            assert {p.spec.node_name for p in pods} <= {"gpu-l4-a", "gpu-l4-b"}
            va = get_va(kube, namespace, "llama-l4")
            assert desired_replicas(va) == 3
            assert va["status"]["actuation"]["applied"] is True
            # saturated at its maximum: the status says so in its own words, and the scale-ups' Events
            # carry the reason code of the decision that made them
            wait_until(lambda: last_reason(get_va(kube, namespace, "llama-l4")) == "AtMaxReplicas", 30,
                       f"reason AtMaxReplicas; status: {get_va(kube, namespace, 'llama-l4').get('status')}")
            ups = [e for e in k8s.CoreV1Api(kube).list_namespaced_event(namespace).items
                   if e.involved_object.name == "llama-l4" and e.reason == "ScaledUp"]
            assert ups and all(e.message.startswith("ScaleUp") for e in ups), [e.message for e in ups]
            wait_until(lambda: gauge(wva.metrics(), "wva_desired_replicas", namespace, "llama-l4") == 3.0, 30,
                       "wva_desired_replicas 3")
            deployment = apps.read_namespaced_deployment("llama-l4", namespace)
            scale_writes = [m for m in deployment.metadata.managed_fields or [] if m.subresource == "scale"]
            assert scale_writes, "the replicas were written through the scale subresource"
            # the new pods are mapped from the watch: every ready pod's series count towards the variant
            wait_until(lambda: gauge(wva.metrics(), "wva_current_replicas", namespace, "llama-l4") == 3.0, 30,
                       "wva_current_replicas 3")

            load.set(**IDLE)
            wait_until(lambda: apps.read_namespaced_deployment("llama-l4", namespace).spec.replicas == 1, 120,
                       f"scale-down to minReplicas; wva log:\n{wva.tail()}")
            wait_until(lambda: desired_replicas(get_va(kube, namespace, "llama-l4")) == 1, 30, "status says 1")
            wait_until(lambda: last_reason(get_va(kube, namespace, "llama-l4")) in ("AtMinReplicas", "HoldSteady"),
                       30, "a hold at the minimum")
            wait_until(lambda: pods_left(live.nodes, namespace) == 1, 60, "the removed pods' processes ended")
        assert wva.alive, wva.tail()
    finally:
        code = wva.stop()
    assert code == 0, wva.tail()
    assert_clean_log(wva)


def last_reason(va: dict[str, Any]) -> str | None:
    decision = (va.get("status") or {}).get("lastDecision") or {}
    return decision.get("reason")
