"""The Helm chart and the kustomize manifests, driven by the real helm and kubectl against the real apiserver.

It proves that:

- ``helm lint --strict`` passes for the chart's defaults and for value sets that switch every
  optional template on (and the other branches off);
- everything ``helm template`` renders for those value sets, CRD included, is accepted by the
  apiserver in a server-side dry run with strict field validation, and nothing is persisted;
- ``helm install`` into a fresh namespace deploys: ``helm status`` says deployed, every object of
  the release manifest (ServiceAccount, ClusterRoles, Roles, bindings, ConfigMaps, Service,
  Deployment) exists with the chart's labels, the CRD in ``crds/`` is left as it was, and
  ``helm uninstall`` removes every object again but keeps the CRD, as docs/install.md says;
- deploy/base and every overlay under deploy/overlays/ render with ``kubectl kustomize`` and pass
  ``kubectl apply -k --server-side --dry-run=server``; deploy/base applied for real creates its
  Deployment and RBAC and ``kubectl delete -k`` removes them.

Prometheus-Operator and KEDA kinds (ServiceMonitor, ScaledObject) are not part of this cluster; they
are served by stand-in CRDs whose structural schemas are converted from the ones the unit tests use
(tests/unit/test_kustomize.py), so the server validates those objects' structure too. Only the VA
CRD belongs to the repository; it is never deleted here, since other tests share it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

from binaries import require_kubectl
from cluster import ControlPlane
from cpsupport import (
    CHART,
    CRD_DIR,
    ROOT,
    crd_established,
    delete_namespace,
    ensure_namespace,
    server_side_apply,
    wait_until,
)

CHART_META: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = [DEPLOY / "base", *sorted(p.parent for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))]
VA_CRD: dict[str, Any] = yaml.safe_load((CRD_DIR / "llmd.ai_variantautoscalings.yaml").read_text())
DRY_RUN_LINE = re.compile(r"^(\S+)/(\S+) serverside-applied \(server dry run\)$")

# Value sets for lint and the dry run: the defaults, every optional template on (namespace-scoped
# RBAC, direct actuation, HPA + KEDA + adapter rules + ServiceMonitor, inline CA, token and client
# certificate Secrets, overrides, the NetworkPolicy with every rule), three shards, and the remaining branches
# (no ServiceAccount/RBAC, CA from a Secret, the pod's own token, a single replica without leader election).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-features": {
        "replicaCount": 3,
        "commonLabels": {"team": "inference"},
        "namespaceScoped": True,
        "watchNamespaces": ["@release", "@extra"],
        "controllerInstance": "ci-1",
        "collectorV2": True,
        "actuation": {"mode": "direct"},
        "imagePullSecrets": [{"name": "registry"}],
        "extraEnv": [{"name": "WVA_EXTRA", "value": "1"}],
        "podAnnotations": {"example.com/note": "x"},
        "podLabels": {"tier": "control"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccount": {"annotations": {"example.com/role": "wva"}},
        "prometheus": {
            "baseURL": "https://prometheus.monitoring.svc:9090",
            "serverName": "prometheus.monitoring.svc",
            "tls": {"ca": {"pem": "@ca"}, "clientCert": {"secretName": "prom-client"}},
            "bearerToken": {"secretName": "prom-token"},
        },
        "saturation": {"overrides": {"llama-8b": {"model_id": "meta/llama", "namespace": "llm",
                                                  "kvCacheThreshold": 0.7}}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                           "bearerTokenSecret": {"name": "prometheus-token"}},
        "metrics": {"certSecretName": "wva-metrics-tls",
                    "reader": {"serviceAccounts": [{"name": "prometheus-k8s", "namespace": "monitoring"}]}},
        "scaleTarget": {"deploymentName": "llm", "variantName": "llm-va"},
        "hpa": {"enabled": True},
        "keda": {"enabled": True, "triggerAuthenticationName": "prom-auth"},
        "prometheusAdapter": {"rulesConfigMap": True},
        "networkPolicy": {
            "enabled": True,
            "probes": {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]},
            "apiServer": {"cidrs": ["10.96.0.1/32"]},
            "podMetrics": {"enabled": True},
            "extraEgress": [{"to": [{"podSelector": {"matchLabels": {"app": "epp"}}}],
                             "ports": [{"port": 9090, "protocol": "TCP"}]}],
        },
    },
    # three shards, each a Deployment of a leader and a standby on its own Lease
    "sharded": {"sharding": {"shards": 3}, "replicaCount": 2, "collectorV2": True, "networkPolicy": {"enabled": True}},
    "minimal": {
        "metrics": {"secure": False, "port": 8080},
        "service": {"port": 8080},
        "serviceMonitor": {"enabled": True},
        "replicaCount": 1,
        "leaderElection": {"enabled": False},
        "serviceAccount": {"create": False, "name": "existing-sa"},
        "rbac": {"create": False},
        "prometheus": {"tls": {"ca": {"secretName": "prom-ca"}}, "bearerToken": {"serviceAccountToken": True}},
    },
}


# --- running the tools ------------------------------------------------------------------------------
def run(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, (
            f"{' '.join(argv)} exited {result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout[-3000:]}"
        )
    return result


def kubectl(plane: ControlPlane, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return run([require_kubectl(), "--kubeconfig", str(plane.admin_kubeconfig), *args], env=env, stdin=stdin,
               check=check, timeout=timeout)


def helm_env(home: Path) -> dict[str, str]:
    """helm's cache, config and data under ``home``: nothing is read from or written to the real home."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("HELM_")}
    env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"))
    return env


def helm(plane: ControlPlane, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(plane.binaries / "helm"), *args], env=helm_env(home), check=check, timeout=240)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def ident(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    return obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")


def no_server_warnings(result: subprocess.CompletedProcess[str]) -> None:
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert not warnings, f"the server warned:\n{result.stderr}"


def dry_run_names(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The object names kubectl reports as applied in the dry run; every output line must be one."""
    names = []
    for line in result.stdout.splitlines():
        match = DRY_RUN_LINE.match(line)
        assert match, f"unexpected kubectl output line {line!r}\nstderr:\n{result.stderr}"
        names.append(match.group(2))
    return sorted(names)


# --- the cluster ------------------------------------------------------------------------------------


def resource(api: k8s.ApiClient, obj: dict[str, Any]) -> Any:
    return dynamic.DynamicClient(api).resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


def fetch(api: k8s.ApiClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object as the server has it, or None when it does not exist."""
    res = resource(api, obj)
    try:
        found = res.get(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))
    except NotFoundError:
        return None
    result: dict[str, Any] = found.to_dict()
    return result


def _load_manifest_checks() -> Any:
    """tests/unit/test_kustomize.py holds the structural schemas of the third-party kinds; load it by path."""
    name = "wva_test_manifest_checks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "unit" / "test_kustomize.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema as a CRD structural schema: ``additionalProperties: false`` becomes the server's
    pruning plus strict field validation, ``const`` an enum, and every node gets its type."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "additionalProperties" and value is False:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: structural(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value)
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" in out:
        del out["properties"]  # a CRD schema may have one of them only
    if "type" not in out and "enum" in out:
        out["type"] = {str: "string", bool: "boolean", int: "integer"}[type(out["enum"][0])]
    return out


def stand_in_crd(api_version: str, kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    group, version = api_version.split("/")
    plural = kind.lower() + "s"
    root = structural(schema)
    root["properties"].pop("metadata", None)  # a CRD may not constrain metadata beyond the name
    root["required"] = [r for r in root.get("required", []) if r != "metadata"]
    root["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {"wva.llmd.ai/test": "stand-in"}},
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": root}}],
        },
    }


@pytest.fixture(scope="module")
def third_party_crds(api: k8s.ApiClient) -> Iterator[list[str]]:
    crds = [stand_in_crd(a, k, s) for (a, k), s in _load_manifest_checks().THIRD_PARTY_SCHEMAS.items()]
    extensions = k8s.ApiextensionsV1Api(api)
    names = []
    try:
        for crd in crds:
            name = crd["metadata"]["name"]
            server_side_apply(api, crd)
            names.append(name)
            wait_until(lambda n=name: crd_established(api, n), 30, f"{name} Established")
        # discovery must know the new kinds before kubectl maps them
        wait_until(lambda: all(_discoverable(api, c) for c in crds), 30, "stand-in kinds discoverable")
        yield names
    finally:
        for name in names:
            with contextlib.suppress(ApiException):
                extensions.delete_custom_resource_definition(name)


def _discoverable(api: k8s.ApiClient, crd: dict[str, Any]) -> bool:
    spec = crd["spec"]
    resources = k8s.CustomObjectsApi(api).get_api_resources(spec["group"], spec["versions"][0]["name"])
    return any(r.kind == spec["names"]["kind"] for r in resources.resources)


def values_for(name: str, release_ns: str, extra_ns: str, plane: ControlPlane) -> dict[str, Any]:
    """A value set with its placeholders filled in: namespaces of this test and the cluster's CA as a PEM."""
    placeholders = {"@release": release_ns, "@extra": extra_ns, "@ca": plane.ca_path.read_text()}

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return placeholders.get(value, value) if isinstance(value, str) else value

    filled: dict[str, Any] = fill(VALUE_SETS[name])
    return filled


def write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --- helm -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict(control_plane: ControlPlane, tmp_path: Path, value_set: str) -> None:
    values = write_values(tmp_path, values_for(value_set, "wva-lint", "wva-lint-extra", control_plane))
    result = helm(control_plane, tmp_path / "helm", "lint", "--strict", str(CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout + result.stderr
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout, result.stdout


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_template_is_accepted_by_a_server_side_dry_run(
    api: k8s.ApiClient, control_plane: ControlPlane, namespace: str, tmp_path: Path,
    third_party_crds: list[str], value_set: str,
) -> None:
    extra = f"{namespace}-extra"[:63]
    ensure_namespace(api, extra)
    try:
        values = write_values(tmp_path, values_for(value_set, namespace, extra, control_plane))
        release = f"dry-{value_set}"
        rendered = helm(control_plane, tmp_path / "helm", "template", release, str(CHART), "-n", namespace,
                        "--include-crds", "-f", str(values)).stdout
        objects = documents(rendered)
        assert objects and any(o["kind"] == "CustomResourceDefinition" for o in objects)
        if value_set == "all-features":
            kinds = {o["kind"] for o in objects}
            assert {"ServiceMonitor", "ScaledObject", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds, kinds
            assert {o["metadata"].get("namespace") for o in objects if o["kind"] == "Role"} == {namespace, extra}
        if value_set == "sharded":
            deployments = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Deployment")
            assert deployments == [f"{release}-workload-variant-autoscaler-controller-shard-{i}" for i in range(3)]

        result = kubectl(control_plane, "apply", "--server-side", "--dry-run=server", "--validate=strict",
                         "-f", "-", stdin=rendered)
        no_server_warnings(result)
        assert dry_run_names(result) == sorted(o["metadata"]["name"] for o in objects)
        # a dry run persists nothing
        leftovers = [ident(o) for o in objects if o["kind"] != "CustomResourceDefinition" and fetch(api, o)]
        assert not leftovers, leftovers
    finally:
        delete_namespace(api, extra)


def test_helm_install_status_and_uninstall(
    api: k8s.ApiClient, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = f"cp-{uuid.uuid4().hex[:8]}"  # ClusterRoles carry the release name: unique per run
    home = tmp_path / "helm"
    base_url = "http://prometheus.wva-test.svc:9090"
    settings = ["--set", "replicaCount=0", "--set", f"prometheus.baseURL={base_url}"]
    target = ["-n", namespace, "--kubeconfig", str(control_plane.admin_kubeconfig)]
    crd_before = fetch(api, VA_CRD)
    assert crd_before is not None

    try:
        # helm v4 server-side applies crds/ and leaves an existing identical CRD as it is: no --skip-crds
        helm(control_plane, home, "install", release, str(CHART), *target, *settings)
        status = yaml.safe_load(helm(control_plane, home, "status", release, *target, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed" and status["version"] == 1, status["info"]

        manifest = documents(helm(control_plane, home, "get", "manifest", release, *target).stdout)
        expected = documents(helm(control_plane, home, "template", release, str(CHART), "-n", namespace,
                                  *settings).stdout)
        assert sorted(map(ident, manifest), key=str) == sorted(map(ident, expected), key=str)
        kinds = {o["kind"] for o in manifest}
        assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap",
                "Service", "Deployment"} <= kinds, kinds

        chart_labels = {
            "app.kubernetes.io/instance": release,
            "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/name": CHART_META["name"],
            "app.kubernetes.io/version": str(CHART_META["appVersion"]),
            "helm.sh/chart": f"{CHART_META['name']}-{CHART_META['version']}",
        }
        for obj in manifest:
            live = fetch(api, obj)
            assert live is not None, f"{ident(obj)} is not in the cluster"
            labels = live["metadata"].get("labels") or {}
            assert obj["metadata"]["labels"].items() <= labels.items(), (ident(obj), labels)
            assert chart_labels.items() <= labels.items(), (ident(obj), labels)
        # the instance label finds exactly the release's objects, cluster-scoped ones included
        for kind in sorted(kinds):
            sample = next(o for o in manifest if o["kind"] == kind)
            res = resource(api, sample)
            listed = res.get(label_selector=f"app.kubernetes.io/instance={release}",
                             namespace=namespace if res.namespaced else None).to_dict()["items"]
            assert sorted(i["metadata"]["name"] for i in listed) == sorted(
                o["metadata"]["name"] for o in manifest if o["kind"] == kind), kind

        deployment = next(o for o in manifest if o["kind"] == "Deployment")
        live_deployment = fetch(api, deployment)
        assert live_deployment is not None and live_deployment["spec"]["replicas"] == 0
        env = {e["name"]: e.get("value") for e in live_deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["PROMETHEUS_BASE_URL"] == base_url
        assert not k8s.CoreV1Api(api).list_namespaced_pod(namespace).items, "replicaCount=0 started pods"

        crd_after = fetch(api, VA_CRD)
        assert crd_after is not None and crd_established(api, VA_CRD["metadata"]["name"])
        assert crd_after["spec"] == crd_before["spec"], "helm install changed the existing CRD"
    finally:
        uninstall = helm(control_plane, home, "uninstall", release, *target, check=False)
    assert uninstall.returncode == 0, uninstall.stderr

    wait_until(lambda: not [ident(o) for o in manifest if fetch(api, o) is not None], 60,
               "every object of the release removed")
    gone = helm(control_plane, home, "status", release, *target, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr, gone.stderr
    assert not k8s.CoreV1Api(api).list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    assert crd_established(api, VA_CRD["metadata"]["name"]), "helm uninstall removed the CRD from crds/"


# --- kustomize --------------------------------------------------------------------------------------
def kustomize(plane: ControlPlane, directory: Path) -> list[dict[str, Any]]:
    return documents(kubectl(plane, "kustomize", str(directory)).stdout)


def label_pairs(kustomization: Path) -> dict[str, str]:
    config = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
    return {k: v for entry in config.get("labels", []) for k, v in entry.get("pairs", {}).items()}


_created_namespaces: set[str] = set()


@pytest.fixture()
def kustomize_namespaces(api: k8s.ApiClient, control_plane: ControlPlane, kustomize_cleanup: None) -> set[str]:
    """The namespaces the manifests use exist, so that their objects can be dry-run (a dry run creates none)."""
    wanted: set[str] = set()
    for directory in KUSTOMIZATIONS:
        for obj in kustomize(control_plane, directory):
            if obj["kind"] == "Namespace":
                wanted.add(obj["metadata"]["name"])
            if obj["metadata"].get("namespace"):
                wanted.add(obj["metadata"]["namespace"])
    core = k8s.CoreV1Api(api)
    for name in sorted(wanted):
        try:
            core.read_namespace(name)
        except ApiException as exc:
            assert exc.status == 404, exc
            ensure_namespace(api, name)
            _created_namespaces.add(name)
    return wanted


@pytest.fixture(scope="module")
def kustomize_cleanup(api: k8s.ApiClient) -> Iterator[None]:
    yield
    for name in sorted(_created_namespaces):
        delete_namespace(api, name)
    wait_until(lambda: not any(_namespace_exists(api, n) for n in _created_namespaces), 90, "namespaces deleted")
    _created_namespaces.clear()


def _namespace_exists(api: k8s.ApiClient, name: str) -> bool:
    try:
        k8s.CoreV1Api(api).read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=[str(d.relative_to(DEPLOY)) for d in KUSTOMIZATIONS])
def test_kustomization_renders(control_plane: ControlPlane, directory: Path) -> None:
    objects = kustomize(control_plane, directory)
    assert objects, f"{directory} renders nothing"
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "CustomResourceDefinition"} <= kinds, kinds
    assert len({ident(o) for o in objects}) == len(objects), "an object is rendered twice"
    crd = next(o for o in objects if o["kind"] == "CustomResourceDefinition")
    assert crd["spec"] == VA_CRD["spec"], "the kustomize CRD differs from crds/ (run deploy/sync-crds.sh)"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=[str(d.relative_to(DEPLOY)) for d in KUSTOMIZATIONS])
def test_kustomization_is_accepted_by_a_server_side_dry_run(
    api: k8s.ApiClient, control_plane: ControlPlane, third_party_crds: list[str], kustomize_namespaces: set[str],
    directory: Path,
) -> None:
    objects = kustomize(control_plane, directory)
    result = kubectl(control_plane, "apply", "-k", str(directory), "--server-side", "--dry-run=server",
                     "--validate=strict")
    no_server_warnings(result)
    assert dry_run_names(result) == sorted(o["metadata"]["name"] for o in objects)
    persisted = [ident(o) for o in objects
                 if o["kind"] not in ("CustomResourceDefinition", "Namespace") and fetch(api, o) is not None]
    assert not persisted, f"a dry run left objects behind: {persisted}"


def test_base_applies_for_real_and_deletes(api: k8s.ApiClient, control_plane: ControlPlane, tmp_path: Path) -> None:
    """deploy/base through ``kubectl apply -k``, with its Deployment scaled to 0 by a one-line overlay: its
    pods would otherwise land on the test nodes, whose agent runs only ``wva`` commands."""
    base = DEPLOY / "base"
    rendered = kustomize(control_plane, base)
    deployments = [o["metadata"]["name"] for o in rendered if o["kind"] == "Deployment"]
    overlay = tmp_path / "base-scaled-to-zero"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(base, overlay)],
        "replicas": [{"name": name, "count": 0} for name in deployments],
    }))
    objects = kustomize(control_plane, overlay)
    for obj in objects:  # the overlay changes the replicas and nothing else
        if obj["kind"] == "Deployment":
            assert obj["spec"].pop("replicas") == 0
    for obj in rendered:
        if obj["kind"] == "Deployment":
            obj["spec"].pop("replicas", None)
    assert objects == rendered

    # the shared VA CRD is applied (unchanged) but never deleted: other tests' VAs live in it
    component = "app.kubernetes.io/component"
    keep = f"{component}!={VA_CRD['metadata']['labels'][component]}"
    owned = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    try:
        result = kubectl(control_plane, "apply", "-k", str(overlay), "--server-side")
        no_server_warnings(result)
        labels = label_pairs(base)
        for obj in objects:
            live = fetch(api, obj)
            assert live is not None, f"{ident(obj)} was not created"
            assert labels.items() <= (live["metadata"].get("labels") or {}).items(), ident(obj)
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in names, binding["metadata"]["name"]
        for deployment in (o for o in objects if o["kind"] == "Deployment"):
            live = fetch(api, deployment)
            assert live is not None and live["spec"]["replicas"] == 0
            account = live["spec"]["template"]["spec"]["serviceAccountName"]
            assert ("ServiceAccount", account) in names, account
    finally:
        deleted = kubectl(control_plane, "delete", "-k", str(overlay), "-l", keep, "--ignore-not-found",
                          "--timeout=90s", check=False, timeout=150)
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: not [ident(o) for o in owned if _exists(api, o)], 90, "every deploy/base object deleted")
    assert crd_established(api, VA_CRD["metadata"]["name"]), "kubectl delete -k removed the shared CRD"


def _exists(api: k8s.ApiClient, obj: dict[str, Any]) -> bool:
    """Present in any state, terminating included."""
    try:
        resource(api, obj).get(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))
    except NotFoundError:
        return False
    return True
