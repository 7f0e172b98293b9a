"""kind end-to-end fixtures: a real cluster, Prometheus, the wva chart and emulated vLLM pods.

The suite runs only when ``WVA_E2E=1`` and a kind cluster is reachable (``kind``, ``kubectl``,
``docker`` and ``helm`` on PATH, the current kubectl context is ``kind-*`` and ``kubectl
cluster-info`` answers). Otherwise every test that needs the cluster is skipped with the reason;
the offline checks of the objects the suite creates still run. With
``WVA_E2E_CREATE_CLUSTER=1`` a missing cluster is created by ``deploy/kind/install.sh``.

Knobs (environment):

- ``WVA_E2E_CLUSTER`` (``wva``): kind cluster name.
- ``WVA_E2E_SKIP_INSTALL=1``: use what is installed; do not run ``deploy/kind/install.sh``.
- ``WVA_E2E_ACTUATION`` (``hpa``): actuation mode installed when the suite installs the chart.
- ``WVA_E2E_TIMEOUT`` (``420``): seconds allowed for each scaling assertion.
- ``WVA_NAMESPACE`` (``wva-system``), ``MONITORING_NAMESPACE`` (``monitoring``).

Helpers (``poll``, ``Kubectl``, ``Prometheus``) live in ``e2e_support.py`` beside this file.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    CLUSTER,
    MONITORING_NAMESPACE,
    REPO,
    WVA_NAMESPACE,
    Kubectl,
    Prometheus,
    free_port,
    poll,
    skip_reason,
)

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if E2E_DIR in Path(i.path).resolve().parents]
    for item in mine:
        item.add_marker(pytest.mark.e2e)
    # Only tests that touch the cluster (through wva_installed) skip; manifest checks always run.
    needs_cluster = [i for i in mine if "wva_installed" in getattr(i, "fixturenames", ())]
    if not needs_cluster:
        return
    reason = skip_reason()
    if reason is not None:
        for item in needs_cluster:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    return Kubectl()


@pytest.fixture(scope="session")
def wva_installed(kubectl: Kubectl) -> dict[str, Any]:
    """The installed operator Deployment (installing cluster, Prometheus and chart unless told not to)."""
    if os.environ.get("WVA_E2E_SKIP_INSTALL") != "1":
        env = {
            **os.environ,
            "CLUSTER_NAME": CLUSTER,
            "WVA_NAMESPACE": WVA_NAMESPACE,
            "MONITORING_NAMESPACE": MONITORING_NAMESPACE,
            "ACTUATION_MODE": os.environ.get("WVA_E2E_ACTUATION", "hpa"),
        }
        proc = subprocess.run(
            ["bash", str(REPO / "deploy" / "kind" / "install.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert proc.returncode == 0, (
            f"deploy/kind/install.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    deployments = kubectl.get(
        "deployments", "-n", WVA_NAMESPACE, "-l", "app.kubernetes.io/name=workload-variant-autoscaler"
    )
    assert deployments["items"], f"no wva Deployment in {WVA_NAMESPACE}; install the chart first"
    deployment: dict[str, Any] = deployments["items"][0]
    return deployment


@pytest.fixture(scope="session")
def prometheus(wva_installed: dict[str, Any]) -> Iterator[Prometheus]:
    """Prometheus of kube-prometheus-stack through `kubectl port-forward` on a free local port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "kubectl",
            "-n",
            MONITORING_NAMESPACE,
            "port-forward",
            "svc/kube-prometheus-stack-prometheus",
            f"{port}:9090",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool | None:
            if proc.poll() is not None:
                raise AssertionError(f"port-forward exited: {proc.stderr.read() if proc.stderr else ''}")
            return True if prom.ready() else None

        poll("Prometheus through port-forward", ready, timeout=60, interval=1)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl, wva_installed: dict[str, Any]) -> Iterator[str]:
    name = f"wva-e2e-{uuid.uuid4().hex[:6]}"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--ignore-not-found", "--wait=false")
