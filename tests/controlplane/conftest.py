"""Fixtures on the real control plane (built by ``make controlplane``).

- ``control_plane`` (session): etcd, kube-apiserver (Node,RBAC), kube-controller-manager and
  kube-scheduler on loopback, with the wva CRDs installed by server-side apply.
- ``nodes`` (session): three node agents (two L4 nodes, one H100 node) that run bound pods as
  vLLM-emulator processes on their own loopback addresses.
- ``kube``: an admin ``ApiClient``; ``namespace``: a fresh namespace, deleted afterwards.
- ``live``: all of it for a test that runs ``wva run`` against real pods: the control plane, the nodes,
  Prometheus, the chart's release (``wva_release``), the test's namespace and a Lease of its own.
- ``cp_prometheus`` (session): a real Prometheus (built from its Go module, since Debian's package
  lacks Kubernetes discovery) finding those pods through ``kubernetes_sd_configs`` against the
  test apiserver, with a client certificate allowed only to list and watch pods.

Without the binaries these tests skip with the build hint, except under
``WVA_REQUIRE_CONTROLPLANE=1`` (set by ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from cluster import ControlPlane
from cpbuild import BUILD_HINT, built
from cpsupport import (
    CHART,
    CRD_DIR,
    WvaProcess,
    apply_manifests,
    chart_wva,
    cp_prometheus_config,
    delete_namespace,
    ensure_namespace,
    helm,
)
from node_agent import NodePool, NodeSpec
from wva.sim.prometheus import LocalPrometheus

_ns_counter = itertools.count(1)


def require_binaries() -> Path:
    folder = built()
    if folder is None:
        message = f"the control-plane binaries are not built; {BUILD_HINT}"
        if os.environ.get("WVA_REQUIRE_CONTROLPLANE"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(require_binaries())
    plane.start()
    try:
        api = k8s_config.new_client_from_config(str(plane.admin_kubeconfig))
        try:
            apply_manifests(api, sorted(CRD_DIR.glob("*.yaml")))
        finally:
            api.close()
        yield plane
    finally:
        pids = [pid for pid in plane.pids().values() if pid]
        plane.stop()
        left = [pid for pid in pids if _alive(pid)]
        assert not left, f"control-plane processes left behind: {left}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for every purpose but the process table
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


NODE_SPECS = [
    NodeSpec("gpu-l4-a", gpus=8, gpu_product="NVIDIA-L4"),
    NodeSpec("gpu-l4-b", gpus=8, gpu_product="NVIDIA-L4"),
    NodeSpec("gpu-h100-a", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3"),
]


@pytest.fixture(scope="session")
def nodes(control_plane: ControlPlane) -> Iterator[NodePool]:
    pool = NodePool(control_plane, NODE_SPECS)
    pool.start()
    try:
        yield pool
    finally:
        pool.stop()
        left = [pod.process.pid for pod in pool.running_pods() if pod.process.poll() is None]
        assert not left, f"pod processes left behind: {left}"


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    """An admin ``ApiClient`` shared by one module's tests."""
    client = k8s_config.new_client_from_config(str(control_plane.admin_kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture()
def kube(api: k8s.ApiClient) -> k8s.ApiClient:
    """The admin ``ApiClient`` for one test (the module's shared one)."""
    return api


@pytest.fixture()
def namespace(kube: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"cp{next(_ns_counter)}-{base}"[:63].strip("-")
    ensure_namespace(kube, name)
    try:
        yield name
    finally:
        delete_namespace(kube, name)


@pytest.fixture(scope="session")
def cp_prometheus(control_plane: ControlPlane) -> Iterator[LocalPrometheus]:
    """Prometheus built with Kubernetes service discovery (Debian's package has none)."""
    pair = control_plane.client_pair("prometheus", "wva-test-prometheus")
    api = k8s_config.new_client_from_config(str(control_plane.admin_kubeconfig))
    try:
        apply_manifests(api, [], objects=_prometheus_rbac())
    finally:
        api.close()
    server = LocalPrometheus(
        targets=[],
        binary=str(control_plane.binaries / "prometheus"),
        scrape_configs=cp_prometheus_config(control_plane, pair),
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


SCRAPER = "wva-test-scraper"  # the ServiceAccount the test release binds to its metrics-reader ClusterRole


@dataclass(frozen=True)
class Release:
    """The chart installed with helm: its namespace, ServiceAccount, Deployment and the container's env;
    ``scraper`` is the (namespace, ServiceAccount) bound to the chart's metrics-reader ClusterRole, whose
    token the tests read wva's secure metrics port with, as Prometheus would."""

    name: str
    namespace: str
    service_account: str
    deployment: Any
    scraper: tuple[str, str] = ("", "")

    @property
    def metrics_reader_role(self) -> str:
        return f"{self.name}-workload-variant-autoscaler-metrics-reader"


@pytest.fixture(scope="session")
def wva_release(control_plane: ControlPlane, cp_prometheus: LocalPrometheus, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[Release]:
    """``helm install`` of charts/ with direct actuation and no operator pod (replicaCount 0): the
    ServiceAccount, RBAC and ConfigMaps a local ``wva run`` then uses as its own."""
    home = tmp_path_factory.mktemp("helm")
    name, namespace = "wva", "wva-system"
    proc = helm(
        control_plane, home, "install", name, str(CHART), "--namespace", namespace, "--create-namespace",
        "--skip-crds", "--wait=false", "--set", "replicaCount=0", "--set", "actuation.mode=direct",
        "--set", f"prometheus.baseURL={cp_prometheus.url}", "--set", "globalOptInterval=2s",
        # a short scale-down stabilisation: the loop tests see the window work without waiting 5 minutes
        "--set", "saturation.default.scaleDownStabilizationWindow=10s",
        "--set", "prometheus.metricsCache.ttl=2s", "--set", "prometheus.metricsCache.fetchInterval=1s",
        # the chart binds its metrics-reader role to this account instead of kube-prometheus-stack's Prometheus
        "--set", f"metrics.reader.serviceAccounts[0].name={SCRAPER}",
        "--set", f"metrics.reader.serviceAccounts[0].namespace={namespace}",
    )
    assert proc.returncode == 0, f"helm install failed:\n{proc.stderr}"
    api = k8s_config.new_client_from_config(str(control_plane.admin_kubeconfig))
    try:
        deployments = k8s.AppsV1Api(api).list_namespaced_deployment(
            namespace, label_selector=f"app.kubernetes.io/instance={name}"
        ).items
        assert len(deployments) == 1, [d.metadata.name for d in deployments]
        deployment = deployments[0]
        k8s.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": SCRAPER}})
        yield Release(name, namespace, deployment.spec.template.spec.service_account_name, deployment,
                      scraper=(namespace, SCRAPER))
    finally:
        api.close()
        helm(control_plane, home, "uninstall", name, "--namespace", namespace)


@dataclass(frozen=True)
class LiveCluster:
    """One test's namespace on the whole harness: nodes that run its pods, Prometheus scraping them and the
    chart's release whose identity its ``wva run`` processes take; ``tmp_path`` holds their logs."""

    plane: ControlPlane
    nodes: NodePool
    prometheus: LocalPrometheus
    release: Release
    kube: k8s.ApiClient
    namespace: str
    tmp_path: Path

    @property
    def lease(self) -> str:
        """The test's own leader Lease (in the release namespace; ``live`` deletes it afterwards)."""
        return f"wva-leader-{self.namespace}"[:63].rstrip("-")

    def wva(self, name: str, **env: str) -> WvaProcess:
        """A ``wva run`` process (not started) like the chart's pod, electing on :attr:`lease` unless
        ``env`` names another Lease."""
        return chart_wva(self.plane, self.kube, self.release, self.tmp_path, name,
                         **{"LEADER_ELECTION_LEASE_NAME": self.lease, **env})

    def read_lease(self, name: str | None = None) -> Any:
        """A Lease of the release namespace, :attr:`lease` by default."""
        return k8s.CoordinationV1Api(self.kube).read_namespaced_lease(name or self.lease, self.release.namespace)


@pytest.fixture()
def live(control_plane: ControlPlane, nodes: NodePool, cp_prometheus: LocalPrometheus, wva_release: Release,
         kube: k8s.ApiClient, namespace: str, tmp_path: Path) -> Iterator[LiveCluster]:
    cluster = LiveCluster(control_plane, nodes, cp_prometheus, wva_release, kube, namespace, tmp_path)
    yield cluster
    with contextlib.suppress(ApiException):  # it lives in the shared release namespace
        k8s.CoordinationV1Api(kube).delete_namespaced_lease(cluster.lease, wva_release.namespace)


def _prometheus_rbac() -> list[dict[str, Any]]:
    """What Prometheus' pod discovery needs: list and watch pods, nothing else."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "wva-test-prometheus"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "wva-test-prometheus"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "wva-test-prometheus"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "wva-test-prometheus"}],
        },
    ]
