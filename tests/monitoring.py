"""The Grafana dashboard and alert rules as the tests read them: panels, queries, metric names.

Shared by the unit tests (schema, metric names against the operator's registry) and the
integration test that runs every query against a real Prometheus scraping a running wva.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "wva-dashboard.json"
CHART_DASHBOARD = REPO / "charts" / "workload-variant-autoscaler" / "files" / "wva-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "wva-alerts.yaml"
CHART_ALERTS = REPO / "charts" / "workload-variant-autoscaler" / "files" / "wva-alerts.yaml"
RECORDING_RULES = REPO / "deploy" / "prometheus" / "wva-recording-rules.yaml"
CHART_RECORDING_RULES = REPO / "charts" / "workload-variant-autoscaler" / "files" / "wva-recording-rules.yaml"

# series another exporter provides: vLLM's (scraped from the pods) and Prometheus' own ``up``
FOREIGN_PREFIXES = ("vllm:",)
FOREIGN_NAMES = frozenset({"up"})

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


@dataclass(frozen=True)
class Query:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(int(p["id"]), str(p.get("title", "")), str(t.get("refId", "")), str(t.get("expr", "")))
        for p in panels(dashboard)
        for t in p.get("targets", []) or []
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def own_metric_names(expr: str) -> set[str]:
    """The names of wva's own series among an expression's metrics."""
    return {n for n in metric_names(expr) if not n.startswith(FOREIGN_PREFIXES) and n not in FOREIGN_NAMES}


def exported_names(registry: Any) -> set[str]:
    """Every sample name a prometheus_client registry defines (counters' _total, histograms' _bucket ...)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def operator_metric_names() -> set[str]:
    """The names of every metric operator/wva defines (one MetricsEmitter holds them all)."""
    from wva.actuator.metrics import MetricsEmitter

    return exported_names(MetricsEmitter().registry)


def exposition_names(text: str) -> set[str]:
    """Metric names with at least one sample in a text exposition."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def substitute(expr: str, values: Mapping[str, str], rate_interval: str = "1m") -> str:
    """Replace Grafana's variables the way Grafana would, with the given values."""
    text = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, Mapping):
        return str(query.get("query", ""))
    return str(query or "")


def label_values(query: str) -> tuple[str, str]:
    """``label_values(selector, label)`` -> (selector, label)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query, flags=re.DOTALL)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group(1).strip(), match.group(2)


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]
