"""What a real apiserver does to a running wva: resourceVersion conflicts, a restart, and a forced 410 Gone.

- A status write built on a resourceVersion that another writer has moved past gets a real 409; wva
  re-reads and rebuilds it, and both writers' parts are stored (deterministic, in process).
- A second writer keeps changing the VA's status (its own condition, read-modify-write with
  resourceVersion preconditions) while a wva process writes decisions: whatever races they lose,
  in the end neither writer's part of the status is lost.
- The apiserver goes away; while it is down, changes are made through a second apiserver over the
  same etcd (a VA created, one deleted, a spec edited) and etcd is compacted past every
  resourceVersion wva has seen. The main apiserver comes back: wva's watches can only resume through
  410 Gone and a fresh list, and wva must end up with the cluster as it is, and keep deciding.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from cluster import ControlPlane
from conftest import LiveCluster, Release
from cpsupport import (
    LoadDriver,
    as_wva_client,
    condition,
    create_va,
    deploy_variant,
    desired_replicas,
    get_va,
    ready_pods,
    variant,
    wait_until,
)
from test_cp_loop import IDLE, SATURATED, gauge
from wva.actuator.status import ConditionUpdate, StatusUpdate, StatusWriter
from wva.api.constants import GROUP, PLURAL, VERSION
from wva.inventory import Inventory
from wva.kube import KubeClient

EXTERNAL = "ExternalCheck"


class OtherStatusWriter(threading.Thread):
    """Another controller that owns one condition of the VA's status and writes it every few milliseconds,
    the careful way: read, change its own condition only, write with the read resourceVersion."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        super().__init__(daemon=True, name="other-status-writer")
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.stop_event = threading.Event()
        self.writes = 0
        self.conflicts = 0
        self.lost: list[str] = []  # times our condition had vanished when we read the object back
        self.last_message: str | None = None

    def write_once(self) -> bool:
        """Read the VA, set our condition, write it back with the read resourceVersion; False on a 409."""
        va = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        conditions: list[dict[str, Any]] = list((va.get("status") or {}).get("conditions") or [])
        ours = next((c for c in conditions if c.get("type") == EXTERNAL), None)
        if self.last_message is not None and (ours is None or ours.get("message") != self.last_message):
            self.lost.append(f"expected {self.last_message!r}, found {ours!r}")
        message = f"write {self.writes + 1}"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mine = {"type": EXTERNAL, "status": "True", "reason": "Probe", "message": message, "lastTransitionTime": now}
        conditions = [c for c in conditions if c.get("type") != EXTERNAL] + [mine]
        version = va["metadata"]["resourceVersion"]
        body = {"metadata": {"resourceVersion": version}, "status": {"conditions": conditions}}
        try:
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, self.name, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.conflicts += 1
            return False
        self.writes += 1
        self.last_message = message
        return True

    def run(self) -> None:
        while not self.stop_event.is_set():
            if self.write_once():
                self.stop_event.wait(0.02)


def test_wva_and_another_status_writer_side_by_side_lose_nothing(live: LiveCluster) -> None:
    kube, namespace = live.kube, live.namespace
    deploy_variant(kube, namespace, "contended", "m/contended", min_replicas=1, max_replicas=3)
    wait_until(lambda: ready_pods(kube, namespace, "contended"), 60, "the pod ready")
    wva = live.wva("conflicts", COLLECTOR_V2="true").start("--namespace", namespace)
    other = OtherStatusWriter(kube, namespace, "contended")
    try:
        wva.wait_ready()
        with LoadDriver(kube, namespace, "contended") as load:
            load.set(**IDLE)
            wait_until(lambda: desired_replicas(get_va(kube, namespace, "contended")) == 1, 60, "a first decision")
            other.start()
            load.set(**SATURATED)  # two more decisions (1 → 2 → 3), each a status write racing the other writer
            wait_until(lambda: desired_replicas(get_va(kube, namespace, "contended")) == 3, 90,
                       f"the decisions land despite the other writer; wva log:\n{wva.tail()}")
            other.stop_event.set()
            other.join(10)
        va = get_va(kube, namespace, "contended")
    finally:
        other.stop_event.set()
        wva.stop()
    assert other.writes > 10 and not other.lost, f"wva erased the other writer's condition: {other.lost[:3]}"
    ours = condition(va, EXTERNAL)
    assert ours is not None and ours["message"] == f"write {other.writes}", ours
    for own in ("TargetResolved", "MetricsAvailable", "OptimizationReady"):
        assert condition(va, own) is not None, f"wva's {own} condition was lost"
    assert "Status write failed" not in wva.log_text()


async def test_a_status_write_built_on_a_stale_resource_version_gets_a_real_409_and_is_rebuilt(
    control_plane: ControlPlane, wva_release: Release, kube: k8s.ApiClient, namespace: str,
) -> None:
    """Deterministic: wva's view of the VA is taken, then another writer changes the status, then wva
    writes. The real server answers 409 (the resourceVersion moved); wva re-reads, applies its change
    on top of what is stored, and the second write lands with both writers' parts."""
    create_va(kube, variant("stale", namespace, "m/stale"))
    kube_client = KubeClient(as_wva_client(control_plane, kube, wva_release, "stale-writer"))
    inventory = Inventory()
    try:
        record = inventory.apply_variant(get_va(kube, namespace, "stale"))
        assert record is not None and record.resource_version
        other = OtherStatusWriter(kube, namespace, "stale")
        other.write_once()  # the stored object moves on; wva's record still has the old resourceVersion
        writer = StatusWriter(kube_client, inventory)
        update = StatusUpdate(
            conditions=(ConditionUpdate("TargetResolved", True, "TargetFound", "scale target found"),),
            desired=(2, "L4"),
        )
        assert await writer.write(record, update)
        assert kube_client.calls[("patch", "variantautoscalings/status")] == 2, "the first write lost the race"
        assert kube_client.calls[("get", PLURAL)] == 1, "the conflict made wva read the VA again"
        assert writer.conflicts == 1 and writer.failed_writes == 0
        va = get_va(kube, namespace, "stale")
        assert (condition(va, EXTERNAL) or {}).get("message") == "write 1", "the other writer's part survived"
        assert (condition(va, "TargetResolved") or {}).get("status") == "True"
        assert desired_replicas(va) == 2
        stored = inventory.variant(namespace, "stale")
        assert stored is not None and stored.resource_version == va["metadata"]["resourceVersion"]
    finally:
        kube_client.close()


def test_apiserver_restart_and_410_gone_resume_the_watches_with_the_cluster_as_it_is(live: LiveCluster) -> None:
    kube, namespace, control_plane = live.kube, live.namespace, live.plane
    apps = k8s.AppsV1Api(kube)
    for name in ("steady", "doomed"):
        deploy_variant(kube, namespace, name, f"m/{name}", min_replicas=1, max_replicas=2)
    wait_until(lambda: ready_pods(kube, namespace, "steady") and ready_pods(kube, namespace, "doomed"), 60,
               "both first pods ready")
    wva = live.wva("restart", COLLECTOR_V2="true").start("--namespace", namespace)
    try:
        wva.wait_ready()
        with LoadDriver(kube, namespace, "steady") as load:
            load.set(**IDLE)
            for name in ("steady", "doomed"):
                wait_until(lambda name=name: desired_replicas(get_va(kube, namespace, name)) == 1, 60,
                           f"{name}: a first decision")
            wait_until(lambda: gauge(wva.metrics(), "wva_desired_replicas", namespace, "doomed") == 1.0, 30,
                       "doomed's gauge")
            seen_version = int(get_va(kube, namespace, "steady")["metadata"]["resourceVersion"])

            control_plane.stop_apiserver()
            side, side_kubeconfig = control_plane.start_side_apiserver()
            side_api = k8s_config.new_client_from_config(str(side_kubeconfig))
            try:
                # what wva cannot see happen: a new variant, a deleted one, a bound lowered
                deploy_variant(side_api, namespace, "newcomer", "m/newcomer", min_replicas=1, max_replicas=2)
                k8s.CustomObjectsApi(side_api).delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "doomed"
                )
                k8s.CustomObjectsApi(side_api).patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "steady", {"spec": {"maxReplicas": 3}}
                )
                compacted = control_plane.compact_etcd()
            finally:
                side_api.close()
                side.stop()
            assert compacted > seen_version, "etcd's history before wva's last resourceVersion is gone"
            control_plane.start_apiserver()

            # wva resumes through 410 Gone and a relist: it sees the newcomer, forgets the deleted VA ...
            wait_until(lambda: desired_replicas(get_va(kube, namespace, "newcomer")) == 1, 90,
                       f"the VA created during the outage gets a decision; wva log:\n{wva.tail()}")
            wait_until(lambda: gauge(wva.metrics(), "wva_desired_replicas", namespace, "doomed") is None, 60,
                       f"the VA deleted during the outage loses its gauge; wva log:\n{wva.tail()}")
            # ... and keeps deciding, under the spec edited while it was away (maxReplicas 3)
            load.set(**SATURATED)
            wait_until(lambda: apps.read_namespaced_deployment("steady", namespace).spec.replicas == 3, 120,
                       f"scale-up to the new maxReplicas after the restart; wva log:\n{wva.tail()}")
        assert wva.alive, wva.tail()
    finally:
        code = wva.stop()
    assert code == 0, wva.tail()
    assert "Traceback" not in wva.log_text(), wva.log_text()[-4000:]
