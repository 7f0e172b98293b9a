"""The harness itself, on the real control plane: Nodes stay Ready, the scheduler places a Deployment's
pods by their GPU node selector, the node agent runs each as a process on its own loopback address,
Prometheus finds them through its Kubernetes pod discovery, and scaling down ends the processes."""

from __future__ import annotations

import urllib.request

from kubernetes import client as k8s

from cluster import ControlPlane
from cpsupport import pods_left, server_side_apply, vllm_deployment, wait_ready_pods, wait_until
from node_agent import NodePool
from wva.sim.prometheus import LocalPrometheus


def test_nodes_register_and_stay_ready_under_the_node_lifecycle_controller(
    kube: k8s.ApiClient, nodes: NodePool
) -> None:
    core = k8s.CoreV1Api(kube)

    def all_ready() -> bool:
        items = core.list_node().items
        names = {n.metadata.name for n in items}
        ready = all(
            any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in items
        )
        untainted = all(not (n.spec.taints or []) for n in items)
        return names == {a.spec.name for a in nodes.agents} and ready and untainted

    wait_until(all_ready, 60, "every node Ready and without the not-ready taint")
    gpu = {n.metadata.name: n.status.allocatable["nvidia.com/gpu"] for n in core.list_node().items}
    assert set(gpu.values()) == {"8"}


def test_deployment_pods_are_scheduled_run_and_scraped(
    kube: k8s.ApiClient, nodes: NodePool, namespace: str, cp_prometheus: LocalPrometheus,
    control_plane: ControlPlane,
) -> None:
    deployment = vllm_deployment("h100", namespace, "m/harness", replicas=2, gpu_product="NVIDIA-H100-80GB-HBM3")
    server_side_apply(kube, deployment)
    pods = wait_ready_pods(kube, namespace, "h100", 2, 60, "two ready pods")
    assert {p.spec.node_name for p in pods} == {"gpu-h100-a"}, "the scheduler honours the GPU node selector"
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.") for ip in ips), ips
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8000/metrics", timeout=5) as resp:
            assert 'model_name="m/harness"' in resp.read().decode()

    # Prometheus found the pods by itself and labels their series with namespace and pod
    series = cp_prometheus.wait_for_blocking(
        f'vllm:kv_cache_usage_perc{{namespace="{namespace}"}}', lambda r: len(r) == 2, timeout=60
    )
    assert {s["metric"]["pod"] for s in series} == {p.metadata.name for p in pods}

    # scale down through the scale subresource: the deployment controller removes a pod, its process ends
    k8s.AppsV1Api(kube).patch_namespaced_deployment_scale("h100", namespace, {"spec": {"replicas": 1}})
    wait_until(lambda: pods_left(nodes, namespace) == 1, 60, "one emulator process left")
    wait_until(lambda: len(k8s.CoreV1Api(kube).list_namespaced_pod(namespace).items) == 1, 60, "one pod left")
    assert not nodes.errors(), nodes.errors()
