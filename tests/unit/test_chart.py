"""The Helm chart, rendered for real with helm-python-sdk (the Helm Go SDK), under several value sets.

Every rendered object is validated (``kubernetes_validate --strict`` for Kubernetes 1.30-1.33,
structural schemas for ServiceMonitor/ScaledObject), RBAC is checked against ``wva.rbac``, and the
rendered Deployment environment is parsed by ``wva.settings.Settings`` exactly as the operator
would at startup.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from binaries import unavailable
from wva import settings as wva_settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "workload-variant-autoscaler"
RELEASE = "wva"
NAMESPACE = "wva-system"


def _load_manifest_checks() -> Any:
    """The shared manifest checks live in test_kustomize.py; load them by path (layout-independent)."""
    name = "wva_test_manifest_checks"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_kustomize.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checks = _load_manifest_checks()


@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except ImportError:
        unavailable("helm-python-sdk is not installed: pip install helm-python-sdk (or '.[test]')")
    return helm_python


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as c:
        yield c


class Rendered:
    """One rendering: the parsed objects and the NOTES text."""

    def __init__(self, manifests: Mapping[str, str]) -> None:
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for path, text in manifests.items():
            if path.endswith("NOTES.txt"):
                self.notes = text
            else:
                self.objects += checks.load_documents(text)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        return dict(checks.one(self.objects, kind))

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        return found


def render(chart: Any, values: dict[str, Any] | None = None) -> Rendered:
    return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE))


FULLNAME = f"{RELEASE}-workload-variant-autoscaler"
SA = (NAMESPACE, f"{FULLNAME}-controller")
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"namespaceScoped": True, "watchNamespaces": ["llm-a", "llm-b"]},
    "direct-keda": {
        "actuation": {"mode": "direct"},
        "hpa": {"enabled": False},
        "keda": {"enabled": True, "triggerAuthenticationName": "prom-auth"},
        "scaleTarget": {"namespace": "llm", "deploymentName": "vllm-llama", "variantName": "vllm-llama-va"},
        "prometheus": {"tls": {"ca": {"secretName": "prom-ca"}}, "bearerToken": {"secretName": "prom-token"}},
    },
    "instance-monitor-overrides": {
        "controllerInstance": "ci-1",
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "hpa": {"enabled": True},
        "prometheusAdapter": {"rulesConfigMap": True},
        "scaleTarget": {"namespace": "llm", "deploymentName": "vllm-llama", "variantName": "vllm-llama-va"},
        "saturation": {
            "overrides": {
                "llama-8b": {"model_id": "meta/llama-3.1-8b", "namespace": "llm", "kvCacheThreshold": 0.7},
                "qwen": {"model_id": "Qwen/Qwen3-0.6B", "namespace": "llm", "queueLengthThreshold": 8},
            }
        },
        "prometheus": {
            "tls": {"ca": {"pem": PEM}, "clientCert": {"secretName": "prom-client"}},
            "bearerToken": {"serviceAccountToken": True},
            "serverName": "prometheus.monitoring",
        },
    },
    "hardened": {
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
        "extraEnv": [{"name": "METRICS_SOURCE", "value": "auto"}],
    },
    "plain-metrics": {
        "metrics": {"secure": False, "port": 8080},
        "service": {"port": 8080},
        "serviceMonitor": {"enabled": True},
    },
}
VALUE_SETS["instance-monitor-overrides"]["metrics"] = {"certSecretName": "wva-metrics-tls"}
# three shards: one Deployment each, every one with a standby on its own Lease
VALUE_SETS["sharded"] = {"sharding": {"shards": 3}, "collectorV2": True}
SHARDS = {"sharded": 3}
WATCH = {"namespaced": ("llm-a", "llm-b")}
MODES = {"direct-keda": "direct"}
PLAIN_METRICS = {"plain-metrics"}  # metrics.secure=false: plain HTTP on 8080, no review permissions


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, chart: Any) -> tuple[str, Rendered]:
    return request.param, render(chart, VALUE_SETS[request.param])


def test_chart_metadata(chart: Any) -> None:
    assert chart.name == "workload-variant-autoscaler"
    assert chart.version == "0.1.0"
    assert chart.metadata["appVersion"] == "0.1.0"


def test_helm_lint_is_clean(helm: Any) -> None:
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_rendered_object_is_valid(rendered: tuple[str, Rendered]) -> None:
    _, out = rendered
    assert out.objects
    assert checks.validate_objects(out.objects) == []


def test_rbac_covers_wva_rbac_and_nothing_more(rendered: tuple[str, Rendered]) -> None:
    name, out = rendered
    problems = checks.rbac_problems(
        out.objects,
        own_namespace=NAMESPACE,
        actuation_mode=MODES.get(name, "hpa"),
        watch_namespaces=WATCH.get(name, ()),
        subject=SA,
        secure_metrics=name not in PLAIN_METRICS,
    )
    assert problems == []


def test_scale_subresource_only_with_direct_actuation(rendered: tuple[str, Rendered]) -> None:
    name, out = rendered
    granted = [
        res
        for role in out.kind("ClusterRole") + out.kind("Role")
        for rule in role["rules"]
        for res in rule.get("resources", [])
    ]
    assert ("deployments/scale" in granted) == (name == "direct-keda")


def test_namespaced_mode_uses_roles_in_watched_namespaces(chart: Any) -> None:
    out = render(chart, VALUE_SETS["namespaced"])
    from wva import rbac

    # Nothing about VAs, Deployments or Pods is granted cluster-wide ...
    for request in [
        ("llmd.ai", "variantautoscalings", "", "list"),
        ("apps", "deployments", "", "watch"),
        ("", "pods", "", "list"),
    ]:
        assert not rbac.is_allowed(*request, None, out.objects, subject=SA)
        assert rbac.is_allowed(*request, "llm-a", out.objects, subject=SA)
        assert not rbac.is_allowed(*request, "kube-system", out.objects, subject=SA)
    deployment = out.one("Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=llm-a" in args and "--namespace=llm-b" in args and "--all-namespaces" not in args
    assert checks.env_of(deployment)["WATCH_NAMESPACE"]["value"] == "llm-a,llm-b"


def test_namespace_scoped_without_list_watches_the_release_namespace(chart: Any) -> None:
    out = render(chart, {"namespaceScoped": True})
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in out.kind("Role")}
    assert (NAMESPACE, f"{FULLNAME}-manager") in roles
    assert checks.env_of(out.one("Deployment"))["WATCH_NAMESPACE"]["value"] == NAMESPACE
    assert (
        checks.rbac_problems(out.objects, own_namespace=NAMESPACE, watch_namespaces=(NAMESPACE,), subject=SA)
        == []
    )


def test_default_deployment_contract(chart: Any) -> None:
    out = render(chart)
    deployment = out.one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == "ghcr.io/llm-d-incubation/wva:0.1.0"
    assert container["args"][:2] == ["run", "--all-namespaces"]
    assert pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https-metrics": 8443, "probes": 8081}
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    env = checks.env_of(deployment)
    assert env["ACTUATION_MODE"]["value"] == "hpa"
    assert env["LEADER_ELECTION"]["value"] == "true"
    assert env["PROMETHEUS_TLS_INSECURE_SKIP_VERIFY"]["value"] == "false"
    assert "CONTROLLER_INSTANCE" not in env
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The metrics Service reaches these pods on the metrics port.
    service = out.one("Service")
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    assert service["spec"]["ports"][0] == {"name": "https-metrics", "port": 8443, "targetPort": "https-metrics",
                                           "protocol": "TCP"}
    assert "--metrics-secure=true" in container["args"]
    assert out.kind("ServiceMonitor") == [] and out.kind("HorizontalPodAutoscaler") == []


def pod_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def _settings_env(
    objects: list[dict[str, Any]], tmp_path: Path, deployment: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The container environment as the kubelet would build it; mounted files become temp files.
    ``deployment``: which one (a sharded install has one per shard); default the only one."""
    deployment = deployment or checks.one(objects, "Deployment")
    cms = {c["metadata"]["name"]: c["data"] for c in checks.by_kind(objects, "ConfigMap")}
    mounts = {
        m["name"]: m["mountPath"]
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    env: dict[str, str] = {}
    for name, var in checks.env_of(deployment).items():
        if "value" in var:
            env[name] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            env[name] = {"metadata.namespace": NAMESPACE, "metadata.name": "wva-abc-123"}[
                var["valueFrom"]["fieldRef"]["fieldPath"]
            ]
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[name] = cms[ref["name"]][ref["key"]]
        if name.endswith("_PATH") and not env[name].startswith("/var/run/secrets/"):
            assert str(Path(env[name]).parent) in mounts.values(), f"{name} points outside every mount"
            local = tmp_path / name
            local.write_text("x")
            env[name] = str(local)
        elif name.endswith("_PATH"):
            local = tmp_path / name
            local.write_text("token")
            env[name] = str(local)
    return env


def test_rendered_environment_is_accepted_by_settings(rendered: tuple[str, Rendered], tmp_path: Path) -> None:
    name, out = rendered
    deployments = out.kind("Deployment")
    assert len(deployments) == SHARDS.get(name, 1)
    for deployment in deployments:
        env = _settings_env(out.objects, tmp_path, deployment)
        s = wva_settings.Settings.from_env(env)
        assert s.pod_namespace == NAMESPACE
        assert s.config_map_name == f"{FULLNAME}-variantautoscaling-config"
        assert s.saturation_config_map_name == f"{FULLNAME}-saturation-scaling-config"
        assert s.global_opt_interval == 30.0
        assert tuple(s.watch_namespaces) == WATCH.get(name, ())
        assert str(s.actuation_mode) == MODES.get(name, "hpa")
        expected_instance = "ci-1" if name == "instance-monitor-overrides" else None
        assert (s.controller_instance or None) == expected_instance


def test_rendered_args_are_accepted_by_the_cli(rendered: tuple[str, Rendered], tmp_path: Path) -> None:
    name, out = rendered
    shards = []
    for deployment in out.kind("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        parsed = checks.parse_operator_args(container["args"])
        assert parsed.command == "run"
        assert list(parsed.namespace) == list(WATCH.get(name, ()))
        assert parsed.all_namespaces is (name not in WATCH)
        metrics_port = 8080 if name in PLAIN_METRICS else 8443
        assert (parsed.metrics_port, parsed.probe_port, parsed.log_level) == (metrics_port, 8081, "info")
        assert wva_settings.metrics_secure_flag(parsed.metrics_secure) is (name not in PLAIN_METRICS)
        # the shard flags over the container's environment, as `wva run` applies them
        settings = wva_settings.Settings.from_env(_settings_env(out.objects, tmp_path, deployment))
        settings = wva_settings.with_shard_flags(settings, parsed.shards, parsed.shard_index)
        shards.append((settings.shards, settings.shard_index))
    count = SHARDS.get(name, 1)
    assert sorted(shards) == [(count, i) for i in range(count)]


# What a deployment decides for itself (its names, where its Prometheus is), not a default to agree on.
DEPLOYMENT_IDENTITY = {
    "pod_namespace", "pod_name", "config_map_name", "saturation_config_map_name", "prometheus_base_url",
}


def _effective_defaults(objects: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Every setting a rendered install runs with, read through wva's own parsers."""
    from wva.collector.legacy.config import load_cache_config
    from wva.saturation.config import parse_saturation_config_data

    settings = wva_settings.Settings.from_env(_settings_env(objects, tmp_path))
    container = checks.one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = checks.parse_operator_args(container["args"])
    cms = {c["metadata"]["name"]: c["data"] for c in checks.by_kind(objects, "ConfigMap")}
    cache, warnings = load_cache_config(cms[settings.config_map_name])
    assert warnings == []
    saturation = parse_saturation_config_data(cms[settings.saturation_config_map_name])
    assert saturation.errors == {}
    return {
        "settings": settings.model_dump(exclude=DEPLOYMENT_IDENTITY),
        "metrics_port": args.metrics_port,
        "probe_port": args.probe_port,
        "log_level": (args.log_level or settings.log_level).upper(),
        "cache": cache,
        "saturation_default": saturation.default,
    }


def _code_defaults() -> dict[str, Any]:
    from wva import cli
    from wva.collector.legacy.config import CacheConfig
    from wva.saturation.config import BUILTIN_DEFAULT

    settings = wva_settings.Settings.from_env({})
    args = cli._parser().parse_args(["run"])
    return {
        "settings": settings.model_dump(exclude=DEPLOYMENT_IDENTITY),
        "metrics_port": args.metrics_port,
        "probe_port": args.probe_port,
        "log_level": settings.log_level.upper(),
        "cache": CacheConfig(),
        "saturation_default": BUILTIN_DEFAULT,
    }


@pytest.mark.parametrize("install", ["chart", "kustomize"])
def test_shipped_defaults_are_the_codes_own(install: str, chart: Any, tmp_path: Path) -> None:
    """The chart's default values and deploy/base configure exactly what wva does with nothing set
    (docs/configuration.md, "One set of defaults"): collector, intervals, ports, cache, thresholds."""
    objects = render(chart).objects if install == "chart" else list(checks.render_kustomization("base"))
    shipped, code = _effective_defaults(objects, tmp_path), _code_defaults()
    differ = {
        f"{part}.{key}" if isinstance(code[part], dict) else part: (shipped_value, code_value)
        for part in code
        for key, shipped_value, code_value in (
            [(k, shipped[part].get(k), v) for k, v in code[part].items()] if isinstance(code[part], dict)
            else [("", shipped[part], code[part])]
        )
        if shipped_value != code_value
    }
    assert differ == {}, f"{install} defaults (left) differ from the code's (right): {differ}"


def test_shipped_defaults_comparison_sees_a_difference(chart: Any, tmp_path: Path) -> None:
    """The comparison above can fail: a chart value that departs from the code shows up in it."""
    objects = render(chart, {"collectorV2": True, "prometheus": {"metricsCache": {"ttl": "45s"}}}).objects
    shipped, code = _effective_defaults(objects, tmp_path), _code_defaults()
    assert shipped["settings"]["collector_v2"] != code["settings"]["collector_v2"]
    assert shipped["cache"] != code["cache"]


def test_prometheus_credentials_are_mounted_files(chart: Any) -> None:
    out = render(chart, VALUE_SETS["direct-keda"])
    deployment = out.one("Deployment")
    env = checks.env_of(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert env["PROMETHEUS_CA_CERT_PATH"]["value"] == "/etc/wva/prometheus-ca/ca.crt"
    assert volumes["prometheus-ca"]["secret"]["secretName"] == "prom-ca"
    assert env["PROMETHEUS_TOKEN_PATH"]["value"] == "/etc/wva/prometheus-token/token"
    assert volumes["prometheus-token"]["secret"]["secretName"] == "prom-token"
    assert "PROMETHEUS_BEARER_TOKEN" not in env  # never a token in plain env

    out = render(chart, VALUE_SETS["instance-monitor-overrides"])
    deployment = out.one("Deployment")
    env = checks.env_of(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    ca_cm = out.named("ConfigMap", f"{FULLNAME}-prometheus-ca")
    assert ca_cm["data"]["ca.crt"].strip() == PEM.strip()
    assert volumes["prometheus-ca"]["configMap"]["name"] == ca_cm["metadata"]["name"]
    assert env["PROMETHEUS_TOKEN_PATH"]["value"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert env["PROMETHEUS_CLIENT_CERT_PATH"]["value"] == "/etc/wva/prometheus-client/tls.crt"
    assert volumes["prometheus-client"]["secret"]["secretName"] == "prom-client"
    assert env["PROMETHEUS_SERVER_NAME"]["value"] == "prometheus.monitoring"


def test_configmaps_carry_config_and_overrides(chart: Any) -> None:
    out = render(chart, VALUE_SETS["instance-monitor-overrides"] | {"globalOptInterval": "45s"})
    main = out.named("ConfigMap", f"{FULLNAME}-variantautoscaling-config")["data"]
    assert main["GLOBAL_OPT_INTERVAL"] == "45s"
    assert main["PROMETHEUS_METRICS_CACHE_ENABLED"] == "true"
    assert main["PROMETHEUS_METRICS_CACHE_TTL"] == "30s"
    sat = out.named("ConfigMap", f"{FULLNAME}-saturation-scaling-config")["data"]
    assert yaml.safe_load(sat["default"]) == {
        "kvCacheThreshold": 0.8,
        "queueLengthThreshold": 5,
        "kvSpareTrigger": 0.1,
        "queueSpareTrigger": 3,
    }
    # An override carries only what it overrides (the operator merges it over "default").
    assert yaml.safe_load(sat["llama-8b"]) == {
        "model_id": "meta/llama-3.1-8b",
        "namespace": "llm",
        "kvCacheThreshold": 0.7,
    }
    assert yaml.safe_load(sat["qwen"]) == {
        "model_id": "Qwen/Qwen3-0.6B",
        "namespace": "llm",
        "queueLengthThreshold": 8,
    }
    assert set(sat) == {"default", "llama-8b", "qwen"}


def test_hpa_selects_the_variant_series(chart: Any) -> None:
    out = render(chart, VALUE_SETS["instance-monitor-overrides"])
    hpa = out.one("HorizontalPodAutoscaler")
    assert hpa["metadata"]["namespace"] == "llm"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vllm-llama",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "wva_desired_replicas"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {
        "variant_name": "vllm-llama-va",
        "exported_namespace": "llm",
        "controller_instance": "ci-1",
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    monitor = out.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels(out.one("Deployment")).items()
    rules = yaml.safe_load(
        out.named("ConfigMap", f"{FULLNAME}-prometheus-adapter-rules")["data"]["config.yaml"]
    )
    (rule,) = rules["externalRules"]
    assert rule["name"]["as"] == "wva_desired_replicas"
    assert rule["resources"]["overrides"]["exported_namespace"] == {"resource": "namespace"}
    assert checks.env_of(out.one("Deployment"))["CONTROLLER_INSTANCE"]["value"] == "ci-1"


def test_hpa_selector_has_no_controller_instance_when_unset(chart: Any) -> None:
    values = {"hpa": {"enabled": True}, "scaleTarget": {"deploymentName": "d", "variantName": "v"}}
    hpa = render(chart, values).one("HorizontalPodAutoscaler")
    labels = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]
    assert labels == {"variant_name": "v", "exported_namespace": NAMESPACE}


def test_keda_scaledobject_queries_the_variant(chart: Any) -> None:
    out = render(chart, VALUE_SETS["direct-keda"] | {"controllerInstance": "ci-2"})
    so = out.one("ScaledObject")
    assert so["metadata"]["namespace"] == "llm"
    assert so["spec"]["scaleTargetRef"]["name"] == "vllm-llama"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "1"
    assert trigger["metadata"]["query"] == (
        'sum(wva_desired_replicas{controller_instance="ci-2",exported_namespace="llm",variant_name="vllm-llama-va"})'
    )
    assert trigger["authenticationRef"] == {"name": "prom-auth"}
    assert out.kind("HorizontalPodAutoscaler") == []
    assert "will fight" in out.notes  # direct actuation + KEDA on one Deployment is flagged


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"actuation": {"mode": "sometimes"}}, "actuation.mode"),
        ({"hpa": {"enabled": True}}, "scaleTarget.deploymentName"),
        ({"keda": {"enabled": True}, "scaleTarget": {"deploymentName": "d"}}, "scaleTarget.variantName"),
        ({"saturation": {"overrides": {"x": {"namespace": "n"}}}}, "model_id"),
        ({"saturation": {"overrides": {"default": {"model_id": "m", "namespace": "n"}}}}, "default"),
        ({"leaderElection": {"enabled": False}}, "leaderElection"),
    ],
)
def test_invalid_values_fail_with_a_clear_message(
    chart: Any, helm: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(chart, values)
    assert message in str(err.value)


# --- sharding: one Deployment per shard ---------------------------------------------------------------
SHARD_LABEL = "wva.llmd.ai/shard"


def test_one_shard_renders_the_unsharded_deployment(chart: Any) -> None:
    """sharding.shards: 1 (the default) renders exactly what the chart rendered before sharding existed."""
    default, explicit = render(chart), render(chart, {"sharding": {"shards": 1}})
    assert default.objects == explicit.objects and default.notes == explicit.notes
    deployment = default.one("Deployment")
    assert deployment["metadata"]["name"] == f"{FULLNAME}-controller"
    assert SHARD_LABEL not in pod_labels(deployment)
    assert SHARD_LABEL not in deployment["spec"]["selector"]["matchLabels"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--shard")]
    assert 'leader Lease "wva-leader"' in default.notes


def test_each_shard_gets_a_deployment_with_its_own_pods_flags_and_lease(chart: Any, tmp_path: Path) -> None:
    from wva.sharding import ShardAssignment

    out = render(chart, {"sharding": {"shards": 3}, "replicaCount": 2, "networkPolicy": {"enabled": True}})
    deployments = sorted(out.kind("Deployment"), key=lambda d: d["metadata"]["name"])
    assert [d["metadata"]["name"] for d in deployments] == [f"{FULLNAME}-controller-shard-{i}" for i in range(3)]
    service, policy = out.one("Service"), out.one("NetworkPolicy")
    leases = set()
    for index, deployment in enumerate(deployments):
        assert deployment["spec"]["replicas"] == 2  # a leader and a standby per shard
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = pod_labels(deployment)
        assert selector[SHARD_LABEL] == labels[SHARD_LABEL] == str(index)
        assert deployment["metadata"]["labels"][SHARD_LABEL] == str(index)
        # no other shard's Deployment selects these pods
        for other in deployments:
            if other is not deployment:
                assert not other["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # one metrics Service and one NetworkPolicy cover every shard's pods
        assert service["spec"]["selector"].items() <= labels.items()
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        # a shard's leader and standby are kept apart, not the shards from each other
        term = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["labelSelector"]["matchLabels"] == selector
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][-2:] == ["--shards=3", f"--shard-index={index}"]
        parsed = checks.parse_operator_args(container["args"])
        settings = wva_settings.with_shard_flags(
            wva_settings.Settings.from_env(_settings_env(out.objects, tmp_path, deployment)),
            parsed.shards, parsed.shard_index,
        )
        assert settings.leader_election
        leases.add(ShardAssignment(settings.shards, settings.shard_index).lease_name(settings.lease_name))
    assert leases == {"wva-leader-shard-0", "wva-leader-shard-1", "wva-leader-shard-2"}
    assert f"3 shards, each model group decided by one: Deployments {FULLNAME}-controller-shard-0 to -2" in out.notes
    assert checks.validate_objects(out.objects) == []


@pytest.mark.parametrize("shards", [0, -1, 1025, "many"])
def test_a_bad_shard_count_fails_with_a_clear_message(chart: Any, helm: Any, shards: Any) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(chart, {"sharding": {"shards": shards}})
    assert "sharding.shards must be from 1 to 1024" in str(err.value)


def test_single_replica_without_leader_election_renders(chart: Any) -> None:
    out = render(chart, {"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert checks.env_of(out.one("Deployment"))["LEADER_ELECTION"]["value"] == "false"


def test_openshift_style_security_context(chart: Any) -> None:
    values = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
    out = render(chart, values)
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod["securityContext"])
    assert checks.validate_objects(out.objects) == []


def test_chart_crd_equals_the_single_source() -> None:
    source = REPO / "crds" / "llmd.ai_variantautoscalings.yaml"
    copy = CHART / "crds" / source.name
    assert copy.exists(), "the chart has no CRD copy; run `make sync-crds`"
    assert copy.read_bytes() == source.read_bytes(), "the chart CRD drifted from crds/; run `make sync-crds`"


def test_chart_crd_is_what_helm_installs(chart: Any) -> None:
    (crd,) = chart.crds
    loaded = yaml.safe_load(crd["data"])
    source = yaml.safe_load((REPO / "crds" / "llmd.ai_variantautoscalings.yaml").read_text())
    assert loaded == source
    assert checks.validate_objects([loaded]) == []


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment right above it, or an ancestor has (data blocks such as
    resources), or it is a pure grouping key whose children are all documented."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    nodes: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1]["indent"] >= indent:
            stack.pop()
        node = {
            "key": stripped.split(":", 1)[0],
            "indent": indent,
            "commented": i > 0 and lines[i - 1].strip().startswith("#"),
            "parent": stack[-1] if stack else None,
            "children": [],
        }
        if node["parent"] is not None:
            node["parent"]["children"].append(node)
        nodes.append(node)
        stack.append(node)

    def ancestor_commented(node: dict[str, Any]) -> bool:
        parent = node["parent"]
        while parent is not None:
            if parent["commented"]:
                return True
            parent = parent["parent"]
        return False

    def documented(node: dict[str, Any]) -> bool:
        if node["commented"] or ancestor_commented(node):
            return True
        return bool(node["children"]) and all(documented(c) for c in node["children"])

    assert len(nodes) > 50
    assert [n["key"] for n in nodes if not documented(n)] == []


# --- hardening: ServiceAccount tokens and the NetworkPolicy --------------------------------------
def test_only_the_operator_pod_mounts_the_service_account_token(chart: Any) -> None:
    """The ServiceAccount mounts nothing by default; the operator pod (which talks to the API server)
    asks for its token explicitly, so it keeps it whatever the account says."""
    out = render(chart)
    assert out.one("ServiceAccount")["automountServiceAccountToken"] is False
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == out.one("ServiceAccount")["metadata"]["name"]


def network_policy(chart: Any, values: dict[str, Any] | None = None) -> tuple[dict[str, Any], Rendered]:
    out = render(chart, {"networkPolicy": {"enabled": True}} | (values or {}))
    (policy,) = out.kind("NetworkPolicy")
    assert checks.validate_objects([policy]) == []
    return policy, out


def rule_ports(rule: Mapping[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def container_port(deployment: Mapping[str, Any], flag: str) -> int:
    """The port a container flag (``--metrics-port``, ``--probe-port``) sets; it must be a declared containerPort."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (value,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{flag}=")]
    assert int(value) in {p["containerPort"] for p in container["ports"]}
    return int(value)


MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def test_network_policy_only_when_enabled(chart: Any) -> None:
    for name, values in VALUE_SETS.items():
        enabled = values.get("networkPolicy", {}).get("enabled", False)
        assert len(render(chart, values).kind("NetworkPolicy")) == int(enabled), name
    assert any(v.get("networkPolicy", {}).get("enabled") for v in VALUE_SETS.values())


def test_network_policy_default_rules(chart: Any) -> None:
    policy, out = network_policy(chart)
    deployment = out.one("Deployment")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # it selects the operator pods, and only by the selector labels (not by chart version labels)
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels(deployment).items()

    metrics, probes = spec["ingress"]
    assert rule_ports(metrics) == {(container_port(deployment, "--metrics-port"), "TCP")}
    assert metrics["from"] == [MONITORING]
    assert rule_ports(probes) == {(container_port(deployment, "--probe-port"), "TCP")}
    assert "from" not in probes  # kubelet probes from anywhere

    api, prometheus, dns = spec["egress"]
    assert rule_ports(api) == {(443, "TCP"), (6443, "TCP")} and "to" not in api
    assert rule_ports(prometheus) == {(9090, "TCP")}  # the port of the default prometheus.baseURL
    assert prometheus["to"] == [MONITORING]
    assert rule_ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]


def test_network_policy_follows_the_metrics_and_probe_ports(chart: Any) -> None:
    policy, out = network_policy(chart, {"metrics": {"port": 9443}, "probes": {"port": 9444}})
    deployment = out.one("Deployment")
    metrics, probes = policy["spec"]["ingress"]
    assert rule_ports(metrics) == {(container_port(deployment, "--metrics-port"), "TCP")} == {(9443, "TCP")}
    assert rule_ports(probes) == {(container_port(deployment, "--probe-port"), "TCP")} == {(9444, "TCP")}


@pytest.mark.parametrize(
    ("prometheus", "ports"),
    [
        ({"baseURL": "https://thanos-querier.openshift-monitoring.svc:9091"}, {9091}),
        ({"baseURL": "https://prometheus.example.com"}, {443}),
        ({"baseURL": "http://prometheus.monitoring.svc/prom"}, {80}),
        ({"baseURL": "http://[fd00::1]:9095"}, {9095}),
    ],
)
def test_network_policy_prometheus_port_comes_from_the_base_url(
    chart: Any, prometheus: dict[str, Any], ports: set[int]
) -> None:
    policy, _ = network_policy(chart, {"prometheus": prometheus})
    assert {p for p, _ in rule_ports(policy["spec"]["egress"][1])} == ports


def test_network_policy_explicit_peers_ports_and_cidrs(chart: Any) -> None:
    thanos = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-monitoring"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "thanos-query"}}}
    nodes = {"ipBlock": {"cidr": "10.0.0.0/16"}}
    epp = {"to": [{"podSelector": {"matchLabels": {"app": "epp"}}, "namespaceSelector": {}}],
           "ports": [{"port": 9090, "protocol": "TCP"}]}
    policy, _ = network_policy(chart, {"networkPolicy": {
        "enabled": True,
        "metrics": {"from": [thanos]},
        "probes": {"from": [nodes]},
        "apiServer": {"ports": [6443], "cidrs": ["10.0.0.1/32", "10.0.0.2/32"]},
        "prometheus": {"to": [thanos], "ports": [9091, "web"]},
        "dns": {"to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}]},
        "extraEgress": [epp],
        "extraIngress": [{"from": [thanos], "ports": [{"port": 9999}]}],
    }})
    spec = policy["spec"]
    metrics, probes, extra_in = spec["ingress"]
    assert metrics["from"] == [thanos] and probes["from"] == [nodes]
    assert extra_in["ports"] == [{"port": 9999}]
    api, prometheus, dns, extra_out = spec["egress"]
    assert rule_ports(api) == {(6443, "TCP")}
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "10.0.0.2/32"}}]
    assert rule_ports(prometheus) == {(9091, "TCP"), ("web", "TCP")} and prometheus["to"] == [thanos]
    assert dns["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    assert extra_out == epp


@pytest.mark.parametrize(
    ("values", "port"),
    [
        ({"networkPolicy": {"enabled": True, "podMetrics": {"enabled": True}}}, 8000),
        ({"networkPolicy": {"enabled": True, "podMetrics": {"enabled": True}},
          "extraEnv": [{"name": "WVA_POD_METRICS_PORT", "value": "8001"}]}, 8001),
        ({"extraEnv": [{"name": "METRICS_SOURCE", "value": "pods"}]}, 8000),
        ({"extraEnv": [{"name": "METRICS_SOURCE", "value": "Auto"},
                       {"name": "WVA_POD_METRICS_PORT", "value": "9400"}]}, 9400),
        ({"extraEnv": [{"name": "METRICS_SOURCE", "value": "prometheus"}]}, None),
    ],
)
def test_network_policy_allows_pod_scraping_when_wva_scrapes_pods(
    chart: Any, values: dict[str, Any], port: int | None
) -> None:
    policy, out = network_policy(chart, values)
    egress = policy["spec"]["egress"]
    scraping = [r for r in egress if r.get("to") == [{"namespaceSelector": {}}]]
    if port is None:
        assert len(egress) == 3 and not scraping
        return
    (rule,) = scraping
    assert rule_ports(rule) == {(port, "TCP")}
    # the operator reads the same port from its environment
    env = {e["name"]: e["value"] for e in out.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    assert wva_settings.Settings.from_env(env).pod_metrics_port == port


# --- the metrics port: HTTPS, the review permissions, the reader role, the ServiceMonitor ---------------
REVIEWS = checks.REVIEWS


def endpoint_of(out: Rendered) -> dict[str, Any]:
    (endpoint,) = out.one("ServiceMonitor")["spec"]["endpoints"]
    return dict(endpoint)


def test_secure_metrics_rbac_lets_wva_review_and_the_scraper_read(chart: Any) -> None:
    from wva import rbac

    out = render(chart)
    scraper = ("monitoring", "kube-prometheus-stack-prometheus")
    for group, resource in REVIEWS:
        assert rbac.is_allowed(group, resource, "", "create", None, out.objects, subject=SA)
        assert not rbac.is_allowed(group, resource, "", "create", None, out.objects, subject=scraper)
    reader = out.named("ClusterRole", f"{FULLNAME}-metrics-reader")
    assert reader["rules"] == rbac.metrics_reader_rules()
    for path in ("/metrics", "/debug/decisions", "/debug/decisions/llm/llama-8b"):
        assert rbac.is_allowed_path(path, "get", out.objects, subject=scraper), path
        assert not rbac.is_allowed_path(path, "get", out.objects, subject=SA), path  # wva needs no reader role
    assert not rbac.is_allowed_path("/healthz", "get", out.objects, subject=scraper)

    accounts = [{"name": "prometheus-k8s", "namespace": "monitoring"},
                {"name": "prometheus-user-workload", "namespace": "openshift-user-workload-monitoring"}]
    out = render(chart, {"metrics": {"reader": {"serviceAccounts": accounts}}})
    for account in accounts:
        assert rbac.is_allowed_path("/metrics", "get", out.objects, subject=(account["namespace"], account["name"]))
    assert not rbac.is_allowed_path("/metrics", "get", out.objects, subject=scraper)
    # no accounts: the role alone, for bindings made elsewhere; no reader at all
    out = render(chart, {"metrics": {"reader": {"serviceAccounts": []}}})
    assert out.named("ClusterRole", f"{FULLNAME}-metrics-reader")
    assert [b for b in out.kind("ClusterRoleBinding") if b["metadata"]["name"].endswith("-metrics-reader")] == []
    out = render(chart, {"metrics": {"reader": {"create": False}}})
    assert [r for r in out.kind("ClusterRole") if r["metadata"]["name"].endswith("-metrics-reader")] == []
    assert out.named("ClusterRole", f"{FULLNAME}-metrics-auth")


def test_plain_metrics_grant_no_reviews_and_serve_http(chart: Any) -> None:
    out = render(chart, VALUE_SETS["plain-metrics"])
    names = {o["metadata"]["name"] for o in out.kind("ClusterRole") + out.kind("ClusterRoleBinding")}
    assert not {f"{FULLNAME}-metrics-auth", f"{FULLNAME}-metrics-reader"} & names
    container = out.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http-metrics"] == 8080
    assert "--metrics-secure=false" in container["args"]
    assert out.one("Service")["spec"]["ports"][0]["name"] == "http-metrics"
    endpoint = endpoint_of(out)
    assert endpoint["scheme"] == "http" and endpoint["port"] == "http-metrics"
    assert not {"bearerTokenFile", "authorization", "tlsConfig"} & set(endpoint)
    assert "plain HTTP, no authentication" in out.notes


def test_service_monitor_scrapes_https_with_prometheus_own_token(chart: Any) -> None:
    out = render(chart, {"serviceMonitor": {"enabled": True}})
    endpoint = endpoint_of(out)
    service_port = out.one("Service")["spec"]["ports"][0]
    assert endpoint["port"] == service_port["name"] == "https-metrics" and endpoint["scheme"] == "https"
    # the Prometheus pod's own token: its account is the one bound to the reader role
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert "authorization" not in endpoint
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}  # the self-signed certificate
    assert "kube-prometheus-stack-prometheus" in out.notes and "create token" in out.notes


def test_service_monitor_verifies_a_certificate_from_a_secret(chart: Any) -> None:
    out = render(chart, VALUE_SETS["instance-monitor-overrides"])
    deployment = out.one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (cert_dir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--metrics-cert-path=")]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert mounts["metrics-cert"]["mountPath"] == cert_dir and mounts["metrics-cert"]["readOnly"] is True
    assert volumes["metrics-cert"]["secret"]["secretName"] == "wva-metrics-tls"
    service = out.one("Service")
    assert endpoint_of(out)["tlsConfig"] == {
        "ca": {"secret": {"name": "wva-metrics-tls", "key": "ca.crt"}},
        "serverName": f"{service['metadata']['name']}.{NAMESPACE}.svc",
    }
    assert "certificate: wva-metrics-tls" in out.notes
    assert "metrics-cert" not in {v["name"] for v in render(chart).one("Deployment")["spec"]["template"]["spec"]
                                  ["volumes"]}


def test_service_monitor_token_secret_and_tls_config_as_given(chart: Any) -> None:
    tls = {"ca": {"configMap": {"name": "service-ca", "key": "service-ca.crt"}}, "serverName": "wva.example"}
    out = render(chart, {"serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "reader-token"},
                                            "tlsConfig": tls}})
    endpoint = endpoint_of(out)
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "reader-token", "key": "token"}}
    assert "bearerTokenFile" not in endpoint
    assert endpoint["tlsConfig"] == tls
    assert checks.validate_objects(out.objects) == []


def test_a_certificate_secret_needs_secure_metrics(chart: Any, helm: Any) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(chart, {"metrics": {"secure": False, "certSecretName": "x"}})
    assert "metrics.certSecretName needs metrics.secure" in str(err.value)
    with pytest.raises(helm.HelmError) as err:
        render(chart, {"metrics": {"reader": {"serviceAccounts": [{"name": "prometheus"}]}}})
    assert "needs a namespace" in str(err.value)
