"""The chart's dashboard ConfigMap and PrometheusRule: off by default, valid when on, and the same
dashboard and rules as the plain files in deploy/ (rendered with the real Helm SDK)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

# chart and helm are test_chart's module-scoped fixtures (the loaded chart, the Helm SDK)
from test_chart import CHART, FULLNAME, NAMESPACE, chart, checks, helm, render  # noqa: F401

from monitoring import ALERTS, CHART_ALERTS, CHART_DASHBOARD, CHART_RECORDING_RULES, DASHBOARD, RECORDING_RULES

# the parts of the Prometheus Operator's PrometheusRule CRD (monitoring.coreos.com/v1) the chart uses
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": "^(0|(([0-9]+)(ms|s|m|h|d|w|y))+)$"},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object",
                                                        "additionalProperties": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}

ENABLED = {"alerts": {"enabled": True}, "grafana": {"dashboard": {"enabled": True}}}


def _plain_rules() -> Any:
    return yaml.safe_load(ALERTS.read_text(encoding="utf-8"))


def test_neither_is_rendered_by_default(chart: Any) -> None:  # noqa: F811
    out = render(chart)
    assert out.kind("PrometheusRule") == []
    assert [c for c in out.kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")] == []


def test_prometheus_rule_is_valid_and_holds_the_plain_files_rules(chart: Any) -> None:  # noqa: F811
    out = render(chart, ENABLED)
    rule = out.one("PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    assert rule["metadata"]["name"] == f"{FULLNAME}-alerts"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["spec"] == _plain_rules()
    assert CHART_ALERTS.read_bytes() == ALERTS.read_bytes()
    # every other object is checked by kubernetes-validate (it has no schema for PrometheusRule)
    assert checks.validate_objects([o for o in out.objects if o["kind"] != "PrometheusRule"]) == []


def test_prometheus_rule_labels_and_runbook_base_url(chart: Any) -> None:  # noqa: F811
    values = {**ENABLED, "alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                                    "runbookBaseURL": "https://wiki.example.com/wva/runbooks"}}
    rule = render(chart, values).one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    plain = [r for g in _plain_rules()["groups"] for r in g["rules"]]
    assert len(rules) == len(plain)
    for got, want in zip(rules, plain, strict=True):
        assert got["annotations"]["runbook_url"] == "https://wiki.example.com/wva/runbooks#" + want["alert"].lower()
        assert {k: v for k, v in got.items() if k != "annotations"} == {k: v for k, v in want.items()
                                                                         if k != "annotations"}


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(chart: Any) -> None:  # noqa: F811
    out = render(chart, ENABLED)
    cm = out.named("ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert list(cm["data"]) == ["wva-dashboard.json"]
    assert json.loads(cm["data"]["wva-dashboard.json"]) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes()
    assert checks.validate_objects([cm]) == []


def test_dashboard_configmap_namespace_labels_and_annotations(chart: Any) -> None:  # noqa: F811
    values = {"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring",
                                        "labels": {"grafana_dashboard": "wva"},
                                        "annotations": {"grafana_folder": "Autoscaling"}}}}
    cm = render(chart, values).named("ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "wva"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Autoscaling"}


def test_helm_lint_is_clean_with_both_enabled(helm: Any) -> None:  # noqa: F811
    report = helm.lint(CHART, ENABLED, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# --- recording rules (files/wva-recording-rules.yaml, generated from wva.collector.v2.recording) -----

RECORDING = {"recordingRules": {"enabled": True}}


def _plain_recording_rules() -> Any:
    return yaml.safe_load(RECORDING_RULES.read_text(encoding="utf-8"))


def test_recording_rules_are_off_by_default_and_valid_when_on(chart: Any) -> None:  # noqa: F811
    assert [r for r in render(chart).kind("PrometheusRule") if r["metadata"]["name"].endswith("-recording")] == []
    rule = render(chart, RECORDING).named("PrometheusRule", f"{FULLNAME}-recording")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["spec"] == _plain_recording_rules()  # the default interval is the plain file's, 30s
    assert rule["spec"]["groups"][0]["interval"] == "30s"
    assert CHART_RECORDING_RULES.read_bytes() == RECORDING_RULES.read_bytes()


def test_recording_rules_interval_and_labels_come_from_the_values(chart: Any) -> None:  # noqa: F811
    values = {"globalOptInterval": "1m", "recordingRules": {"enabled": True, "interval": "1m30s",
                                                            "labels": {"release": "kube-prometheus-stack"}}}
    rule = render(chart, values).named("PrometheusRule", f"{FULLNAME}-recording")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = rule["spec"]["groups"]
    (plain,) = _plain_recording_rules()["groups"]
    assert group == {**plain, "interval": "1m30s"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"recordingRules": {"enabled": True, "interval": "15s"}}, "no shorter than globalOptInterval (30s)"),
        ({"globalOptInterval": "2m", "recordingRules": {"enabled": True, "interval": "1m"}},
         "no shorter than globalOptInterval (2m)"),
        ({"recordingRules": {"enabled": True, "interval": "1.5m"}}, "recordingRules.interval must be a duration"),
        ({"recordingRules": {"enabled": True, "interval": "0s"}}, "recordingRules.interval must be a duration"),
    ],
)
def test_a_recording_interval_shorter_than_the_engine_tick_fails(
    chart: Any, helm: Any, values: dict[str, Any], message: str  # noqa: F811
) -> None:
    with pytest.raises(helm.HelmError) as err:
        render(chart, values)
    assert message in str(err.value)


def test_helm_lint_is_clean_with_recording_rules(helm: Any) -> None:  # noqa: F811
    report = helm.lint(CHART, {**ENABLED, **RECORDING}, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
