"""The kustomize base and overlays render with ``kubectl kustomize`` and every object is valid.

The module also holds the manifest checks the Helm chart tests reuse (``validate_objects``,
``rbac_problems``): built-in kinds go through ``kubernetes_validate --strict`` for every supported
Kubernetes minor; Prometheus-Operator and KEDA kinds, which it has no schema for, get a small
structural schema here; the CRD's own custom resources go through the CRD schema.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from binaries import require_kubectl
from wva import rbac

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBE_VERSIONS = ("1.30", "1.31", "1.32", "1.33")
KUSTOMIZATIONS = ("base", "overlays/kind", "overlays/openshift")
SERVICE_ACCOUNT = ("wva-system", "wva-controller")

# Minimal structural schemas for the third-party kinds kubernetes_validate does not know.
_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1},
    },
    "required": ["matchLabels"],
}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_KEY_SELECTOR = {
    "type": "object",
    "required": ["name", "key"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}},
}
THIRD_PARTY_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string", "minLength": 1},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                                # the Prometheus Operator's own field names (monitoring.coreos.com/v1 Endpoint)
                                "bearerTokenFile": {"type": "string", "pattern": "^/"},
                                "authorization": {
                                    "type": "object",
                                    "required": ["credentials"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "type": {"type": "string"},
                                        "credentials": _KEY_SELECTOR,
                                    },
                                },
                                "tlsConfig": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "ca": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {"secret": _KEY_SELECTOR, "configMap": _KEY_SELECTOR},
                                        },
                                        "serverName": {"type": "string", "minLength": 1},
                                        "insecureSkipVerify": {"type": "boolean"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"const": "apps/v1"},
                            "kind": {"const": "Deployment"},
                            "name": {"type": "string", "minLength": 1},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"const": "prometheus"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string", "minLength": 1}},
                                },
                                "metadata": {
                                    "type": "object",
                                    "required": ["serverAddress", "query", "threshold"],
                                    # KEDA trigger metadata values are all strings.
                                    "additionalProperties": {"type": "string"},
                                    "properties": {
                                        "serverAddress": {"type": "string", "pattern": "^https?://"},
                                        "threshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def load_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def render_kustomization(rel: str) -> tuple[dict[str, Any], ...]:
    kubectl = require_kubectl()
    proc = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / rel)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {rel} failed:\n{proc.stderr}"
    return tuple(load_documents(proc.stdout))


def validate_objects(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every problem found in ``objects``, as ``"<Kind>/<name> [version]: message"``."""
    problems: list[str] = []
    for obj in objects:
        api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        ident = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
        if (api, kind) in THIRD_PARTY_SCHEMAS:
            validator = jsonschema.Draft7Validator(THIRD_PARTY_SCHEMAS[(api, kind)])
            problems += [
                f"{ident}: {e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(obj)
            ]
            continue
        if api.startswith("llmd.ai/"):
            import crd_tools

            problems += [f"{ident}: {p}" for p in crd_tools.validate_cr(dict(obj))]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(dict(obj), version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{ident}: no schema for {api} {kind} in Kubernetes {version}")
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{ident} [{version}]: {exc.message} at {list(exc.path)}")
    return problems


def by_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(deployment: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def _rule_key(rule: rbac.PermissionRule) -> tuple[str, str]:
    return (rule.api_group, rule.resource)


def rbac_problems(
    objects: Sequence[Mapping[str, Any]],
    *,
    own_namespace: str,
    actuation_mode: str = "hpa",
    watch_namespaces: Sequence[str] = (),
    subject: tuple[str, str],
    external_cluster_roles: Sequence[str] = (),
    secure_metrics: bool = True,
) -> list[str]:
    """Least-privilege check of rendered RBAC against :data:`wva.rbac.RULES`.

    Every required rule must be granted where the operator needs it, and nothing may be granted
    beyond the declared rules: no wildcard, no Secret, no verb or resource outside the list,
    ConfigMaps and Leases only in the operator's namespace, nothing cluster-wide in
    namespace-scoped mode except kopf's own needs. The only non-resource URLs are the metrics
    reader's (``get`` on :data:`wva.rbac.METRICS_READER_PATHS`, in a ClusterRole of their own), and
    wva's own ServiceAccount is not bound to them. ``external_cluster_roles`` names bindings to
    roles defined elsewhere that a deployment variant deliberately adds.
    """
    required = rbac.required_rules(actuation_mode, secure_metrics)
    problems = rbac.missing_permissions(
        required, objects, own_namespace=own_namespace, watch_namespaces=watch_namespaces, subject=subject
    )
    allowed = {_rule_key(r): set(r.verbs) for r in required}
    # Events are also allowed in the operator's own namespace (configuration error events).
    own_ns_allowed = {_rule_key(r) for r in required if r.scope == "namespace"} | {
        ("", "events"),
        ("events.k8s.io", "events"),
    }
    cluster_ok = {
        _rule_key(r) for r in required if r.scope == "cluster" and not (r.watched and watch_namespaces)
    }
    watched = {_rule_key(r) for r in required if r.watched}
    role_names = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in objects
        if o.get("kind") in ("Role", "ClusterRole")
    }
    url_roles = {
        o["metadata"]["name"] for o in objects
        if o.get("kind") == "ClusterRole" and any("nonResourceURLs" in r for r in o.get("rules") or [])
    }
    for obj in objects:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = obj["roleRef"]
            key = (ref["kind"], None if ref["kind"] == "ClusterRole" else meta.get("namespace"), ref["name"])
            if key not in role_names and ref["name"] not in external_cluster_roles:
                problems.append(f"{kind}/{meta['name']} binds undeclared {ref['kind']}/{ref['name']}")
            if ref["name"] in url_roles and rbac._subject_matches(obj, subject):
                problems.append(f"{kind}/{meta['name']} binds the metrics reader to wva's own ServiceAccount")
            continue
        if kind not in ("Role", "ClusterRole"):
            continue
        ns = meta.get("namespace")
        for rule in obj.get("rules") or []:
            if "nonResourceURLs" in rule:
                reader = (
                    kind == "ClusterRole" and not rule.get("apiGroups") and not rule.get("resources")
                    and rule.get("verbs") == ["get"]
                    and set(rule["nonResourceURLs"]) <= set(rbac.METRICS_READER_PATHS)
                )
                if not reader:
                    problems.append(f"{kind}/{meta['name']} grants nonResourceURLs {rule['nonResourceURLs']} "
                                    f"{rule.get('verbs')} beyond the metrics reader's")
                continue
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in (rule.get(field) or []):
                    problems.append(f"{kind}/{meta['name']} has a wildcard in {field}")
            for group in rule.get("apiGroups") or []:
                for res in rule.get("resources") or []:
                    key = (group, res)
                    if res == "secrets":
                        problems.append(f"{kind}/{meta['name']} grants secrets")
                    if key not in allowed:
                        problems.append(f"{kind}/{meta['name']} grants undeclared {group or 'core'}/{res}")
                        continue
                    extra = set(rule.get("verbs") or []) - allowed[key]
                    if extra:
                        problems.append(f"{kind}/{meta['name']} grants extra verbs {sorted(extra)} on {res}")
                    if kind == "ClusterRole" and key not in cluster_ok:
                        problems.append(
                            f"ClusterRole/{meta['name']} grants {group or 'core'}/{res} cluster-wide"
                        )
                    if kind == "Role":
                        ok = (ns == own_namespace and key in own_ns_allowed) or (
                            ns in watch_namespaces and key in watched
                        )
                        if not ok:
                            problems.append(f"Role/{meta['name']} in {ns} grants {group or 'core'}/{res}")
    return problems


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kustomization_renders_valid_objects(rel: str) -> None:
    objects = render_kustomization(rel)
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "Deployment", "ConfigMap", "Service", "ServiceAccount"} <= kinds
    assert validate_objects(objects) == []
    for obj in objects:
        if obj["kind"] not in ("CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace") == "wva-system", f"{obj['kind']} not namespaced"


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kustomization_rbac_is_least_privilege(rel: str) -> None:
    objects = render_kustomization(rel)
    external = ("cluster-monitoring-view",) if rel == "overlays/openshift" else ()
    assert (
        rbac_problems(
            objects, own_namespace="wva-system", subject=SERVICE_ACCOUNT, external_cluster_roles=external
        )
        == []
    )


def test_rbac_checker_catches_a_broadened_role() -> None:
    """The least-privilege check must fail when a manifest grants more than wva.rbac declares."""
    objects = [dict(o) for o in render_kustomization("base")]
    manager = next(
        o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "wva-manager"
    )
    manager["rules"] = [*manager["rules"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    problems = rbac_problems(objects, own_namespace="wva-system", subject=SERVICE_ACCOUNT)
    assert any("secrets" in p for p in problems)
    # a metrics reader that reads more than the metrics port, or that wva itself is bound to
    objects = [dict(o) for o in render_kustomization("base")]
    reader = next(o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "wva-metrics-reader")
    reader["rules"] = [{"nonResourceURLs": ["/metrics", "/*"], "verbs": ["get"]}]
    assert any("beyond the metrics reader's" in p for p in rbac_problems(objects, own_namespace="wva-system",
                                                                         subject=SERVICE_ACCOUNT))
    objects = [dict(o) for o in render_kustomization("base")]
    reader_binding = next(o for o in objects
                          if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"] == "wva-metrics-reader")
    reader_binding["subjects"] = [{"kind": "ServiceAccount", "name": "wva-controller", "namespace": "wva-system"}]
    problems = rbac_problems(objects, own_namespace="wva-system", subject=SERVICE_ACCOUNT)
    assert any("metrics reader to wva's own ServiceAccount" in p for p in problems)
    # without the review permissions a secure metrics port cannot authenticate anyone
    objects = [o for o in render_kustomization("base") if o["metadata"]["name"] != "wva-metrics-auth"]
    problems = rbac_problems(objects, own_namespace="wva-system", subject=SERVICE_ACCOUNT)
    assert any("tokenreviews create" in p for p in problems) and any("subjectaccessreviews" in p for p in problems)
    assert rbac_problems(objects, own_namespace="wva-system", subject=SERVICE_ACCOUNT, secure_metrics=False) == []
    cm_role = next(o for o in objects if o["kind"] == "Role")
    cm_role["metadata"] = {**cm_role["metadata"], "namespace": "elsewhere"}
    problems = rbac_problems(objects, own_namespace="wva-system", subject=SERVICE_ACCOUNT)
    assert any("configmaps get in wva-system" in p for p in problems)


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_operator_deployment_contract(rel: str) -> None:
    deployment = one(render_kustomization(rel), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert container["args"][0] == "run"
    assert "--metrics-port=8443" in container["args"] and "--probe-port=8081" in container["args"]
    assert "--metrics-secure=true" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
    env = env_of(deployment)
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["LEADER_ELECTION"]["value"] == "true"
    # The ConfigMaps the Deployment names are part of the same bundle.
    cm_names = {o["metadata"]["name"] for o in by_kind(render_kustomization(rel), "ConfigMap")}
    assert env["CONFIG_MAP_NAME"]["value"] in cm_names
    assert env["SATURATION_CONFIG_MAP_NAME"]["value"] in cm_names
    if rel == "overlays/openshift":
        # The restricted SCC assigns the uid; a fixed one would be rejected.
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod["securityContext"])
        assert env["PROMETHEUS_BASE_URL"]["value"].startswith("https://thanos-querier.")
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert str(Path(env["PROMETHEUS_CA_CERT_PATH"]["value"]).parent) in mounts
    else:
        assert pod["securityContext"]["runAsUser"] == 65532
    if rel == "overlays/kind":
        assert container["image"] == "wva:dev"
        assert container["imagePullPolicy"] in ("Never", "IfNotPresent")


REVIEWS = (("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews"))
# who scrapes wva in each kustomization: the account bound to ClusterRole wva-metrics-reader
SCRAPERS = {
    "base": ("monitoring", "kube-prometheus-stack-prometheus"),
    "overlays/kind": ("monitoring", "kube-prometheus-stack-prometheus"),
    "overlays/openshift": ("wva-system", "wva-metrics-reader"),
}


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_the_scraper_may_read_the_metrics_port_and_wva_may_review_it(rel: str) -> None:
    objects = render_kustomization(rel)
    scraper = SCRAPERS[rel]
    for path in ("/metrics", "/debug/decisions", "/debug/decisions/llm/llama-8b"):
        assert rbac.is_allowed_path(path, "get", objects, subject=scraper), path
        assert not rbac.is_allowed_path(path, "get", objects, subject=SERVICE_ACCOUNT), path
    assert not rbac.is_allowed_path("/metrics", "post", objects, subject=scraper)
    assert not rbac.is_allowed_path("/debug/other", "get", objects, subject=scraper)
    assert not rbac.is_allowed_path("/api/v1/secrets", "get", objects, subject=scraper)
    for group, resource in REVIEWS:
        assert rbac.is_allowed(group, resource, "", "create", None, objects, subject=SERVICE_ACCOUNT)
        assert not rbac.is_allowed(group, resource, "", "create", None, objects, subject=scraper)


@pytest.mark.parametrize("rel", ["overlays/kind", "overlays/openshift"])
def test_service_monitor_scrapes_the_https_port_with_a_token(rel: str) -> None:
    objects = render_kustomization(rel)
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    service_ports = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert endpoint["port"] == "https-metrics" and endpoint["scheme"] == "https"
    assert service_ports["https-metrics"]["targetPort"] in {p["name"] for p in container["ports"]}
    if rel == "overlays/kind":
        # Prometheus' own token, bound in deploy/base; the self-signed certificate cannot be verified
        assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
        assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
        return
    # OpenShift: a token Secret of the bound reader account, and the service CA verifies the certificate
    secret = next(o for o in by_kind(objects, "Secret")
                  if o["metadata"]["name"] == endpoint["authorization"]["credentials"]["name"])
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == SCRAPERS[rel][1]
    assert "bearerTokenFile" not in endpoint  # user-workload monitoring refuses it
    service = one(objects, "Service")
    cert_secret = service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["metrics-cert"]["secret"]["secretName"] == cert_secret
    assert endpoint["tlsConfig"]["serverName"] == f"{service['metadata']['name']}.wva-system.svc"
    assert endpoint["tlsConfig"]["ca"]["configMap"]["name"] == "wva-prometheus-ca"


def test_saturation_configmap_default_entry() -> None:
    cm = next(
        o for o in render_kustomization("base") if o["metadata"]["name"] == "wva-saturation-scaling-config"
    )
    assert yaml.safe_load(cm["data"]["default"]) == {
        "kvCacheThreshold": 0.8,
        "queueLengthThreshold": 5,
        "kvSpareTrigger": 0.1,
        "queueSpareTrigger": 3,
    }


def test_base_crd_is_the_single_source_copy() -> None:
    source = REPO / "crds" / "llmd.ai_variantautoscalings.yaml"
    copy = DEPLOY / "base" / "crds" / source.name
    assert copy.read_bytes() == source.read_bytes(), "run `make sync-crds`"


def test_sync_crds_check_mode_reports_no_drift() -> None:
    proc = subprocess.run(
        ["bash", str(DEPLOY / "sync-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_sync_crds_detects_and_repairs_drift(tmp_path: Path) -> None:
    """Against a scratch copy of the tree: drift is reported by --check and fixed by a plain run."""
    root = tmp_path / "repo"
    (root / "deploy").mkdir(parents=True)
    shutil.copy(DEPLOY / "sync-crds.sh", root / "deploy" / "sync-crds.sh")
    shutil.copytree(REPO / "crds", root / "crds")
    chart_crds = root / "charts" / "workload-variant-autoscaler" / "crds"
    chart_crds.mkdir(parents=True)
    (chart_crds / "llmd.ai_variantautoscalings.yaml").write_text("stale: true\n")
    (chart_crds / "removed.yaml").write_text("old: true\n")
    script = str(root / "deploy" / "sync-crds.sh")

    check = subprocess.run(
        ["bash", script, "--check"], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 1
    assert "differs" in check.stderr and "removed.yaml" in check.stderr

    subprocess.run(["bash", script], capture_output=True, text=True, timeout=30, check=True)
    for copy_dir in (chart_crds, root / "deploy" / "base" / "crds"):
        names = sorted(p.name for p in copy_dir.iterdir())
        assert names == sorted(p.name for p in (REPO / "crds").iterdir())
        for name in names:
            assert (copy_dir / name).read_bytes() == (REPO / "crds" / name).read_bytes()
    again = subprocess.run(
        ["bash", script, "--check"], capture_output=True, text=True, timeout=30, check=False
    )
    assert again.returncode == 0


EXAMPLES = ("hpa.yaml", "keda-scaledobject.yaml", "vllm-emulator.yaml")


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_are_valid(name: str) -> None:
    objects = load_documents((DEPLOY / "examples" / name).read_text())
    assert objects
    assert validate_objects(objects) == []


def test_example_hpa_and_keda_read_the_same_variant() -> None:
    hpa = one(load_documents((DEPLOY / "examples" / "hpa.yaml").read_text()), "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["external"]
    assert metric["metric"]["name"] == "wva_desired_replicas"
    assert metric["target"] == {"type": "AverageValue", "averageValue": "1"}
    labels = metric["metric"]["selector"]["matchLabels"]
    keda = one(load_documents((DEPLOY / "examples" / "keda-scaledobject.yaml").read_text()), "ScaledObject")
    trigger = keda["spec"]["triggers"][0]
    assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "1"
    for key, value in labels.items():
        assert f'{key}="{value}"' in trigger["metadata"]["query"]
    assert keda["spec"]["scaleTargetRef"]["name"] == hpa["spec"]["scaleTargetRef"]["name"]


def test_prometheus_adapter_values_serve_the_hpa_metric() -> None:
    values = yaml.safe_load((DEPLOY / "examples" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["external"]
    assert rule["name"]["as"] == "wva_desired_replicas"
    assert rule["resources"]["overrides"]["exported_namespace"] == {"resource": "namespace"}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_emulator_example_runs_the_wva_image_as_emulator() -> None:
    deployment = one(load_documents((DEPLOY / "examples" / "vllm-emulator.yaml").read_text()), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "emulate"
    assert "--model" in container["args"] and "--port" in container["args"]


def test_validate_objects_reports_invalid_objects() -> None:
    """The validation helper itself must reject bad objects of every family it handles."""
    deployment = dict(one(render_kustomization("base"), "Deployment"))
    bad_deployment = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    bad_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": []},
    }
    bad_scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "s"},
        "spec": {
            "scaleTargetRef": {"name": "d"},
            "triggers": [{"type": "prometheus", "metadata": {"query": "x"}}],
        },
    }
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    problems = validate_objects([bad_deployment, bad_monitor, bad_scaled, unknown])
    assert any(p.startswith("Deployment/") and "replica" in p for p in problems)
    assert any(p.startswith("ServiceMonitor/m") for p in problems)
    assert any(p.startswith("ScaledObject/s") and "serverAddress" in p for p in problems)
    assert any(p.startswith("Gadget/g") and "no schema" in p for p in problems)
    assert validate_objects([deployment]) == []


def parse_operator_args(args: Sequence[str]) -> Any:
    """Parse container args with wva's real command-line parser (as `wva <args>` would)."""
    from wva import cli

    return cli._parser().parse_args(list(args))


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_container_args_are_accepted_by_the_cli(rel: str) -> None:
    container = one(render_kustomization(rel), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    parsed = parse_operator_args(container["args"])
    assert parsed.command == "run" and parsed.all_namespaces is True
    assert (parsed.metrics_port, parsed.probe_port, parsed.metrics_secure) == (8443, 8081, "true")
    assert parsed.metrics_cert_path == ("/etc/wva/metrics-cert" if rel == "overlays/openshift" else None)


def test_emulator_example_args_are_accepted_by_the_cli() -> None:
    deployment = one(load_documents((DEPLOY / "examples" / "vllm-emulator.yaml").read_text()), "Deployment")
    parsed = parse_operator_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (parsed.command, parsed.port, parsed.model) == ("emulate", 8000, "emulated/llama-8b")


def test_dockerfile_contract() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    base = next(ln for ln in lines if ln.startswith("ARG PYTHON_IMAGE="))
    # An exact, digest-free patch tag of the 3.11 slim bookworm image.
    assert base.split("=", 1)[1].startswith("python:3.11.") and base.endswith("-slim-bookworm")
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(stages) == 2, "multi-stage: build + runtime"
    build, runtime = lines[stages[0] : stages[1]], lines[stages[1] :]
    assert any("pip wheel" in ln for ln in build)
    assert not any("build-essential" in ln or "gcc" in ln for ln in runtime), "no build tools at runtime"
    assert "USER 65532:65532" in runtime
    assert 'ENTRYPOINT ["wva"]' in runtime and 'CMD ["run"]' in runtime
    assert not any(ln.startswith("HEALTHCHECK") for ln in lines)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!operator/" in ignore and "!pyproject.toml" in ignore


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_only_the_operator_pod_mounts_the_service_account_token(rel: str) -> None:
    objects = render_kustomization(rel)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    accounts = {a["metadata"]["name"]: a for a in by_kind(objects, "ServiceAccount")}
    # every account mounts nothing (OpenShift's also holds wva-metrics-reader, whose token only Prometheus uses)
    assert {name: a["automountServiceAccountToken"] for name, a in accounts.items()} == dict.fromkeys(accounts, False)
    assert pod["serviceAccountName"] in accounts
    assert pod["automountServiceAccountToken"] is True  # wva talks to the API server


def test_emulator_example_has_no_service_account_token() -> None:
    deployment = one(load_documents((DEPLOY / "examples" / "vllm-emulator.yaml").read_text()), "Deployment")
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
