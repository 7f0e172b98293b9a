"""The VariantAutoscaling CRD: identity, printer columns, validation, samples, offline schema checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import crd_tools
from wva.api import v1alpha1 as api

SAMPLES_DIR = crd_tools.REPO_ROOT / "deploy" / "samples"


def _sample_vas() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        with open(path, encoding="utf-8") as fh:
            for index, doc in enumerate(yaml.safe_load_all(fh)):
                if isinstance(doc, dict) and doc.get("kind") == "VariantAutoscaling":
                    found.append((f"{path.name}#{index}", doc))
    return found


SAMPLE_VAS = _sample_vas()


def _valid_va() -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {"name": "v", "namespace": "ns", "labels": {"inference.optimization/acceleratorName": "A100"}},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "d"},
            "modelID": "m",
            "variantCost": "10.0",
            "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": 4}]},
        },
        "status": crd_tools.typical_status(applied=False),
    }


def _set(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Copy of obj with the value at a path like ``spec.a.0.b`` replaced (``...`` deletes it)."""
    out = copy.deepcopy(obj)
    parts: list[Any] = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    node: Any = out
    for part in parts[:-1]:
        node = node[part]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


# --- the CRD manifest itself -------------------------------------------------------------------


def test_crd_identity() -> None:
    crd = crd_tools.load_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "variantautoscalings.llmd.ai"
    spec = crd["spec"]
    assert spec["group"] == "llmd.ai"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "VariantAutoscaling",
        "listKind": "VariantAutoscalingList",
        "plural": "variantautoscalings",
        "singular": "variantautoscaling",
        "shortNames": ["va"],
    }
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1alpha1", True, True)]
    assert spec["versions"][0]["subresources"] == {"status": {}}


def test_printer_columns_in_order() -> None:
    columns = crd_tools.load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Target", "string", ".spec.scaleTargetRef.name"),
        ("Model", "string", ".spec.modelID"),
        ("Accelerator", "string", ".status.currentAlloc.accelerator"),
        ("CurrentReplicas", "integer", ".status.currentAlloc.numReplicas"),
        ("Optimized", "string", ".status.desiredOptimizedAlloc.numReplicas"),
        ("MetricsReady", "string", ".status.conditions[?(@.type=='MetricsAvailable')].status"),
        ("Reason", "string", ".status.lastDecision.reason"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    # the decision's reason code is shown by ``kubectl get va -o wide`` only (upstream's columns stay as they are)
    assert [c["name"] for c in columns if c.get("priority", 0) > 0] == ["Reason"]


def test_list_and_map_markers() -> None:
    schema = crd_tools.served_schema(crd_tools.load_crd())
    spec = schema["properties"]["spec"]
    assert spec["properties"]["scaleTargetRef"]["x-kubernetes-map-type"] == "atomic"
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert spec["properties"]["variantCost"]["default"] == "10.0"
    assert spec["properties"]["minReplicas"]["default"] == 1


def test_min_max_cel_rule_present() -> None:
    # jsonschema cannot run CEL; the model enforces the same rule (see test_api_models).
    spec = crd_tools.served_schema(crd_tools.load_crd())["properties"]["spec"]
    rules = spec["x-kubernetes-validations"]
    assert len(rules) == 1
    assert "self.minReplicas <= self.maxReplicas" in rules[0]["rule"]
    assert "!has(self.maxReplicas)" in rules[0]["rule"]


@pytest.mark.parametrize("version", ["1.30.0", "1.31.0", "1.32.0", "1.33.0"])
def test_crd_passes_kubernetes_validate_strict(version: str) -> None:
    assert kubernetes_validate.validate(crd_tools.load_crd(), version, strict=True) == version.rsplit(".", 1)[0]


def test_kubernetes_validate_catches_a_broken_crd() -> None:
    # Shows the check above can fail: an unknown field in the CRD spec is rejected in strict mode.
    crd = crd_tools.load_crd()
    crd["spec"]["versions"][0]["printerColumns"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, "1.30.0", strict=True)


def test_every_property_is_described() -> None:
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in node.get("properties", {}).items():
            child_path = f"{path}.{name}" if path else name
            if name != "metadata" and not child.get("description"):
                missing.append(child_path)
            walk(child, child_path)
        if "items" in node:
            walk(node["items"], path + "[]")

    walk(crd_tools.served_schema(crd_tools.load_crd()), "")
    assert missing == []


# --- strictify ---------------------------------------------------------------------------------


def test_strictify_forbids_unknown_fields_and_handles_nullable() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "nullable": True},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
                },
            },
        },
    }
    strict = crd_tools.strictify(schema)
    assert "nullable" in schema["properties"]["spec"]["properties"]["a"], "input must not be modified"
    ok = {"kind": "X", "metadata": {"name": "n"}, "spec": {"a": None, "free": {"anything": 1}}}
    assert crd_tools.validate_cr(ok, strict) == []
    assert crd_tools.validate_cr({"spec": {"a": "x"}}, strict) == ["spec.a: 'x' is not of type 'integer', 'null'"]
    assert crd_tools.validate_cr({"spec": {"b": 1}, "extra": 2}, strict) == [
        "extra: unknown field",
        "spec.b: unknown field",
    ]
    assert crd_tools.validate_cr({"metadata": {"labels": {"x": 1}}}, strict) == [
        "metadata.labels.x: 1 is not of type 'string'"
    ]


def test_strictify_leaves_root_open_when_identity_fields_are_not_declared() -> None:
    strict = crd_tools.strictify({"type": "object", "properties": {"spec": {"type": "object", "properties": {}}}})
    assert crd_tools.validate_cr({"apiVersion": "v1", "kind": "K", "spec": {}}, strict) == []
    assert crd_tools.validate_cr({"spec": {"x": 1}}, strict) == ["spec.x: unknown field"]


def test_crd_schema_returns_an_independent_copy() -> None:
    first = crd_tools.crd_schema()
    first["properties"].clear()
    assert "spec" in crd_tools.crd_schema()["properties"]


def test_dotted_path() -> None:
    assert crd_tools.dotted_path([]) == "(root)"
    assert crd_tools.dotted_path(["spec", "modelProfile", "accelerators", 0, "acc"]) == (
        "spec.modelProfile.accelerators[0].acc"
    )


def test_load_crd_rejects_other_manifests(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ValueError, match="not a CustomResourceDefinition"):
        crd_tools.load_crd(path)


# --- samples -----------------------------------------------------------------------------------


def test_there_are_at_least_three_sample_vas() -> None:
    assert len(SAMPLE_VAS) >= 3


def test_samples_cover_the_documented_cases() -> None:
    vas = [va for _, va in SAMPLE_VAS]
    label = "inference.optimization/acceleratorName"
    # One using only the accelerator label.
    assert any("modelProfile" not in va["spec"] and label in va["metadata"].get("labels", {}) for va in vas)
    # A cheap/expensive pair of one model on two accelerators, with min/max replicas.
    by_model: dict[str, list[dict[str, Any]]] = {}
    for va in vas:
        by_model.setdefault(va["spec"]["modelID"], []).append(va)
    pairs = [
        group
        for group in by_model.values()
        if len({va["spec"].get("modelProfile", {}).get("accelerators", [{}])[0].get("acc") for va in group}) >= 2
        and len({float(va["spec"].get("variantCost", "10.0")) for va in group}) >= 2
        and all("minReplicas" in va["spec"] and "maxReplicas" in va["spec"] for va in group)
    ]
    assert pairs, "no cheap/expensive pair of one model with min/max replicas"


def test_a_valid_full_object_passes() -> None:
    assert crd_tools.validate_cr(_valid_va()) == []


# --- the local validator (used by fast tests; the real apiserver's verdicts are in tests/controlplane) ---


def test_yaml_timestamps_are_checked_as_strings() -> None:
    # PyYAML turns an unquoted timestamp into a datetime; kubectl would send the RFC 3339 string.
    va = yaml.safe_load(yaml.safe_dump(_valid_va()).replace("'2026-01-08T19:40:00Z'", "2026-01-08T19:40:00Z"))
    assert not isinstance(va["status"]["desiredOptimizedAlloc"]["lastRunTime"], str)
    assert crd_tools.validate_cr(va) == []


def test_all_errors_are_reported_sorted() -> None:
    va = _set(_set(_valid_va(), "spec.modelID", ""), "spec.variantCost", 80)
    va = _set(va, "spec.modelProfile.accelerators.0.accCount", 0)
    errors = crd_tools.validate_cr(va)
    assert [e.split(":", 1)[0] for e in errors] == [
        "spec.modelID",
        "spec.modelProfile.accelerators[0].accCount",
        "spec.variantCost",
    ]
    assert errors == sorted(errors)


# --- docs/api.md stays in step with the CRD ----------------------------------------------------

DOCS = (crd_tools.REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def _field_paths(node: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        out.append(child_path)
        out += _field_paths(child, child_path)
    if "items" in node:
        out += _field_paths(node["items"], path + "[]")
    return out


def test_docs_list_every_field() -> None:
    schema = crd_tools.served_schema(crd_tools.load_crd())
    paths = [p for p in _field_paths(schema, "") if p.startswith(("spec.", "status."))]
    assert len(paths) > 30
    assert [p for p in paths if f"`{p}`" not in DOCS] == []


def test_docs_list_every_condition_reason_and_printer_column() -> None:
    names = [*api.ConditionType, *api.TargetResolvedReason, *api.MetricsAvailableReason, *api.OptimizationReadyReason]
    assert [n.value for n in names if f"`{n.value}`" not in DOCS] == []
    columns = crd_tools.load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns if f"| {c['name']} | {c['type']} | `{c['jsonPath']}` |" not in DOCS] == []


def _docs_examples() -> list[dict[str, Any]]:
    blocks = [block.split("```", 1)[0] for block in DOCS.split("```yaml\n")[1:]]
    docs = [doc for block in blocks for doc in yaml.safe_load_all(block)]
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "VariantAutoscaling"]


def test_docs_example_is_valid_for_the_crd_and_the_model() -> None:
    examples = _docs_examples()
    assert examples, "docs/api.md has no VariantAutoscaling example"
    for example in examples:
        assert crd_tools.validate_cr(example) == []
        va = api.VariantAutoscaling.model_validate(example)
        assert {c.type for c in va.status.conditions} == {t.value for t in api.ConditionType}
