"""``kubectl wva``'s pure views and its file-based explain (the cluster paths run on the real control
plane: tests/controlplane/test_cp_plugin.py)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from wva.collector.types import ReplicaMetrics, ReplicaMetricsMetadata
from wva.decisions import VariantInput, decide_group
from wva.plugin.main import main
from wva.plugin.views import effective_config, render_config, render_status
from wva.saturation.config import SaturationScalingConfig

NOW = datetime.datetime(2026, 12, 3, 10, 5, tzinfo=datetime.UTC)


def _va(name: str, ns: str = "llm", model: str = "m", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling", "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": name}, "modelID": model,
                     "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 8}]}, **spec},
            "status": {"desiredOptimizedAlloc": {"accelerator": "L4", "numReplicas": 2},
                       "lastDecision": {"reason": "HoldSteady", "message": "holding 2:\n steady",
                                        "time": "2026-12-03T10:00:00Z"},
                       "conditions": [{"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound",
                                       "message": "ok", "lastTransitionTime": "2026-12-03T10:00:00Z"}]}}


def test_status_is_a_table_with_the_decisions_age_and_on_wide_its_message() -> None:
    text = render_status([_va("b"), _va("a", ns="aaa")], NOW)
    header, first, second = text.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "MODEL", "ACCELERATOR", "CURRENT", "DESIRED", "METRICS",
                              "REASON", "AGE"]
    assert first.split() == ["aaa", "a", "m", "L4", "2", "True", "HoldSteady", "5m"]  # no current alloc: empty cell
    assert second.startswith("llm")
    assert "holding 2: steady" in render_status([_va("b")], NOW, wide=True)
    assert render_status([], NOW) == "No VariantAutoscalings found.\n"


def test_config_names_the_origin_of_every_value() -> None:
    cm = {"data": {"default": "queueLengthThreshold: 7\n",
                   "m-llm": "model_id: m\nnamespace: llm\nkvCacheThreshold: 0.7\n",
                   "broken": "model_id: x\nkvCacheThreshold: 2\n"}}
    va = _va("a")
    other = _va("b", scaleToZero={"enabled": True, "retention": "20m"})
    view = effective_config(va, [va, other], cm, config_map_ref="wva/sat", direct_actuation=False)
    fields = {f.key: (f.value, f.source) for f in view.fields}
    assert view.entry == "m-llm"
    assert fields["kvCacheThreshold"] == (0.7, "ConfigMap wva/sat entry 'm-llm'")
    assert fields["queueLengthThreshold"] == (7.0, "ConfigMap wva/sat entry 'default'")
    assert fields["kvSpareTrigger"] == (0.1, "built-in default")
    assert fields["scaleToZero"] == (True, "VariantAutoscaling spec.scaleToZero of b")
    assert fields["scaleToZeroRetention"][0] == 1200.0
    assert fields["scaleDownStabilizationWindow"][0] == 0.0  # HPA path: no second window
    text = render_config(view)
    assert "llm/a: model m, ConfigMap entry 'm-llm'" in text and "warning: entry 'broken'" in text
    # a model without an entry of its own uses default; no ConfigMap at all: built-in values
    bare = effective_config(_va("c", model="n"), [], None, config_map_ref="wva/sat (not found)")
    assert bare.entry == "default" and all(f.source.startswith("built-in") for f in bare.fields)
    assert {f.key: f.value for f in bare.fields}["scaleDownStabilizationWindow"] == 300.0


def _records_file(tmp_path: Path) -> Path:
    meta = ReplicaMetricsMetadata(collected_at=1.0, source="prometheus")
    rows = [ReplicaMetrics(f"a-{i}", 0.79, 0, "a", "llm", "m", metadata=meta) for i in range(2)]
    record = decide_group("m", "llm", [VariantInput("a", current_replicas=2, previous_desired=2)], rows,
                          SaturationScalingConfig(), now=100.0).record
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps({"variantAutoscalings": {"llm/a": [record.to_dict()]}}))
    return path


def test_explain_reads_a_saved_file_with_a_namespace_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _records_file(tmp_path)
    assert main(["explain", "a", "-n", "llm", "--records", str(path)]) == 0
    out = capsys.readouterr().out
    assert "llm/a" in out and "ScaleUp" in out
    assert main(["explain", "llm/a", "--records", str(path), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "m"
    assert main(["explain", "llm/zzz", "--records", str(path)]) == 2
    assert "no records for llm/zzz" in capsys.readouterr().err
