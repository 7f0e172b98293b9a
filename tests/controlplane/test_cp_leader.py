"""Leader election between two wva processes on a real Lease in the release namespace.

Two ``wva run`` processes, each configured like the chart's pod and authenticated as the chart's
ServiceAccount, compete for one Lease (its name unique to the test, a 6 s lease duration) while
watching the same namespace, which holds one VariantAutoscaling and its one-pod Deployment. It proves:

- exactly one process leads (``wva_leader`` 1, the other 0, and never two at once over several renew
  rounds), and the Lease object names that process as ``holderIdentity``;
- only the leader writes: the standby makes no write to any resource but the Lease (in particular no
  patch of ``variantautoscalings/status``) and exposes no ``wva_desired_replicas`` series, while the
  leader does and the VA gets its decision in status;
- after a SIGKILL of the leader (no chance to release the Lease) the standby takes over once the Lease
  expires: not before (it respects the holder's lease), and within lease duration + one renew interval
  + slack; the Lease names the new holder with ``leaseTransitions`` one higher; the new leader writes a
  fresh decision and, when load rises, scales the Deployment through its pods;
- a graceful SIGTERM of the leader releases the Lease, so a standby takes over well before the lease
  duration has passed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from cluster import ControlPlane
from conftest import Release
from cpsupport import (
    LoadDriver,
    WvaProcess,
    chart_wva,
    condition,
    create_va,
    desired_replicas,
    get_va,
    ready_pods,
    server_side_apply,
    variant,
    vllm_deployment,
    wait_until,
)
from node_agent import NodePool
from test_cp_loop import IDLE, SATURATED, gauge
from wva.sim.prometheus import LocalPrometheus

LEASE_SECONDS = 6.0
RENEW_SECONDS = LEASE_SECONDS / 3  # the elector renews (and a standby retries) every third of the duration
SLACK_SECONDS = 3.0  # request latency and polling on a busy two-core machine
APP = "llama-elect"


# --- pods on a port of this test's own --------------------------------------------------------------
# The node agent numbers pod addresses 127.77.0.1, .2, ... in every test session, and every emulated
# pod listens on port 8000: two sessions on one machine hand out the same address:port, so one's probes,
# loads and scrapes reach the other's pods. Pods on a port picked per test cannot be mistaken.
def pod_port() -> int:
    """A port below the ephemeral range (where wva and Prometheus get theirs), free on every address now."""
    for _ in range(500):
        port = random.randrange(20000, 30000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port in 20000-29999")


def on_port(deployment: dict[str, Any], port: int) -> dict[str, Any]:
    """``vllm_deployment(...)`` with its emulator serving (and probed and scraped) on ``port``."""
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    args = container["args"]
    args[args.index("--port") + 1] = str(port)
    container["ports"][0]["containerPort"] = port
    container["readinessProbe"]["httpGet"]["port"] = port
    template["metadata"]["annotations"]["prometheus.io/port"] = str(port)
    return deployment


def set_pod_load(pod_ip: str, port: int, **values: float) -> None:
    request = urllib.request.Request(
        f"http://{pod_ip}:{port}/control", data=json.dumps(values).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


class PortLoadDriver(LoadDriver):
    """``LoadDriver`` for pods serving on ``port``: keeps every ready pod of the app at the set values."""

    def __init__(self, api: k8s.ApiClient, namespace: str, app: str, port: int) -> None:
        super().__init__(api, namespace, app)
        self.port = port

    def set(self, **values: float) -> None:
        self.values = dict(values)
        self._push()

    def _push(self) -> int:
        count = 0
        for pod in ready_pods(self.api, self.namespace, self.app):
            with contextlib.suppress(OSError):
                set_pod_load(pod.status.pod_ip, self.port, **self.values)
                count += 1
        return count

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.values:
                with contextlib.suppress(Exception):
                    self._push()


# --- reading a process' metrics ---------------------------------------------------------------------
def samples(metrics: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name
    ]


def leader_gauge(wva: WvaProcess) -> float | None:
    """``wva_leader`` as the process exposes it now; None when it does not answer."""
    found = samples(wva.metrics(), "wva_leader")
    return found[0][1] if found else None


def writes(metrics: str) -> dict[tuple[str, str], float]:
    """Requests of a mutating verb by (verb, resource), summed over outcomes."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(metrics, "wva_kube_api_requests_total"):
        if labels.get("verb") in ("create", "patch", "update", "delete") and value > 0:
            key = (labels["verb"], labels["resource"])
            out[key] = out.get(key, 0.0) + value
    return out


def status_patches(metrics: str) -> float:
    return writes(metrics).get(("patch", "variantautoscalings/status"), 0.0)


def desired_series(metrics: str) -> list[tuple[dict[str, str], float]]:
    return samples(metrics, "wva_desired_replicas")


# --- the Lease ----------------------------------------------------------------------------------------
def read_lease(api: k8s.ApiClient, namespace: str, name: str) -> Any:
    return k8s.CoordinationV1Api(api).read_namespaced_lease(name, namespace)


def leader_among(processes: list[WvaProcess]) -> WvaProcess | None:
    """The one process reporting ``wva_leader`` 1 while every other reports 0, else None."""
    values = [leader_gauge(p) for p in processes]
    if values.count(1.0) == 1 and values.count(0.0) == len(values) - 1:
        return processes[values.index(1.0)]
    return None


def last_run_time(va: dict[str, Any]) -> datetime.datetime | None:
    value = ((va.get("status") or {}).get("desiredOptimizedAlloc") or {}).get("lastRunTime")
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@pytest.fixture()
def lease_name(kube: k8s.ApiClient, wva_release: Release, namespace: str) -> Iterator[str]:
    """A Lease name of this test alone, deleted afterwards (it lives in the shared release namespace)."""
    name = f"wva-leader-{namespace}"[:63].rstrip("-")
    yield name
    with contextlib.suppress(ApiException):
        k8s.CoordinationV1Api(kube).delete_namespaced_lease(name, wva_release.namespace)


def test_one_leader_writes_and_the_standby_takes_over_when_it_dies(
    control_plane: ControlPlane,
    nodes: NodePool,
    cp_prometheus: LocalPrometheus,
    wva_release: Release,
    kube: k8s.ApiClient,
    namespace: str,
    lease_name: str,
    tmp_path: Path,
) -> None:
    apps = k8s.AppsV1Api(kube)
    model = "meta/llama-leader"
    port = pod_port()
    server_side_apply(kube, on_port(vllm_deployment(APP, namespace, model, replicas=1), port))
    create_va(kube, variant(APP, namespace, model, accelerator="L4", cost="5", min_replicas=1, max_replicas=3))
    wait_until(lambda: len(ready_pods(kube, namespace, APP)) == 1, 90, "the first pod ready")

    env = {
        "LEADER_ELECTION": "true",
        "LEADER_ELECTION_LEASE_NAME": lease_name,
        "LEADER_ELECTION_LEASE_DURATION": f"{LEASE_SECONDS:g}s",
        "COLLECTOR_V2": "true",
    }
    names = ["elect-a", "elect-b", "elect-c"]
    procs = {n: chart_wva(control_plane, kube, wva_release, tmp_path, n, **env) for n in names}
    pair = [procs["elect-a"], procs["elect-b"]]
    try:
        for proc in pair:  # both at once: they race for the Lease
            proc.start("--namespace", namespace)
        for proc in pair:
            proc.wait_ready(90)

        with PortLoadDriver(kube, namespace, APP, port) as load:
            load.set(**IDLE)
            # --- exactly one leader, named by the Lease ---------------------------------------------
            leader = wait_until(lambda: leader_among(pair), 60, "exactly one process with wva_leader 1")
            standby = pair[1 - pair.index(leader)]
            leader_name, standby_name = names[pair.index(leader)], names[pair.index(standby)]
            lease = read_lease(kube, wva_release.namespace, lease_name)
            assert lease.spec.holder_identity == leader_name
            assert lease.spec.lease_duration_seconds == int(LEASE_SECONDS)
            # over three renew rounds the roles hold (never two leaders, never none) and the Lease is renewed
            first_renew = lease.spec.renew_time
            end = time.monotonic() + 3 * RENEW_SECONDS + 1
            while time.monotonic() < end:
                assert leader_among(pair) is leader, (leader_gauge(pair[0]), leader_gauge(pair[1]))
                time.sleep(0.3)  # sampling the roles over a fixed window: there is nothing to wait for
            lease = read_lease(kube, wva_release.namespace, lease_name)
            assert lease.spec.holder_identity == leader_name and lease.spec.renew_time > first_renew

            # --- only the leader writes -----------------------------------------------------------------
            va = wait_until(lambda: (v := get_va(kube, namespace, APP)) and desired_replicas(v) == 1 and v, 90,
                            f"the leader's first decision; leader log:\n{leader.tail()}")
            assert (condition(va, "TargetResolved") or {}).get("status") == "True", va.get("status")
            assert (condition(va, "MetricsAvailable") or {}).get("status") == "True", va.get("status")
            wait_until(lambda: gauge(leader.metrics(), "wva_desired_replicas", namespace, APP) == 1.0, 30,
                       "the leader's wva_desired_replicas")
            leader_metrics, standby_metrics = leader.metrics(), standby.metrics()
            assert status_patches(leader_metrics) >= 1, writes(leader_metrics)
            assert status_patches(standby_metrics) == 0, writes(standby_metrics)
            assert {resource for _verb, resource in writes(standby_metrics)} <= {"leases"}, writes(standby_metrics)
            assert desired_series(standby_metrics) == [], desired_series(standby_metrics)
            assert "Saturation engine started" not in standby.log_text()
            transitions_before = lease.spec.lease_transitions or 0

            # --- SIGKILL of the leader: the standby waits for the lease to expire, then takes over ------
            killed_at = time.monotonic()
            killed_wall = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            leader.kill()
            wait_until(lambda: leader_gauge(standby) == 1.0, LEASE_SECONDS + RENEW_SECONDS + 30,
                       f"the standby leads; its log:\n{standby.tail()}", interval=0.1)
            handover = time.monotonic() - killed_at
            print(f"SIGKILL handover: {handover:.2f}s (lease {LEASE_SECONDS:g}s, renew {RENEW_SECONDS:g}s)")
            assert handover <= LEASE_SECONDS + RENEW_SECONDS + SLACK_SECONDS, f"handover took {handover:.2f}s"
            # the last renewal was at most one renew interval (plus a request) before the kill
            assert handover >= LEASE_SECONDS - RENEW_SECONDS - 1.0, f"took over a live lease after {handover:.2f}s"
            lease = read_lease(kube, wva_release.namespace, lease_name)
            assert lease.spec.holder_identity == standby_name
            assert (lease.spec.lease_transitions or 0) == transitions_before + 1
            new_leader = standby

            # the new leader's decisions reach status: a fresh write first, then a scale-up on load
            va = wait_until(lambda: (v := get_va(kube, namespace, APP)) and (t := last_run_time(v))
                            and t > killed_wall and v, 60, f"a decision after the kill; log:\n{new_leader.tail()}")
            assert desired_replicas(va) == 1
            wait_until(lambda: gauge(new_leader.metrics(), "wva_desired_replicas", namespace, APP) == 1.0, 30,
                       "the new leader's wva_desired_replicas")
            assert status_patches(new_leader.metrics()) >= 1
            load.set(**SATURATED)
            wait_until(lambda: apps.read_namespaced_deployment(APP, namespace).spec.replicas == 3, 120,
                       f"the new leader scales up; log:\n{new_leader.tail()}")
            wait_until(lambda: len(ready_pods(kube, namespace, APP)) == 3, 90, "three ready pods")
            wait_until(lambda: desired_replicas(get_va(kube, namespace, APP)) == 3, 30, "status says 3")

            # --- SIGTERM of the leader releases the Lease: a fresh standby takes over at its next try ----
            third = procs["elect-c"].start("--namespace", namespace)
            third.wait_ready(90)
            wait_until(lambda: leader_among([new_leader, third]) is new_leader, 30, "the third process stands by")
            stopped_at = time.monotonic()
            code = new_leader.stop()
            exited = time.monotonic() - stopped_at
            assert code == 0, new_leader.tail()
            # renewed at most a renew interval before SIGTERM, the lease would still be valid for seconds:
            # a holder other than the stopped process means it released the Lease on its way out
            assert exited < LEASE_SECONDS - RENEW_SECONDS - 1.0, f"the leader took {exited:.2f}s to exit"
            lease = read_lease(kube, wva_release.namespace, lease_name)
            assert lease.spec.holder_identity in (None, "elect-c"), lease.spec
            wait_until(lambda: leader_gauge(third) == 1.0, LEASE_SECONDS + 30, f"the third leads:\n{third.tail()}",
                       interval=0.1)
            graceful = time.monotonic() - stopped_at
            print(f"SIGTERM handover: {graceful:.2f}s (the leader exited after {exited:.2f}s)")
            # a released Lease is taken at the standby's next attempt, not after the lease ran out
            assert graceful < LEASE_SECONDS, f"graceful handover took {graceful:.2f}s"
            lease = read_lease(kube, wva_release.namespace, lease_name)
            assert lease.spec.holder_identity == "elect-c"
            assert (lease.spec.lease_transitions or 0) == transitions_before + 2
            wait_until(lambda: gauge(third.metrics(), "wva_desired_replicas", namespace, APP) == 3.0, 60,
                       "the third leader publishes the decision")
    finally:
        codes = {n: p.stop() for n, p in procs.items() if p.alive}
    assert all(code == 0 for code in codes.values()), codes
    for name, proc in procs.items():
        log = proc.log_text()
        assert "Traceback" not in log, f"{name}:\n{log[-4000:]}"
        assert " 403" not in log and "Forbidden" not in log, f"{name}: the chart's RBAC covers leader election"
