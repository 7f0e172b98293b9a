"""What ``kubectl wva`` prints, as pure functions of API objects (no I/O): the status table and the
effective configuration of one VariantAutoscaling with where each value came from."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wva.decisions.decide import DEFAULT_STABILIZATION_WINDOW
from wva.saturation.config import (
    BUILTIN_DEFAULT,
    DEFAULT_ENTRY_KEY,
    TUNABLE_FIELDS,
    SaturationScalingConfig,
    parse_saturation_config_data,
    with_variant_overrides,
)
from wva.sim.tables import human_duration

__all__ = ["ConfigView", "FieldSource", "effective_config", "render_config", "render_status"]

STATUS_COLUMNS = ("NAMESPACE", "NAME", "MODEL", "ACCELERATOR", "CURRENT", "DESIRED", "METRICS", "REASON", "AGE",
                  "MESSAGE")


def _condition(va: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for c in (va.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return {}


def _age(stamp: Any, now: datetime.datetime) -> str:
    if not isinstance(stamp, str) or not stamp:
        return ""
    try:
        then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return human_duration((now - then).total_seconds())


def status_rows(vas: Sequence[Mapping[str, Any]], now: datetime.datetime) -> list[tuple[str, ...]]:
    rows = []
    for va in sorted(vas, key=lambda v: ((v.get("metadata") or {}).get("namespace", ""),
                                         (v.get("metadata") or {}).get("name", ""))):
        meta, spec, status = va.get("metadata") or {}, va.get("spec") or {}, va.get("status") or {}
        current = (status.get("currentAlloc") or {})
        desired = (status.get("desiredOptimizedAlloc") or {})
        decision = status.get("lastDecision") or {}
        metrics = _condition(va, "MetricsAvailable").get("status", "")
        rows.append(tuple(str(x) for x in (
            meta.get("namespace", ""), meta.get("name", ""), spec.get("modelID", ""),
            current.get("accelerator") or desired.get("accelerator") or "",
            current.get("numReplicas", ""), desired.get("numReplicas", ""), metrics,
            decision.get("reason", ""), _age(decision.get("time"), now),
            " ".join(str(decision.get("message", "")).split()),
        )))
    return rows


def render_status(vas: Sequence[Mapping[str, Any]], now: datetime.datetime, *, wide: bool = False) -> str:
    """A kubectl-like table: one line per VA, its replicas, the reason code of its last decision and
    how long ago it was made; ``wide`` adds the decision's message."""
    if not vas:
        return "No VariantAutoscalings found.\n"
    columns = STATUS_COLUMNS if wide else STATUS_COLUMNS[:-1]
    rows = [r[: len(columns)] for r in status_rows(vas, now)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [columns, *rows]]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class FieldSource:
    key: str  # the ConfigMap (camelCase) name
    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class ConfigView:
    namespace: str
    name: str
    model_id: str
    entry: str  # the ConfigMap entry in force for the model ("default" or an override's key)
    fields: tuple[FieldSource, ...]
    errors: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "name": self.name, "modelID": self.model_id, "entry": self.entry,
            "fields": {f.key: {"value": f.value, "from": f.source} for f in self.fields},
            "configMapErrors": dict(self.errors),
        }


def effective_config(
    va: Mapping[str, Any],
    model_vas: Sequence[Mapping[str, Any]],
    config_map: Mapping[str, Any] | None,
    *,
    config_map_ref: str,
    direct_actuation: bool = True,
) -> ConfigView:
    """The configuration the operator applies to ``va``'s model, field by field, with its origin.

    ``model_vas`` are the VAs of the same model in the namespace (their ``spec.scaleToZero`` merge,
    as the engine merges them); ``config_map`` is the saturation ConfigMap (None: not found).
    """
    from wva.inventory import parse_variant

    meta, spec = va.get("metadata") or {}, va.get("spec") or {}
    namespace, name, model_id = str(meta.get("namespace", "")), str(meta.get("name", "")), str(spec.get("modelID", ""))
    data = {str(k): str(v) for k, v in ((config_map or {}).get("data") or {}).items()}
    parsed = parse_saturation_config_data(data)
    key = parsed.entry_key(model_id, namespace)
    base: SaturationScalingConfig = parsed.entries.get(key, BUILTIN_DEFAULT)
    records = [parse_variant(v) for v in model_vas]
    effective = with_variant_overrides(base, (r.scale_to_zero for r in records))
    default_set = parsed.raw[DEFAULT_ENTRY_KEY].thresholds_set() if DEFAULT_ENTRY_KEY in parsed.raw else frozenset()
    entry_set = parsed.raw[key].thresholds_set() if key != DEFAULT_ENTRY_KEY and key in parsed.raw else frozenset()
    va_fields = {"scale_to_zero": [r.name for r in records if r.scale_to_zero.enabled is not None],
                 "scale_to_zero_retention": [r.name for r in records if r.scale_to_zero.retention is not None]}
    fields = []
    for attr, camel in TUNABLE_FIELDS.items():
        value: Any = getattr(effective, attr)
        if va_fields.get(attr):
            source = "VariantAutoscaling spec.scaleToZero of " + ", ".join(sorted(va_fields[attr]))
        elif attr in entry_set:
            source = f"ConfigMap {config_map_ref} entry {key!r}"
        elif attr in default_set:
            source = f"ConfigMap {config_map_ref} entry 'default'"
        else:
            source = "built-in default"
        if attr == "scale_down_stabilization_window" and value is None:
            value = DEFAULT_STABILIZATION_WINDOW if direct_actuation else 0.0
            source += " (unset: 300s with direct actuation, 0 on the HPA/KEDA path)"
        fields.append(FieldSource(camel, value, source))
    return ConfigView(namespace, name, model_id, key, tuple(fields), dict(parsed.errors))


def render_config(view: ConfigView) -> str:
    lines = [f"{view.namespace}/{view.name}: model {view.model_id}, ConfigMap entry {view.entry!r}"]
    width = max(len(f.key) for f in view.fields)
    shown = [(f.key, _show(f.value), f.source) for f in view.fields]
    value_width = max(len(v) for _k, v, _s in shown)
    lines += [f"  {k.ljust(width)}  {v.ljust(value_width)}  {s}" for k, v, s in shown]
    for _key, error in sorted(view.errors.items()):
        lines.append(f"  warning: {error}")
    return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
