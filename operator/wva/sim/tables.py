"""Server-side printing for the embedded local API: ``meta.k8s.io`` Tables built from printer columns.

``kubectl get`` asks the API server for a Table (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``)
and prints its columns; a real API server builds it from a CRD's ``additionalPrinterColumns``. This
module does the same for the VariantAutoscaling resource, so ``kubectl get va -w`` against the demo
shows the columns a cluster shows (current and optimized replicas, metrics readiness, the reason with
``-o wide``). It follows the apiextensions API server: the first column is the object's name, a
``string`` column prints its JSONPath result as text, ``integer``/``number``/``boolean`` cells are
JSON values, a ``date`` column is a relative age (``5m``), and a missing value is an empty cell.

Pure functions, no I/O; the JSONPath subset is what printer columns use: ``.a.b``, ``[0]``, ``[*]`` and
``[?(@.field=='value')]``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "VA_PRINTER_COLUMNS",
    "human_duration",
    "jsonpath",
    "table_for",
    "table_version_wanted",
]

VA_PRINTER_COLUMNS: tuple[Mapping[str, Any], ...] = (
    {"name": "Target", "type": "string", "jsonPath": ".spec.scaleTargetRef.name"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.modelID"},
    {"name": "Accelerator", "type": "string", "jsonPath": ".status.currentAlloc.accelerator"},
    {"name": "CurrentReplicas", "type": "integer", "jsonPath": ".status.currentAlloc.numReplicas"},
    {"name": "Optimized", "type": "string", "jsonPath": ".status.desiredOptimizedAlloc.numReplicas"},
    {"name": "MetricsReady", "type": "string", "jsonPath": ".status.conditions[?(@.type=='MetricsAvailable')].status"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.lastDecision.reason", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)
"""The CRD's ``additionalPrinterColumns`` (crds/llmd.ai_variantautoscalings.yaml; a test keeps them equal)."""

_NAME_COLUMN = {
    "name": "Name", "type": "string", "format": "name", "priority": 0,
    "description": "Name must be unique within a namespace.",
}
_TABLE_MEDIA = "application/json"


def table_version_wanted(accept: str) -> str | None:
    """``v1`` or ``v1beta1`` when the ``Accept`` header asks for a ``meta.k8s.io`` Table first, else None.

    kubectl lists ``as=Table;v=v1``, then ``v1beta1``, then plain ``application/json``: the first
    acceptable one wins, as on a real API server.
    """
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        attrs = dict(p.partition("=")[::2] for p in params)
        if media in (_TABLE_MEDIA, "*/*") and attrs.get("as") == "Table":
            if attrs.get("g") == "meta.k8s.io" and attrs.get("v") in ("v1", "v1beta1"):
                return attrs["v"]
            continue
        if media in (_TABLE_MEDIA, "*/*", "application/*"):
            return None  # plain JSON is preferred
    return None


def table_for(
    objects: Sequence[Mapping[str, Any]],
    columns: Sequence[Mapping[str, Any]],
    *,
    version: str = "v1",
    resource_version: str | None = None,
    include_object: str = "Metadata",
    headers: bool = True,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The ``Table`` of ``objects``: one row each, the name first, then ``columns`` (printer columns).

    ``include_object`` is the ``includeObject`` query parameter: ``Metadata`` (the default: each row
    carries a PartialObjectMetadata, which kubectl reads the namespace from), ``Object`` or ``None``.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    api_version = f"meta.k8s.io/{version}"
    table: dict[str, Any] = {"kind": "Table", "apiVersion": api_version, "metadata": {}}
    if resource_version is not None:
        table["metadata"]["resourceVersion"] = resource_version
    if headers:
        table["columnDefinitions"] = [_NAME_COLUMN] + [
            {"name": c["name"], "type": c["type"], "format": c.get("format", ""),
             "description": c.get("description", ""), "priority": int(c.get("priority", 0))}
            for c in columns
        ]
    else:
        table["columnDefinitions"] = None
    rows = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        cells: list[Any] = [meta.get("name", "")]
        cells += [_cell(c["type"], jsonpath(obj, c["jsonPath"]), now) for c in columns]
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = dict(obj)
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": meta}
        rows.append(row)
    table["rows"] = rows
    return table


def _cell(kind: str, results: list[Any], now: datetime.datetime) -> Any:
    """As the apiextensions server does: the first result, rendered by the column's type."""
    if not results or results[0] is None:
        return None
    value = results[0]
    if kind == "string":
        return _text(value)
    if kind == "integer":
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "date":
        if not isinstance(value, str):
            return None
        try:
            then = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "<invalid>"
        if then.tzinfo is None:
            then = then.replace(tzinfo=datetime.UTC)
        return human_duration((now - then).total_seconds())
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(value, separators=(",", ":"))


def human_duration(seconds: float) -> str:
    """Go's ``duration.HumanDuration``, which kubectl shows for ages: ``45s``, ``3m20s``, ``5h10m``, ``2d4h``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_-]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<star>\*)\]"""
    r"""|\[\?\(@(?P<path>(?:\.[A-Za-z0-9_-]+)+)\s*(?P<op>==|!=)\s*(?P<value>'[^']*'|"[^"]*"|-?[\d.]+|true|false)\)\]"""
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value ``path`` selects in ``obj`` (the printer-column subset of JSONPath); [] when none.

    Raises ValueError for a path outside the subset.
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    text = text.removeprefix("$")
    current: list[Any] = [obj]
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {text[pos:]!r}")
        pos = match.end()
        current = _step(current, match)
    return current


def _step(current: list[Any], match: re.Match[str]) -> list[Any]:
    out: list[Any] = []
    if match["field"] is not None:
        out = [v[match["field"]] for v in current if isinstance(v, Mapping) and match["field"] in v]
    elif match["index"] is not None:
        i = int(match["index"])
        out = [v[i] for v in current if isinstance(v, list) and -len(v) <= i < len(v)]
    elif match["star"] is not None:
        for v in current:
            if isinstance(v, list):
                out.extend(v)
            elif isinstance(v, Mapping):
                out.extend(v.values())
    else:
        wanted = _literal(match["value"])
        keys = match["path"].split(".")[1:]
        for v in current:
            for item in v if isinstance(v, list) else []:
                found = jsonpath(item, "." + ".".join(keys))
                equal = bool(found) and found[0] == wanted
                if equal == (match["op"] == "=="):
                    out.append(item)
    return out


def _literal(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)
