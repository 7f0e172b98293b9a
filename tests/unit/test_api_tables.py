"""The embedded API's server-side printing (``wva.sim.tables``): the Tables ``kubectl get`` asks for,
built from the CRD's printer columns as the apiextensions API server builds them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from wva.sim.tables import VA_PRINTER_COLUMNS, human_duration, jsonpath, table_for, table_version_wanted

CRD = Path(__file__).resolve().parents[2] / "crds" / "llmd.ai_variantautoscalings.yaml"
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def va(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "llama-l4", "namespace": "demo", "creationTimestamp": "2026-01-01T11:55:00Z"},
        "spec": {"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": "llama-l4-dep"}},
        "status": status,
    }


def test_the_printer_columns_are_the_crds() -> None:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    assert [dict(c) for c in VA_PRINTER_COLUMNS] == version["additionalPrinterColumns"]


def test_kubectls_accept_header_asks_for_a_v1_table_and_plain_clients_do_not() -> None:
    assert table_version_wanted(KUBECTL_ACCEPT) == "v1"
    assert table_version_wanted("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "v1beta1"
    assert table_version_wanted("application/json") is None
    assert table_version_wanted("") is None
    assert table_version_wanted("application/json, application/json;as=Table;v=v1;g=meta.k8s.io") is None
    assert table_version_wanted("application/json;as=Table;v=v9;g=meta.k8s.io") is None


def test_jsonpath_covers_what_printer_columns_use() -> None:
    obj = va(conditions=[{"type": "TargetResolved", "status": "True"}, {"type": "MetricsAvailable", "status": "False"}])
    assert jsonpath(obj, ".spec.scaleTargetRef.name") == ["llama-l4-dep"]
    assert jsonpath(obj, ".status.conditions[?(@.type=='MetricsAvailable')].status") == ["False"]
    assert jsonpath(obj, '.status.conditions[?(@.type!="MetricsAvailable")].type') == ["TargetResolved"]
    assert jsonpath(obj, ".status.conditions[1].type") == ["MetricsAvailable"]
    assert jsonpath(obj, ".status.conditions[*].status") == ["True", "False"]
    assert jsonpath(obj, "{.status.missing.deeper}") == []
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        jsonpath(obj, ".spec..name")


def test_a_table_has_the_name_then_every_column_typed_as_the_api_server_does() -> None:
    obj = va(
        currentAlloc={"accelerator": "L4", "numReplicas": 2},
        desiredOptimizedAlloc={"accelerator": "L4", "numReplicas": 3},
        conditions=[{"type": "MetricsAvailable", "status": "True"}],
        lastDecision={"reason": "ScaleUpKVSpareLow"},
    )
    table = table_for([obj], VA_PRINTER_COLUMNS, resource_version="42", now=NOW)
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert table["metadata"] == {"resourceVersion": "42"}
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Target", "Model", "Accelerator", "CurrentReplicas", "Optimized", "MetricsReady",
                     "Reason", "Age"]
    assert table["columnDefinitions"][0]["format"] == "name"
    assert [c["priority"] for c in table["columnDefinitions"]][-2:] == [1, 0]  # Reason only with -o wide
    (row,) = table["rows"]
    # CurrentReplicas is an integer column (a JSON number); Optimized a string column ("3", as upstream)
    assert row["cells"] == ["llama-l4", "llama-l4-dep", "m", "L4", 2, "3", "True", "ScaleUpKVSpareLow", "5m"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}


def test_missing_values_are_empty_cells_and_include_object_is_honoured() -> None:
    obj = va()
    (row,) = table_for([obj], VA_PRINTER_COLUMNS, include_object="Object", now=NOW)["rows"]
    assert row["cells"][3:8] == [None] * 5 and row["object"] == obj
    (row,) = table_for([obj], VA_PRINTER_COLUMNS, include_object="None", now=NOW)["rows"]
    assert "object" not in row
    assert table_for([obj], VA_PRINTER_COLUMNS, headers=False, now=NOW)["columnDefinitions"] is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-5, "<invalid>"), (-1, "0s"), (45, "45s"), (119, "119s"), (200, "3m20s"), (300, "5m"), (3000, "50m"),
     (4 * 3600 + 600, "4h10m"), (30 * 3600, "30h"), (3 * 86400 + 7200, "3d2h"), (40 * 86400, "40d"),
     (3 * 365 * 86400, "3y"), (20 * 365 * 86400, "20y")],
)
def test_ages_read_as_kubectl_shows_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown
