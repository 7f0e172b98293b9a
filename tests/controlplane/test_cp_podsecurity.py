"""Pod Security "restricted", decided by the real apiserver's PodSecurity admission.

PodSecurity is one of kube-apiserver's default admission plugins (the harness adds NodeRestriction
and disables none); the negative controls below prove it is active, so a pass here cannot come from
a server that checks nothing. Each workload wva ships — the chart's Deployment (several value sets),
deploy/base and every overlay, and the vLLM emulator example — is applied to a namespace labelled
``pod-security.kubernetes.io/enforce: restricted`` (version ``latest``, and ``warn`` the same, so a
violating template also warns at apply time), and it proves that:

- the apply draws no warning, and the ReplicaSet controller creates the Deployment's pod: PodSecurity
  judges pods at creation, so the pod existing is what counts, not the Deployment. The pods stay
  Pending (a node selector no node matches): admission is under test, not the node agent;
- a Pod built from the rendered pod template passes a server-side dry-run create (which runs the
  admission chain, PodSecurity included);
- the same template with ``allowPrivilegeEscalation: true``, or without ``runAsNonRoot``, is refused
  with PodSecurity's own message; a Deployment with such a template is accepted (with a warning) but
  its ReplicaSet reports ``FailedCreate`` and no pod appears — a Deployment alone proves nothing;
- the ServiceAccount admission mounts the API token into wva's pod (it asks for it) and into no pod
  of the emulator nor any other pod that runs under wva's ServiceAccount without asking.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from binaries import require_kubectl
from cluster import ControlPlane
from cpsupport import CHART, ROOT, delete_namespace, ensure_namespace, helm, wait_until

DEPLOY = ROOT / "deploy"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
VIOLATION = 'violates PodSecurity "restricted:latest"'
# a node selector no node has: the pods are created (admission passed) and stay Pending
NOWHERE = {"wva.llmd.ai/test-node": "none"}
# what the pods need in their namespace; RBAC and the CRD are cluster-wide and not under test here
NAMESPACED_KINDS = ("ServiceAccount", "ConfigMap", "Service", "Deployment", "NetworkPolicy")
TOKEN_VOLUME = "kube-api-access-"


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    result = subprocess.run([require_kubectl(), "--kubeconfig", str(plane.admin_kubeconfig), *args], env=env,
                            input=stdin, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result


def server_warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning:")]


# --- the workloads, rendered as a user would ----------------------------------------------------------
def chart_objects(plane: ControlPlane, home: Path, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = home / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = helm(plane, home, "template", "psa", str(CHART), "--namespace", namespace, "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    return documents(proc.stdout)


def kustomize_objects(plane: ControlPlane, directory: Path) -> list[dict[str, Any]]:
    return documents(kubectl(plane, "kustomize", str(directory)).stdout)


def example_objects(name: str) -> list[dict[str, Any]]:
    return documents((DEPLOY / "examples" / name).read_text())


CHART_VALUES: dict[str, dict[str, Any]] = {
    "defaults": {},
    # every volume kind the chart can mount (ConfigMap, Secret, emptyDir, the projected token) and the
    # NetworkPolicy
    "credentials-networkpolicy": {
        "prometheus": {
            "tls": {"ca": {"secretName": "prom-ca"}, "clientCert": {"secretName": "prom-client"}},
            "bearerToken": {"secretName": "prom-token"},
        },
        "networkPolicy": {"enabled": True},
    },
    # the OpenShift style: the restricted SCC assigns the ids, runAsNonRoot alone remains
    "no-fixed-ids": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}},
}
KUSTOMIZATIONS = ["base", "overlays/kind", "overlays/openshift"]
WORKLOADS = [*(f"chart:{n}" for n in CHART_VALUES), *(f"kustomize:{k}" for k in KUSTOMIZATIONS),
             "example:vllm-emulator.yaml"]


def workload(plane: ControlPlane, tmp_path: Path, namespace: str, which: str) -> list[dict[str, Any]]:
    """The namespaced objects of one workload, moved into ``namespace``, one replica kept off every node."""
    source, name = which.split(":", 1)
    if source == "chart":
        objects = chart_objects(plane, tmp_path, namespace,
                                {**CHART_VALUES[name], "replicaCount": 1, "nodeSelector": NOWHERE})
    elif source == "kustomize":
        objects = kustomize_objects(plane, DEPLOY / name)
    else:
        objects = example_objects(name)
    kept = []
    for obj in objects:
        if obj["kind"] not in NAMESPACED_KINDS:
            continue
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = 1
            obj["spec"]["template"]["spec"]["nodeSelector"] = NOWHERE
        kept.append(obj)
    assert sum(o["kind"] == "Deployment" for o in kept) == 1, [o["kind"] for o in kept]
    return kept


def deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")


def pod_from_template(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"],
                     "labels": template["metadata"].get("labels", {}),
                     "annotations": template["metadata"].get("annotations", {})},
        "spec": template["spec"],
    }


def escalating(spec: dict[str, Any]) -> str:
    spec["containers"][0].setdefault("securityContext", {})["allowPrivilegeEscalation"] = True
    return "allowPrivilegeEscalation != false"


def maybe_root(spec: dict[str, Any]) -> str:
    spec.get("securityContext", {}).pop("runAsNonRoot", None)
    spec.get("securityContext", {}).pop("runAsUser", None)
    for container in spec["containers"]:
        container.get("securityContext", {}).pop("runAsNonRoot", None)
        container.get("securityContext", {}).pop("runAsUser", None)
    return "runAsNonRoot != true"


BREAKS: dict[str, Callable[[dict[str, Any]], str]] = {"allowPrivilegeEscalation": escalating,
                                                       "no-runAsNonRoot": maybe_root}


# --- the cluster -------------------------------------------------------------------------------------
@pytest.fixture()
def restricted(kube: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"psa-{uuid.uuid4().hex[:10]}"
    ensure_namespace(kube, name, labels=RESTRICTED)
    try:
        labels = k8s.CoreV1Api(kube).read_namespace(name).metadata.labels
        assert RESTRICTED.items() <= labels.items(), labels
        yield name
    finally:
        delete_namespace(kube, name)


def pods_of(kube: k8s.ApiClient, deployment: dict[str, Any]) -> list[Any]:
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    namespace = deployment["metadata"]["namespace"]
    return list(k8s.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=selector).items)


def replica_failure(kube: k8s.ApiClient, deployment: dict[str, Any]) -> str | None:
    """The ``ReplicaFailure`` message of the Deployment's ReplicaSet, if the controller reported one."""
    namespace = deployment["metadata"]["namespace"]
    for rs in k8s.AppsV1Api(kube).list_namespaced_replica_set(namespace).items:
        owners = [o.name for o in rs.metadata.owner_references or []]
        if deployment["metadata"]["name"] not in owners:
            continue
        for cond in rs.status.conditions or []:
            if cond.type == "ReplicaFailure" and cond.status == "True":
                return f"{cond.reason}: {cond.message}"
    return None


def dry_run_pod(kube: k8s.ApiClient, pod: dict[str, Any]) -> Any:
    return k8s.CoreV1Api(kube).create_namespaced_pod(pod["metadata"]["namespace"], pod, dry_run="All")


def token_volumes(pod_spec: Any) -> list[str]:
    return [v.name for v in pod_spec.volumes or [] if v.name.startswith(TOKEN_VOLUME)]


# --- the tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", WORKLOADS)
def test_workload_runs_under_restricted_pod_security(
    control_plane: ControlPlane, kube: k8s.ApiClient, restricted: str, tmp_path: Path, which: str
) -> None:
    objects = workload(control_plane, tmp_path, restricted, which)
    deployment = deployment_of(objects)
    applied = kubectl(control_plane, "apply", "--server-side", "--validate=strict", "-f", "-",
                      stdin=yaml.safe_dump_all(objects))
    assert not server_warnings(applied), applied.stderr

    # the ReplicaSet controller's pod creation passed PodSecurity: the pod exists (Pending, on no node)
    def created() -> list[Any]:
        failure = replica_failure(kube, deployment)
        assert failure is None, failure
        return pods_of(kube, deployment)

    (pod,) = wait_until(created, 60, f"the pod of {which}")
    assert pod.spec.node_name is None and pod.status.phase == "Pending"

    # the pod template itself, created as a Pod (dry run): PodSecurity admits it
    admitted = dry_run_pod(kube, pod_from_template(deployment, "psa-dry-run"))
    assert admitted.metadata.name == "psa-dry-run"
    assert not pods_of(kube, deployment)[1:], "the dry run persisted a pod"

    # the token goes where the API is needed: wva's pod, never the emulator's
    wants_token = which != "example:vllm-emulator.yaml"
    assert bool(token_volumes(pod.spec)) is wants_token, (which, [v.name for v in pod.spec.volumes or []])


@pytest.mark.parametrize("broken", sorted(BREAKS))
@pytest.mark.parametrize("which", ["chart:defaults", "kustomize:base", "example:vllm-emulator.yaml"])
def test_a_weakened_pod_template_is_refused(
    control_plane: ControlPlane, kube: k8s.ApiClient, restricted: str, tmp_path: Path, which: str, broken: str
) -> None:
    """The negative control: PodSecurity is on, and it judges exactly the fields the manifests set."""
    objects = workload(control_plane, tmp_path, restricted, which)
    # the pod's ServiceAccount must exist, or the ServiceAccount admission refuses it before PodSecurity
    others = [o for o in objects if o["kind"] != "Deployment"]
    kubectl(control_plane, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(others))
    deployment = deployment_of(objects)
    pod = pod_from_template(deployment, "psa-weakened")
    dry_run_pod(kube, copy.deepcopy(pod))  # unweakened, it is admitted
    reason = BREAKS[broken](pod["spec"])
    with pytest.raises(ApiException) as refused:
        dry_run_pod(kube, pod)
    assert refused.value.status == 403, refused.value.body
    message = json.loads(refused.value.body)["message"]
    assert VIOLATION in message and reason in message, message


def test_a_deployment_with_a_weakened_template_gets_no_pods(
    control_plane: ControlPlane, kube: k8s.ApiClient, restricted: str, tmp_path: Path
) -> None:
    """The Deployment object is accepted (with a warning): only the pod creation is refused, which the
    ReplicaSet reports as FailedCreate. A test that stopped at the Deployment would pass here."""
    objects = workload(control_plane, tmp_path, restricted, "example:vllm-emulator.yaml")
    deployment = deployment_of(objects)
    deployment["metadata"]["name"] = "escalating"
    reason = escalating(deployment["spec"]["template"]["spec"])
    applied = kubectl(control_plane, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(deployment))
    warned = server_warnings(applied)
    assert warned and "would violate PodSecurity" in warned[0] and reason in warned[0], applied.stderr

    failure = wait_until(lambda: replica_failure(kube, deployment), 60, "the ReplicaSet's FailedCreate")
    assert failure.startswith("FailedCreate") and VIOLATION in failure and reason in failure, failure
    assert pods_of(kube, deployment) == []


def test_the_service_account_mounts_no_token_into_other_pods(
    control_plane: ControlPlane, kube: k8s.ApiClient, restricted: str, tmp_path: Path
) -> None:
    """wva's ServiceAccount sets ``automountServiceAccountToken: false``: a pod that runs under it without
    asking gets no token; the operator's own pod asks (``true``) and gets one."""
    objects = workload(control_plane, tmp_path, restricted, "chart:defaults")
    kubectl(control_plane, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))
    deployment = deployment_of(objects)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    live = k8s.CoreV1Api(kube).read_namespaced_service_account(account, restricted)
    assert live.automount_service_account_token is False

    operator = dry_run_pod(kube, pod_from_template(deployment, "psa-operator"))
    assert token_volumes(operator.spec), "the operator pod got no API token"
    other = pod_from_template(deployment, "psa-other")
    del other["spec"]["automountServiceAccountToken"]
    assert token_volumes(dry_run_pod(kube, other).spec) == []
