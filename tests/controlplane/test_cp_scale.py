"""200 VariantAutoscalings and their Deployments created at once, against one wva, on the real control plane.

wva (configured like the chart's pod, as its ServiceAccount, collector v2) is already running when 200
Deployments (one replica each) and their 200 VAs are created concurrently in one namespace. The pods
request no GPU and have no node selector (the three nodes have 24 GPUs between them), so all 200 run,
each a real emulator process, and Prometheus finds them through its own Kubernetes discovery. Every
odd-numbered variant's pod is then saturated, every even-numbered one stays idle.

It proves that wva takes the burst through its watches and, once the metrics are there, gets every VA
to a correct status within a few engine cycles: TargetResolved True, MetricsAvailable True and
``desiredOptimizedAlloc.numReplicas`` of minReplicas (1) for the idle variants and maxReplicas (2) for
the saturated ones, with a matching ``wva_desired_replicas`` series for each; with nothing in its log
about a Traceback or a 403/Forbidden, and without losing its leader Lease in the burst. Actuation is
``hpa`` here (decisions published, not applied), so the expected numbers follow from the load alone and
the pod count stays at 200; the test checks that no Deployment was scaled. Afterwards the namespace is
deleted and every pod process must end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s

from conftest import LiveCluster
from cpsupport import (
    assert_clean_log,
    create_va,
    delete_namespace,
    desired_gauges,
    engine_cycles,
    gpu_free_deployment,
    pods_left,
    ready_pod_ips,
    set_load,
    variant,
    wait_until,
    wrong_statuses,
)
from test_cp_loop import IDLE, SATURATED

COUNT = 200
MIN_REPLICAS, MAX_REPLICAS = 1, 2
MAX_CYCLES = 10  # engine cycles from "every pod's metrics are in Prometheus" to "every status is right"


def name_of(i: int) -> str:
    return f"s{i:03d}"


def saturated(i: int) -> bool:
    return i % 2 == 1


def expected_replicas(i: int) -> int:
    return MAX_REPLICAS if saturated(i) else MIN_REPLICAS


def test_two_hundred_variants_created_at_once_reach_a_correct_status_within_a_few_cycles(live: LiveCluster) -> None:
    kube, namespace, nodes = live.kube, live.namespace, live.nodes
    apps = k8s.AppsV1Api(kube)
    timings: dict[str, float] = {}
    wva = live.wva("scale", COLLECTOR_V2="true", ACTUATION_MODE="hpa").start("--namespace", namespace)
    code: int | None = None
    left = -1
    try:
        wva.wait_ready(90)
        wait_until(lambda: "Leadership acquired" in wva.log_text(), 30, "wva leads")

        # --- the burst: 400 creates from 16 threads ---------------------------------------------------
        started = time.monotonic()
        jobs: list[Callable[[], Any]] = []
        for i in range(COUNT):
            body = variant(name_of(i), namespace, f"scale/model-{i:03d}", accelerator="L4", cost="5",
                           min_replicas=MIN_REPLICAS, max_replicas=MAX_REPLICAS)
            deployment = gpu_free_deployment(name_of(i), namespace, f"scale/model-{i:03d}")
            jobs.append(lambda body=body: create_va(kube, body))
            jobs.append(lambda deployment=deployment: apps.create_namespaced_deployment(namespace, deployment))
        with ThreadPoolExecutor(max_workers=16) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
        timings["create 400 objects"] = time.monotonic() - started

        # --- every pod running and ready, then the load set on the odd ones ---------------------------
        ips = wait_until(lambda: (found := ready_pod_ips(kube, namespace)) and len(found) == COUNT and found, 240,
                         f"{COUNT} ready pods", interval=1.0)
        timings[f"{COUNT} pods ready"] = time.monotonic() - started
        with ThreadPoolExecutor(max_workers=16) as pool:
            for future in [
                pool.submit(set_load, ips[name_of(i)], **(SATURATED if saturated(i) else IDLE))
                for i in range(COUNT)
            ]:
                future.result()
        selector = f'namespace="{namespace}"'

        def prometheus_has_the_load() -> bool:
            every = live.prometheus.query(f"count(vllm:kv_cache_usage_perc{{{selector}}})")
            busy = live.prometheus.query(f"count(vllm:kv_cache_usage_perc{{{selector}}} >= 0.9)")
            return bool(every and busy) and (float(every[0]["value"][1]), float(busy[0]["value"][1])) == (
                COUNT, COUNT // 2
            )

        wait_until(prometheus_has_the_load, 60, "Prometheus has every pod's load", interval=0.5)
        timings["load visible in Prometheus"] = time.monotonic() - started
        cycles_at_metrics = engine_cycles(wva.metrics())

        # --- every status right within a few cycles --------------------------------------------------
        expected = {name_of(i): expected_replicas(i) for i in range(COUNT)}
        wait_until(lambda: not wrong_statuses(kube, namespace, expected), 120,
                   f"every VA's status correct; wva log:\n{wva.tail(20)}", interval=1.0)
        timings["all statuses correct"] = time.monotonic() - started
        cycles_at_correct = engine_cycles(wva.metrics())
        cycles = cycles_at_correct - cycles_at_metrics
        print(f"\ntimings (s from the burst): { {k: round(v, 1) for k, v in timings.items()} }")
        print(f"engine cycles: {cycles_at_metrics:.0f} before the metrics were in Prometheus, "
              f"{cycles:.0f} more until all {COUNT} statuses were correct")
        assert cycles <= MAX_CYCLES, f"{cycles:.0f} cycles to converge"

        gauges = wait_until(lambda: (g := desired_gauges(wva.metrics(), namespace)) and len(g) == COUNT and g, 30,
                            f"{COUNT} wva_desired_replicas series")
        assert gauges == {name_of(i): float(expected_replicas(i)) for i in range(COUNT)}
        deployments = apps.list_namespaced_deployment(namespace).items
        assert len(deployments) == COUNT
        assert {d.spec.replicas for d in deployments} == {1}, "hpa mode publishes decisions, it scales nothing"
        assert not [e for e in nodes.errors() if namespace in e], nodes.errors()
        assert wva.alive, wva.tail()
    finally:
        code = wva.stop()
        delete_namespace(kube, namespace)
        deadline = time.monotonic() + 120
        while (left := pods_left(nodes, namespace)) and time.monotonic() < deadline:
            time.sleep(0.5)  # cannot raise here without hiding the test's own failure
    assert code == 0, wva.tail()
    assert left == 0, f"{left} pod processes of {namespace} still running 120 s after the namespace was deleted"
    assert_clean_log(wva)
    log = wva.log_text()
    # the only replica keeps its Lease through the burst: renewals do not queue behind 400 status writes
    assert log.count("Leadership acquired") == 1 and "Leader election error" not in log, log[-4000:]
