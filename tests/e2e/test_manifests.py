"""Offline checks of the objects the e2e suite creates: they must be valid before a cluster sees them."""

from __future__ import annotations

import kubernetes_validate
import pytest
import test_autoscaling as e2e

import crd_tools

NAMESPACE = "wva-e2e-abc123"


def test_variant_autoscaling_is_valid_against_the_crd() -> None:
    va = e2e.variant_autoscaling(NAMESPACE)
    assert crd_tools.validate_cr(va) == []
    assert va["spec"]["scaleTargetRef"]["name"] == e2e.DEPLOYMENT


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_builtin_objects_are_valid(version: str) -> None:
    objects = [o for o in e2e.emulator_objects(NAMESPACE) if o["kind"] != "ServiceMonitor"]
    objects.append(e2e.hpa(NAMESPACE))
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_emulator_objects_select_each_other() -> None:
    objects = {o["kind"]: o for o in e2e.emulator_objects(NAMESPACE)}
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels.items()
    service_labels = objects["Service"]["metadata"]["labels"]
    assert objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    port_names = {p["name"] for p in objects["Service"]["spec"]["ports"]}
    assert {e["port"] for e in objects["ServiceMonitor"]["spec"]["endpoints"]} <= port_names
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["emulate", "--port", "8000", "--model", e2e.MODEL]
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in objects.values())


def test_hpa_targets_the_variant() -> None:
    hpa = e2e.hpa(NAMESPACE)
    assert hpa["spec"]["scaleTargetRef"]["name"] == e2e.DEPLOYMENT
    metric = hpa["spec"]["metrics"][0]["external"]
    assert metric["metric"]["selector"]["matchLabels"] == {
        "variant_name": e2e.VARIANT,
        "exported_namespace": NAMESPACE,
    }
    assert metric["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert hpa["spec"]["maxReplicas"] == e2e.variant_autoscaling(NAMESPACE)["spec"]["maxReplicas"]
