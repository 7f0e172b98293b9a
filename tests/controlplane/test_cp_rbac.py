"""The chart's RBAC, decided by the real apiserver: wva's ServiceAccount (a TokenRequest token) may do
everything wva does and nothing else, and the server authenticates the token itself.

The full-loop tests run wva under this identity end to end; here each permission is probed on its
own so a rule that grows or shrinks is caught by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from cluster import ControlPlane
from conftest import Release
from cpsupport import as_wva_client, deploy_variant, service_account_token
from wva.api.constants import GROUP, PLURAL, VERSION


@pytest.fixture()
def as_wva(control_plane: ControlPlane, kube: k8s.ApiClient, wva_release: Release) -> Iterator[k8s.ApiClient]:
    api = as_wva_client(control_plane, kube, wva_release, "rbac-probe")
    try:
        yield api
    finally:
        api.close()


@pytest.fixture()
def workload(kube: k8s.ApiClient, namespace: str) -> str:
    deploy_variant(kube, namespace, "probe", "m/rbac", replicas=0)
    return namespace


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def allowed_calls(api: k8s.ApiClient, ns: str, release: Release) -> dict[str, Callable[[], Any]]:
    release_ns = release.namespace
    custom, apps, core = k8s.CustomObjectsApi(api), k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    coordination = k8s.CoordinationV1Api(api)
    lease = {"metadata": {"name": f"probe-{ns}"[:63]}, "spec": {"holderIdentity": "probe", "leaseDurationSeconds": 5}}
    event = {
        "metadata": {"generateName": "probe-"},
        "involvedObject": {"kind": "VariantAutoscaling", "name": "probe", "namespace": ns},
        "reason": "Probe", "message": "rbac probe", "type": "Normal",
    }
    return {
        "list variantautoscalings (all namespaces)": lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL),
        "get variantautoscaling": lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "probe"),
        "patch variantautoscalings/status": lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, "probe", {"status": {"actuation": {"applied": False}}}
        ),
        "list deployments (all namespaces)": lambda: apps.list_deployment_for_all_namespaces(limit=1),
        "patch deployments/scale (direct actuation)": lambda: apps.patch_namespaced_deployment_scale(
            "probe", ns, {"spec": {"replicas": 0}}
        ),
        "list pods (all namespaces)": lambda: core.list_pod_for_all_namespaces(limit=1),
        "create events": lambda: core.create_namespaced_event(ns, event),
        **{
            f"get ConfigMap {name}": (lambda name=name: core.read_namespaced_config_map(name, release_ns))
            for name in chart_configmaps(release)
        },
        "create a Lease in its namespace": lambda: coordination.create_namespaced_lease(release_ns, lease),
        "list namespaces (kopf)": lambda: core.list_namespace(limit=1),
        "list customresourcedefinitions (kopf)": lambda: k8s.ApiextensionsV1Api(api).list_custom_resource_definition(
            limit=1
        ),
        # the secure metrics port: who is this scraper, and may it get this path
        "create tokenreviews (metrics port)": lambda: k8s.AuthenticationV1Api(api).create_token_review(
            {"spec": {"token": "not-a-token"}}
        ),
        "create subjectaccessreviews (metrics port)": lambda: k8s.AuthorizationV1Api(
            api).create_subject_access_review(
            {"spec": {"user": "someone", "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}}
        ),
    }


def chart_configmaps(release: Release) -> list[str]:
    """The ConfigMaps the chart points wva at (CONFIG_MAP_NAME, SATURATION_CONFIG_MAP_NAME)."""
    env = {v.name: v.value for v in release.deployment.spec.template.spec.containers[0].env or []}
    names = [env[key] for key in ("CONFIG_MAP_NAME", "SATURATION_CONFIG_MAP_NAME")]
    assert all(names), env
    return names


def denied_calls(api: k8s.ApiClient, ns: str, release: Release) -> dict[str, Callable[[], Any]]:
    release_ns = release.namespace
    custom, apps, core = k8s.CustomObjectsApi(api), k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    return {
        "delete a Deployment": lambda: apps.delete_namespaced_deployment("probe", ns),
        "patch a Deployment's spec": lambda: apps.patch_namespaced_deployment("probe", ns, {"spec": {"paused": True}}),
        "list Secrets": lambda: core.list_namespaced_secret(release_ns),
        "read a Secret": lambda: core.read_namespaced_secret("anything", ns),
        "create a Pod": lambda: core.create_namespaced_pod(
            ns, {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
        ),
        "delete a Pod": lambda: core.delete_collection_namespaced_pod(ns),
        "patch a VariantAutoscaling's spec": lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "probe", {"spec": {"modelID": "hijacked"}}
        ),
        "delete a VariantAutoscaling": lambda: custom.delete_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "probe"
        ),
        "update a ConfigMap": lambda: core.patch_namespaced_config_map(
            chart_configmaps(release)[1], release_ns, {"data": {"x": "y"}}
        ),
        "list ConfigMaps of another namespace": lambda: core.list_namespaced_config_map(ns),
        "create a Lease outside its namespace": lambda: k8s.CoordinationV1Api(api).create_namespaced_lease(
            ns, {"metadata": {"name": "probe"}, "spec": {}}
        ),
        "mint a token for another account": lambda: core.create_namespaced_service_account_token(
            release.scraper[1], release.scraper[0], {"spec": {"audiences": [], "expirationSeconds": 600}}
        ),
        "create a RoleBinding (escalation)": lambda: k8s.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
            release_ns,
            {"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                   "name": "cluster-admin"},
             "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": release_ns}]},
        ),
    }


def test_everything_wva_does_is_allowed(as_wva: k8s.ApiClient, workload: str, wva_release: Release) -> None:
    answers = {name: _status(call) for name, call in allowed_calls(as_wva, workload, wva_release).items()}
    refused = {name: code for name, code in answers.items() if code not in (200, 201)}
    assert not refused, f"the chart's RBAC refuses what wva needs: {refused}"


def test_actions_outside_its_role_are_denied_by_the_server(
    as_wva: k8s.ApiClient, workload: str, wva_release: Release
) -> None:
    answers = {name: _status(call) for name, call in denied_calls(as_wva, workload, wva_release).items()}
    not_denied = {name: code for name, code in answers.items() if code != 403}
    assert not not_denied, f"expected 403 Forbidden for each, got: {not_denied}"


def test_the_server_authenticates_the_token(
    control_plane: ControlPlane, kube: k8s.ApiClient, wva_release: Release
) -> None:
    token = service_account_token(kube, wva_release.namespace, wva_release.service_account, seconds=600)
    forged = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)  # the signature no longer matches
    for label, value in (("forged", forged), ("garbage", "not-a-token")):
        path = control_plane.token_kubeconfig(f"rbac-{label}", value, namespace=wva_release.namespace)
        api = k8s_config.new_client_from_config(str(path))
        try:
            code = _status(lambda api=api: k8s.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL))
        finally:
            api.close()
        assert code == 401, f"{label} token: {code}"
    # the genuine token names the chart's ServiceAccount to the server
    path = control_plane.token_kubeconfig("rbac-whoami", token, namespace=wva_release.namespace)
    api = k8s_config.new_client_from_config(str(path))
    try:
        review = k8s.AuthenticationV1Api(api).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                                          "kind": "SelfSubjectReview"})
    finally:
        api.close()
    assert review.status.user_info.username == (
        f"system:serviceaccount:{wva_release.namespace}:{wva_release.service_account}"
    )
