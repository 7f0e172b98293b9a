"""wva's Grafana dashboard: generated, not edited; structurally valid for its schema version; every
query refers to metrics the operator defines (or to vLLM's, which Prometheus scrapes from the pods).

The integration test tests/integration/test_dashboard_prometheus.py runs the same queries against a
real Prometheus scraping a running wva.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import monitoring
from binaries import unavailable
from monitoring import CHART_DASHBOARD, DASHBOARD, REPO

GENERATOR = REPO / "deploy" / "grafana" / "build_dashboard.py"
SCHEMA_VERSION = 36  # what the pinned grafana-foundation-sdk (Grafana 10.1 types) writes
PANEL_TYPES = {"row", "stat", "timeseries", "table"}
VARIABLE_TYPES = {"datasource", "query", "custom", "constant", "interval", "textbox", "adhoc"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def generator() -> Any:
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        unavailable("grafana-foundation-sdk is not installed: pip install -e '.[test]'")
    name = "wva_build_dashboard"
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return monitoring.load_dashboard()


def test_regenerating_gives_the_committed_json(generator: Any) -> None:
    text = generator.render()
    assert DASHBOARD.read_text(encoding="utf-8") == text, "run: python deploy/grafana/build_dashboard.py"
    assert CHART_DASHBOARD.read_text(encoding="utf-8") == text, "run: python deploy/grafana/build_dashboard.py"
    assert generator.main(["--check"]) == 0


def test_check_mode_reports_a_hand_edited_copy(generator: Any, tmp_path: Path, monkeypatch: Any) -> None:
    edited = tmp_path / "wva-dashboard.json"
    edited.write_text(generator.render().replace("Leading replicas", "Leaders"), encoding="utf-8")
    monkeypatch.setattr(generator, "REPO", tmp_path)
    monkeypatch.setattr(generator, "OUTPUTS", (edited,))
    assert generator.main(["--check"]) == 1


def test_the_sdk_models_read_the_json_back_unchanged(generator: Any, board: dict[str, Any]) -> None:
    """The SDK's types are generated from Grafana's dashboard schema: an unknown or misplaced field is dropped."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import dashboard

    plugins.register_default_plugins()
    back = json.loads(json.dumps(dashboard.Dashboard.from_json(board), cls=JSONEncoder))
    assert back == board


def test_dashboard_has_the_required_fields(board: dict[str, Any]) -> None:
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert isinstance(board["title"], str) and board["title"]
    assert isinstance(board["uid"], str) and 0 < len(board["uid"]) <= 40
    assert set(board["uid"]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    assert board["time"] == {"from": "now-3h", "to": "now"}
    assert isinstance(board["panels"], list) and board["panels"]
    assert isinstance(board["templating"]["list"], list)
    assert "id" not in board or board["id"] is None  # Grafana assigns the numeric id on import


def test_the_datasource_is_a_variable_every_panel_uses(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert all(v["type"] in VARIABLE_TYPES for v in variables.values())
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model", "variant"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE_REF
        monitoring.label_values(monitoring.variable_query(variables[name]))  # a label_values() query
        assert variables[name]["multi"] is True and variables[name]["includeAll"] is True
    # "All" namespaces and models match any value (also a missing label); "All" variants are the listed ones
    assert variables["namespace"]["allValue"] == variables["model"]["allValue"] == ".*"
    assert variables["variant"].get("allValue") in (None, "")
    for panel in monitoring.panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid_without_overlapping(board: dict[str, Any]) -> None:
    all_panels = list(monitoring.panels(board))
    ids = [p["id"] for p in all_panels]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert isinstance(panel["title"], str) and panel["title"]
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"}
        assert all(isinstance(pos[k], int) for k in pos)
        assert pos["h"] >= 1 and 1 <= pos["w"] <= 24 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert (pos["h"], pos["w"], pos["x"]) == (1, 24, 0)
            assert panel["collapsed"] is False and panel["panels"] == []
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_panel_has_queries_with_unique_ref_ids_and_a_description(board: dict[str, Any]) -> None:
    for panel in monitoring.panels(board):
        if panel["type"] == "row":
            continue
        assert panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_queried_metric_is_one_the_operator_defines(board: dict[str, Any]) -> None:
    defined = monitoring.operator_metric_names()
    used: set[str] = set()
    for query in monitoring.queries(board):
        names = monitoring.own_metric_names(query.expr)
        assert names or monitoring.metric_names(query.expr), f"{query.panel_title}: no metric in {query.expr!r}"
        unknown = names - defined
        assert not unknown, f"panel {query.panel_title!r} queries {sorted(unknown)}, which wva does not export"
        used |= names
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector, _label = monitoring.label_values(monitoring.variable_query(variable))
            assert monitoring.own_metric_names(selector) <= defined
    # the panels the issue asks for are there
    for name in ("wva_desired_replicas", "wva_current_replicas", "wva_ready_replicas", "wva_decision_reason",
                 "wva_scaling_decisions_total", "wva_reporting_replicas", "wva_metrics_source_active",
                 "wva_errors_total", "wva_engine_cycle_duration_seconds_bucket",
                 "wva_metrics_query_duration_seconds_bucket", "wva_metrics_queries_total", "wva_leader"):
        assert name in used, name
    vllm = {n for q in monitoring.queries(board) for n in monitoring.metric_names(q.expr)} - used
    assert vllm == {"vllm:kv_cache_usage_perc", "vllm:num_requests_waiting"}


def test_the_metric_check_catches_a_name_the_operator_does_not_export() -> None:
    defined = monitoring.operator_metric_names()
    expr = 'sum by (namespace) (rate(wva_made_up_total{namespace=~"$namespace"}[$__rate_interval])) / wva_leader'
    assert monitoring.own_metric_names(expr) - defined == {"wva_made_up_total"}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.99, sum by (le, source) (rate(wva_metrics_query_duration_seconds_bucket[5m])))',
         {"wva_metrics_query_duration_seconds_bucket"}),
        ('count(wva_decision_reason{reason=~"Hold.*|AtMax"}) or vector(0)', {"wva_decision_reason"}),
        ("max by (job) (wva_leader) == 1 unless on (job) sum by (job) (increase(wva_engine_cycles_total[5m])) > 0",
         {"wva_leader", "wva_engine_cycles_total"}),
        ('max by (pod) (max_over_time(vllm:kv_cache_usage_perc{namespace="a b",model_name="x"}[1m]))',
         {"vllm:kv_cache_usage_perc"}),
        ("up == 0 and on (job, instance) last_over_time(wva_leader[1h])", {"up", "wva_leader"}),
        ("wva_reporting_replicas / (wva_ready_replicas > 0) offset 5m", {"wva_reporting_replicas",
                                                                         "wva_ready_replicas"}),
    ],
)
def test_metric_names_are_parsed_out_of_promql(expr: str, names: set[str]) -> None:
    assert monitoring.metric_names(expr) == names


def test_the_alert_rules_use_only_metrics_the_operator_defines() -> None:
    defined = monitoring.operator_metric_names()
    for rule in monitoring.alert_rules():
        names = monitoring.own_metric_names(rule["expr"])
        assert names and names <= defined, (rule["alert"], sorted(names - defined))
