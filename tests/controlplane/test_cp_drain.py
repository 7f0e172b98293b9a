"""Drain-aware scale-down on the real control plane: the real ReplicaSet controller removes the pod wva chose.

Three emulated vLLM pods carry different loads. wva's :class:`DrainAwareScaler`, authenticated as the
chart's ServiceAccount, writes ``controller.kubernetes.io/pod-deletion-cost`` on them from the loads
the pods themselves serve on ``/metrics``; then the Deployment's scale subresource goes down by one,
and the deployment and replicaset controllers delete the pods. The least-loaded pod is picked
against the controller's own preference where it has one (a pod alone on its node is otherwise kept
over doubled-up ones, an older ready pod over a newer one), so only the annotation can make it go.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from cluster import ControlPlane
from conftest import LiveCluster, Release
from cpsupport import (
    EMULATOR_PORT,
    as_wva_client,
    server_side_apply,
    set_load,
    vllm_deployment,
    wait_ready_pods,
    wait_until,
)
from wva.actuator.drain import DELETION_COST_ANNOTATION, DrainAwareScaler, PodLoad, plan_scale_down
from wva.collector.v2.exposition import parse_exposition, reading_from_samples
from wva.inventory import Inventory
from wva.kube import KubeClient

T = TypeVar("T")
APP = "drain"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture()
def wva_kube(control_plane: ControlPlane, kube: k8s.ApiClient, wva_release: Release) -> Iterator[KubeClient]:
    """wva's own KubeClient under the chart's ServiceAccount (a TokenRequest token): its RBAC decides."""
    client = KubeClient(as_wva_client(control_plane, kube, wva_release, "drain-wva"))
    try:
        yield client
    finally:
        client.close()


def scrape(ip: str, model: str) -> PodLoad:
    """The pod's load as its own vLLM endpoint reports it (the pod-scraping source's parser)."""
    with urllib.request.urlopen(f"http://{ip}:{EMULATOR_PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    reading = reading_from_samples(parse_exposition(text), model, at=time.monotonic(), wall=time.time())
    return PodLoad(reading.kv_cache_usage, reading.running)


def inventory_of(kube: k8s.ApiClient, namespace: str) -> Inventory:
    """An inventory fed the pods as the watch would deliver them."""
    inventory = Inventory()
    for pod in k8s.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app={APP}").items:
        inventory.apply_pod(kube.sanitize_for_serialization(pod))
    return inventory


def ready_time(pod: Any) -> float:
    """When the pod became Ready (seconds since the epoch; 0 when the condition has no time)."""
    for c in pod.status.conditions or []:
        if c.type == "Ready" and c.last_transition_time is not None:
            return float(c.last_transition_time.timestamp())
    return 0.0


def against_the_controller(pods: list[Any]) -> Any:
    """The pod the ReplicaSet controller would keep longest without costs: alone on its node if one is
    (doubled-up pods go first), else the one ready longest (the newest ready goes first)."""
    per_node = Counter(p.spec.node_name for p in pods)
    alone = [p for p in pods if per_node[p.spec.node_name] == 1]
    candidates = alone if alone and len(alone) < len(pods) else pods
    return min(candidates, key=lambda p: (ready_time(p), p.metadata.name))


def live_pods(kube: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    """Pods of the app not being deleted, by name."""
    items = k8s.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app={APP}").items
    return {p.metadata.name: p for p in items if p.metadata.deletion_timestamp is None}


def scale_down_and_time(kube: k8s.ApiClient, wva_kube: KubeClient, namespace: str, replicas: int,
                        victim: str) -> float:
    """Patch the scale subresource as wva does; seconds until the controller has deleted ``victim``."""
    run(wva_kube.patch_deployment_scale(namespace, APP, replicas))
    started = time.monotonic()
    wait_until(lambda: victim not in live_pods(kube, namespace), 30, f"the controller deletes {victim}", interval=0.05)
    return time.monotonic() - started


def pods_serving(live: LiveCluster, model: str, replicas: int, what: str) -> list[Any]:
    """The app's emulator Deployment serving ``model``, waited for until its pods are ready; those pods."""
    server_side_apply(live.kube, vllm_deployment(APP, live.namespace, model, replicas=replicas))
    return wait_ready_pods(live.kube, live.namespace, APP, replicas, 60, what)


def test_replicaset_controller_removes_the_least_loaded_pod(live: LiveCluster, wva_kube: KubeClient) -> None:
    kube, namespace, nodes = live.kube, live.namespace, live.nodes
    model = "meta/llama-drain"
    pods = pods_serving(live, model, 3, "three ready pods")

    # round 1, 3 -> 2: the least-loaded pod is the one the controller would otherwise keep
    victim = against_the_controller(pods)
    others = sorted((p for p in pods if p is not victim), key=lambda p: p.metadata.name)
    set_load(victim.status.pod_ip, num_requests_running=1, kv_cache_usage=0.15)
    set_load(others[0].status.pod_ip, num_requests_running=4, kv_cache_usage=0.55)
    set_load(others[1].status.pod_ip, num_requests_running=9, kv_cache_usage=0.35)
    loads = {p.metadata.name: scrape(p.status.pod_ip, model) for p in pods}
    assert loads[victim.metadata.name] == PodLoad(0.15, 1.0), loads
    plan = plan_scale_down(loads, current=3, target=2)
    assert plan.victims == (victim.metadata.name,)

    scaler = DrainAwareScaler(wva_kube, inventory_of(kube, namespace).ready_pods)
    run(scaler.prepare_scale_down(namespace, APP, 3, 2, loads))
    assert scaler.stats["patched"] == 3 and scaler.stats["failed"] == 0, scaler.stats
    assert wva_kube.calls[("patch", "pods")] == 3
    annotated = live_pods(kube, namespace)
    costs = {name: int(p.metadata.annotations[DELETION_COST_ANNOTATION]) for name, p in annotated.items()}
    assert costs == dict(plan.costs) == {victim.metadata.name: 1150, others[0].metadata.name: 4549,
                                         others[1].metadata.name: 9350}
    # the same loads again: nothing is written
    run(scaler.prepare_scale_down(namespace, APP, 3, 2, loads))
    assert wva_kube.calls[("patch", "pods")] == 3

    first = scale_down_and_time(kube, wva_kube, namespace, 2, victim.metadata.name)
    survivors = wait_until(lambda: len(live_pods(kube, namespace)) == 2 and live_pods(kube, namespace), 30,
                           "two pods left")
    assert set(survivors) == {p.metadata.name for p in others}
    for name, pod in survivors.items():
        assert pod.metadata.annotations[DELETION_COST_ANNOTATION] == str(costs[name])
    wait_until(lambda: all(p.name != victim.metadata.name for p in nodes.running_pods()), 30,
               "the victim's process ended")

    # round 2, 2 -> 1: the loads turn around; only the changed annotations are written
    keep, go = sorted(survivors.values(), key=lambda p: (ready_time(p), p.metadata.name), reverse=True)
    set_load(go.status.pod_ip, num_requests_running=0, kv_cache_usage=0.9)
    set_load(keep.status.pod_ip, num_requests_running=2, kv_cache_usage=0.1)
    loads = {p.metadata.name: scrape(p.status.pod_ip, model) for p in survivors.values()}
    scaler.pods = inventory_of(kube, namespace).ready_pods
    run(scaler.prepare_scale_down(namespace, APP, 2, 1, loads))
    assert wva_kube.calls[("patch", "pods")] == 5
    second = scale_down_and_time(kube, wva_kube, namespace, 1, go.metadata.name)
    left = wait_until(lambda: len(live_pods(kube, namespace)) == 1 and live_pods(kube, namespace), 30, "one pod left")
    assert set(left) == {keep.metadata.name}
    assert left[keep.metadata.name].metadata.annotations[DELETION_COST_ANNOTATION] == "2100"

    print(f"\n[drain] the controller deleted the chosen pod {first:.2f}s (3->2) and {second:.2f}s (2->1) "
          "after the scale patch")


def test_drain_wait_holds_the_scale_down_until_the_victim_is_idle(live: LiveCluster, wva_kube: KubeClient) -> None:
    kube, namespace = live.kube, live.namespace
    model = "meta/llama-drain-wait"
    pods = pods_serving(live, model, 2, "two ready pods")
    victim, other = sorted(pods, key=lambda p: p.metadata.name)
    ips = {p.metadata.name: p.status.pod_ip for p in pods}
    set_load(victim.status.pod_ip, num_requests_running=2, kv_cache_usage=0.2)
    set_load(other.status.pod_ip, num_requests_running=6, kv_cache_usage=0.7)
    polls: Counter[str] = Counter()

    async def in_flight(namespace: str, pod: str) -> float | None:
        polls[pod] += 1
        load = await asyncio.to_thread(scrape, ips[pod], model)
        return load.in_flight

    inventory = inventory_of(kube, namespace)
    # KV usage known to the caller, in-flight counts fetched from the pods by the scaler itself
    loads = {name: PodLoad(scrape(ip, model).kv_cache_usage, None) for name, ip in ips.items()}

    # a busy victim and a short timeout: the wait gives up and returns
    scaler = DrainAwareScaler(wva_kube, inventory.ready_pods, drain_timeout=1.0, in_flight=in_flight,
                              poll_interval=0.1)
    started = time.monotonic()
    run(scaler.prepare_scale_down(namespace, APP, 2, 1, loads))
    timed_out_after = time.monotonic() - started
    assert scaler.stats["drain_timeout"] == 1 and scaler.stats["drained"] == 0, scaler.stats
    assert 1.0 <= timed_out_after < 10, timed_out_after
    assert polls[victim.metadata.name] >= 3 and polls[other.metadata.name] == 1  # fetched once for the cost

    # a long timeout: the wait ends when the victim's last request finishes
    scaler.drain_timeout = 60
    idle_at: list[float] = []

    async def scenario() -> float:
        task = asyncio.create_task(scaler.prepare_scale_down(namespace, APP, 2, 1, loads))
        before = polls[victim.metadata.name]
        deadline = time.monotonic() + 20
        while polls[victim.metadata.name] < before + 3:  # the wait is polling the victim
            assert not task.done(), "returned while the victim still had requests in flight"
            assert time.monotonic() < deadline, "the drain wait never polled the victim"
            await asyncio.sleep(0.05)
        assert not task.done()
        await asyncio.to_thread(set_load, victim.status.pod_ip, num_requests_running=0)
        idle_at.append(time.monotonic())
        await asyncio.wait_for(task, 10)
        return time.monotonic() - idle_at[0]

    released_after = run(scenario())
    assert scaler.stats["drained"] == 1 and scaler.stats["drain_timeout"] == 1, scaler.stats
    assert wva_kube.calls[("patch", "pods")] == 2, "the costs were written once (the second run found them set)"
    annotated = live_pods(kube, namespace)
    assert annotated[victim.metadata.name].metadata.annotations[DELETION_COST_ANNOTATION] == "2200"

    removed_after = scale_down_and_time(kube, wva_kube, namespace, 1, victim.metadata.name)
    assert set(wait_until(lambda: len(live_pods(kube, namespace)) == 1 and live_pods(kube, namespace), 30,
                          "one pod left")) == {other.metadata.name}
    print(f"\n[drain] busy victim: the 1s wait returned after {timed_out_after:.2f}s; idle victim: the wait ended "
          f"{released_after:.2f}s after its last request; deleted {removed_after:.2f}s after the scale patch")
