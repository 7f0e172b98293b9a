"""End to end on kind: an emulated vLLM Deployment and its VariantAutoscaling scale up under
saturation and back down when idle, seen both in Prometheus (``wva_desired_replicas``) and on the
Deployment itself (through direct actuation or an HPA, whichever the operator was installed with).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import MONITORING_NAMESPACE, WVA_NAMESPACE, Kubectl, Prometheus, operator_env, poll

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "vllm-e2e"
VARIANT = "vllm-e2e"
MODEL = "e2e/llama-8b"
SATURATED = {"kv_cache_usage": 0.95, "num_requests_waiting": 12, "num_requests_running": 8}
IDLE = {"kv_cache_usage": 0.02, "num_requests_waiting": 0, "num_requests_running": 0}
MAX_REPLICAS = 3

pytestmark = pytest.mark.e2e


def _example(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "deploy" / "examples" / name).read_text()) if d]


def emulator_objects(namespace: str) -> list[dict[str, Any]]:
    """deploy/examples/vllm-emulator.yaml, renamed into the test namespace and model."""
    objects = copy.deepcopy(_example("vllm-emulator.yaml"))
    for obj in objects:
        obj["metadata"]["name"] = DEPLOYMENT
        obj["metadata"]["namespace"] = namespace
        obj["metadata"].setdefault("labels", {})["app"] = DEPLOYMENT
        if obj["kind"] == "Deployment":
            obj["spec"]["selector"]["matchLabels"] = {"app": DEPLOYMENT}
            obj["spec"]["template"]["metadata"]["labels"] = {"app": DEPLOYMENT}
            container = obj["spec"]["template"]["spec"]["containers"][0]
            container["args"] = ["emulate", "--port", "8000", "--model", MODEL]
            container["imagePullPolicy"] = "Never"
        elif obj["kind"] == "Service":
            obj["spec"]["selector"] = {"app": DEPLOYMENT}
        elif obj["kind"] == "ServiceMonitor":
            obj["spec"]["selector"] = {"matchLabels": {"app": DEPLOYMENT}}
    return objects


def variant_autoscaling(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": VARIANT,
            "namespace": namespace,
            "labels": {"inference.optimization/acceleratorName": "A100"},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT},
            "modelID": MODEL,
            "variantCost": "10.0",
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": 8}]},
        },
    }


def hpa(namespace: str) -> dict[str, Any]:
    """deploy/examples/hpa.yaml aimed at the test variant, with fast scale-down for the test."""
    (obj,) = copy.deepcopy(_example("hpa.yaml"))
    obj["metadata"] = {"name": DEPLOYMENT, "namespace": namespace}
    obj["spec"]["scaleTargetRef"]["name"] = DEPLOYMENT
    obj["spec"]["maxReplicas"] = MAX_REPLICAS
    metric = obj["spec"]["metrics"][0]["external"]["metric"]
    metric["selector"]["matchLabels"] = {"variant_name": VARIANT, "exported_namespace": namespace}
    obj["spec"]["behavior"]["scaleDown"] = {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}],
    }
    return obj


@pytest.fixture(scope="module")
def actuation(wva_installed: dict[str, Any]) -> str:
    return operator_env(wva_installed).get("ACTUATION_MODE", "hpa")


@pytest.fixture(scope="module")
def variant(kubectl: Kubectl, namespace: str, actuation: str) -> str:
    """Emulator Deployment + Service + ServiceMonitor, its VA and (hpa mode) an HPA; returns the namespace."""
    kubectl.apply(*emulator_objects(namespace))
    poll("the emulator pod to be Ready", lambda: kubectl.ready_pods(namespace, f"app={DEPLOYMENT}") or None)
    kubectl.apply(variant_autoscaling(namespace))
    if actuation == "hpa":
        kubectl.apply(hpa(namespace))
    return namespace


def set_load(kubectl: Kubectl, namespace: str, values: dict[str, float]) -> None:
    """POST /control on every Ready emulator pod (new pods start idle, so this is re-applied)."""
    script = (
        "import sys, urllib.request as u; "
        "u.urlopen(u.Request('http://127.0.0.1:8000/control', data=sys.argv[1].encode(), "
        "headers={'Content-Type': 'application/json'}, method='POST'), timeout=5).read()"
    )
    for pod in kubectl.ready_pods(namespace, f"app={DEPLOYMENT}"):
        kubectl.run("exec", "-n", namespace, pod, "--", "python", "-c", script, json.dumps(values))


def desired(prometheus: Prometheus, namespace: str) -> list[float]:
    return prometheus.values(
        f'wva_desired_replicas{{variant_name="{VARIANT}",exported_namespace="{namespace}"}}'
    )


def deployment_replicas(kubectl: Kubectl, namespace: str) -> int:
    return int(kubectl.get("deployment", DEPLOYMENT, "-n", namespace)["spec"].get("replicas", 1))


def condition(kubectl: Kubectl, namespace: str, kind: str) -> dict[str, Any] | None:
    va = kubectl.get("variantautoscaling", VARIANT, "-n", namespace)
    for c in va.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return None


def test_operator_pods_ready_and_one_leader(kubectl: Kubectl, wva_installed: dict[str, Any]) -> None:
    replicas = wva_installed["spec"]["replicas"]

    def all_ready() -> list[str] | None:
        pods = kubectl.ready_pods(WVA_NAMESPACE, "app.kubernetes.io/name=workload-variant-autoscaler")
        return pods if len(pods) == replicas else None

    pods = poll("every operator replica Ready", all_ready)
    if operator_env(wva_installed).get("LEADER_ELECTION", "true") == "true":

        def holder() -> str | None:
            lease = kubectl.get("lease", "wva-leader", "-n", WVA_NAMESPACE)
            return lease["spec"].get("holderIdentity") or None

        assert poll("the wva-leader Lease to have a holder", holder) in pods


def test_target_resolved_and_metrics_available(kubectl: Kubectl, variant: str) -> None:
    resolved = poll("TargetResolved", lambda: condition(kubectl, variant, "TargetResolved"), timeout=120)
    assert resolved["status"] == "True" and resolved["reason"] == "TargetFound"
    metrics = poll(
        "MetricsAvailable=True",
        lambda: (
            c if (c := condition(kubectl, variant, "MetricsAvailable")) and c["status"] == "True" else None
        ),
    )
    assert metrics["reason"] == "MetricsFound"


def test_idle_variant_is_published_once_at_its_minimum(
    kubectl: Kubectl, prometheus: Prometheus, variant: str
) -> None:
    set_load(kubectl, variant, IDLE)
    values = poll(
        "wva_desired_replicas == 1 for the idle variant",
        lambda: v if (v := desired(prometheus, variant)) and v == [1.0] else None,
        on_tick=lambda: set_load(kubectl, variant, IDLE),
    )
    # Exactly one series: only the leader publishes decisions.
    assert values == [1.0]


def test_scales_up_under_saturation(kubectl: Kubectl, prometheus: Prometheus, variant: str) -> None:
    tick = lambda: set_load(kubectl, variant, SATURATED)  # noqa: E731
    top = poll(
        "wva_desired_replicas > 1 under saturation",
        lambda: v[0] if (v := desired(prometheus, variant)) and v[0] > 1 else None,
        on_tick=tick,
    )
    assert 1 < top <= MAX_REPLICAS
    replicas = poll(
        "the Deployment to scale up (direct actuation or HPA)",
        lambda: r if (r := deployment_replicas(kubectl, variant)) > 1 else None,
        on_tick=tick,
    )
    assert replicas <= MAX_REPLICAS
    va = kubectl.get("variantautoscaling", VARIANT, "-n", variant)
    assert va["status"]["desiredOptimizedAlloc"]["numReplicas"] > 1


def test_scales_down_when_idle(kubectl: Kubectl, prometheus: Prometheus, variant: str) -> None:
    tick = lambda: set_load(kubectl, variant, IDLE)  # noqa: E731
    poll(
        "wva_desired_replicas back to 1 when idle",
        lambda: True if desired(prometheus, variant) == [1.0] else None,
        on_tick=tick,
    )
    poll(
        "the Deployment to scale back down to 1",
        lambda: True if deployment_replicas(kubectl, variant) == 1 else None,
        on_tick=tick,
    )


def test_an_idle_model_that_opted_in_goes_to_zero(
    kubectl: Kubectl, prometheus: Prometheus, variant: str, actuation: str
) -> None:
    """spec.scaleToZero on the VA: no request for the retention window, so wva_desired_replicas goes to 0;
    with direct actuation the Deployment follows (an HPA keeps its minReplicas of 1 unless the
    HPAScaleToZero gate is on, and KEDA needs minReplicaCount 0: docs/scaling-algorithm.md)."""
    tick = lambda: set_load(kubectl, variant, IDLE)  # noqa: E731
    patch = {"spec": {"scaleToZero": {"enabled": True, "retention": "30s"}}}
    kubectl.run("patch", "variantautoscaling", VARIANT, "-n", variant, "--type=merge", "-p", json.dumps(patch))
    try:
        poll(
            "wva_desired_replicas == 0 after the idle retention window",
            lambda: True if desired(prometheus, variant) == [0.0] else None,
            on_tick=tick,
        )
        va = kubectl.get("variantautoscaling", VARIANT, "-n", variant)
        assert va["status"]["lastDecision"]["reason"] in ("ScaleToZeroIdle", "HoldAtZero")
        if actuation == "direct":
            poll("the Deployment at 0 replicas",
                 lambda: True if deployment_replicas(kubectl, variant) == 0 else None)
    finally:
        off = {"spec": {"scaleToZero": {"enabled": False}}}
        kubectl.run("patch", "variantautoscaling", VARIANT, "-n", variant, "--type=merge", "-p", json.dumps(off))
        kubectl.run("scale", "deployment", DEPLOYMENT, "-n", variant, "--replicas=1")
        poll("the emulator pod Ready again", lambda: kubectl.ready_pods(variant, f"app={DEPLOYMENT}") or None)


def test_prometheus_scrapes_the_operator(prometheus: Prometheus, wva_installed: dict[str, Any]) -> None:
    up = prometheus.values(f'up{{namespace="{WVA_NAMESPACE}",service=~".*-metrics"}}')
    assert up and max(up) == 1.0, (
        f"the operator metrics Service is not scraped (monitoring: {MONITORING_NAMESPACE})"
    )
