"""``wva explain``'s text: a decision record, for a person.

Works on the record's JSON form (what ``/debug/decisions`` serves), so a live record, a saved one
and a recomputed one read the same. Pure: no I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from wva.decisions.codes import DESCRIPTIONS, ReasonCode

__all__ = ["counterfactuals", "render_explanation"]

Record = Mapping[str, Any]
_CODES = frozenset(code.value for code in ReasonCode)


def render_explanation(record: Record, variant: str) -> str:
    """The explanation of ``variant``'s decision in ``record`` (a DecisionRecord's ``to_dict()``)."""
    lines: list[str] = []
    namespace = record.get("namespace", "")
    result = _result(record, variant)
    thresholds = record.get("config", {}).get("thresholds", {})
    lines.append(f"{namespace}/{variant}: model {record.get('model')}, record {record.get('id')} at "
                 f"{_time(record.get('time'))}")
    lines.append(
        f"  config {record.get('config', {}).get('hash')}: "
        + ", ".join(f"{k} {_num(v)}" for k, v in thresholds.items())
        + f"  (wva {record.get('engineVersion')}, analyzer {record.get('analyzerVersion')}, "
        f"source {record.get('inputs', {}).get('source') or '-'})"
    )
    rules = record.get("config", {}).get("rules")
    if rules:
        lines.append("  rules: " + ", ".join(f"{k} {_rule(v)}" for k, v in rules.items()))
    lines.append("")
    if result is None:
        lines.append(f"This record has no result for {variant!r} (variants: "
                     f"{', '.join(r['variant'] for r in record.get('results', []))}).")
        return "\n".join(lines) + "\n"
    lines.append(f"Decision: {result['code']}: {result['message']}")
    lines.append(f"  target {result['target']} (current {result['current']}, previous decision "
                 f"{result['previousDesired'] or '-'}){'' if result['decided'] else '  [no fresh decision]'}")
    description = DESCRIPTIONS.get(ReasonCode(result["code"])) if result["code"] in _CODES else None
    if description:
        lines.append(f"  why: {description}")
    lines.append("")
    lines.extend(_pods_table(record.get("inputs", {}).get("pods", [])))
    lines.append("")
    lines.extend(_rules(record, thresholds))
    lines.append("")
    guards = record.get("guards", [])
    lines.append("Guards")
    if not guards:
        lines.append("  none changed the outcome")
    for g in guards:
        marker = "*" if g.get("variant") == variant else "-"
        lines.append(f"  {marker} {g['guard']} ({g['variant']}): {g['detail']}")
    lines.append("")
    lines.extend(_choice(record))
    lines.append("")
    lines.append("Variants")
    lines.extend(_table(
        ["VARIANT", "CURRENT", "PREVIOUS", "TARGET", "CODE"],
        [[r["variant"], str(r["current"]), str(r["previousDesired"] or "-"), str(r["target"]), r["code"]]
         for r in record.get("results", [])],
    ))
    lines.append("")
    nearest = counterfactuals(record)
    lines.append("Nearest change")
    lines.extend(f"  {text}" for text in nearest[:2] or ["none: no single signal is near a trigger"])
    shadow = record.get("shadow")
    if shadow:
        s_result = next((r for r in shadow.get("results", []) if r["variant"] == variant), None)
        lines.append("")
        lines.append(f"Shadow config {shadow['config']['hash']} ("
                     + ", ".join(f"{k} {_num(v)}" for k, v in shadow["config"]["thresholds"].items()) + ")")
        if s_result is not None:
            lines.append(f"  would decide {s_result['target']}: {s_result['code']}: {s_result['message']}")
    return "\n".join(lines) + "\n"


def counterfactuals(record: Record) -> list[str]:
    """The smallest changes of one signal that would change the model's rule, nearest first."""
    analysis = record.get("analysis")
    thresholds = record.get("config", {}).get("thresholds", {})
    if record.get("rule") == "at-zero":
        return ["comes back to one replica when requests queue at the gateway (the EPP flow-control queue)"]
    if record.get("rule") == "scale-to-zero":
        return ["would have kept its replicas had one request been served during scaleToZeroRetention"]
    if not analysis:
        why = record.get("inputs", {}).get("unavailable") or "no metrics"
        return [f"decides again once metrics are available ({why})"]
    kv_t = float(thresholds.get("kvSpareTrigger", 0.1))
    q_t = float(thresholds.get("queueSpareTrigger", 3.0))
    # distances compare as fractions of a replica's capacity (the saturation thresholds)
    kv_scale = float(thresholds.get("kvCacheThreshold", 0.8))
    q_scale = float(thresholds.get("queueLengthThreshold", 5.0))
    spare_kv, spare_q = float(analysis["spareKV"]), float(analysis["spareQueue"])
    rule = record.get("rule")
    found: list[tuple[float, str]] = []
    if rule == "scale-up":
        if spare_kv < kv_t:
            found.append(_cf("would not scale up if spare KV ≥", kv_t, spare_kv, 3, kv_scale))
        if spare_q < q_t:
            found.append(_cf("would not scale up if spare queue ≥", q_t, spare_q, 1, q_scale))
        return [text for _d, text in sorted(found)]
    found.append(_cf("would scale up if spare KV <", kv_t, spare_kv, 3, kv_scale))
    found.append(_cf("would scale up if spare queue <", q_t, spare_q, 1, q_scale))
    check = analysis.get("scaleDownCheck") or {}
    if rule == "scale-down":
        found = [
            _cf("would not scale down if spare KV after removing one replica <", kv_t,
                float(check.get("spareKVAfter", 0.0)), 3, kv_scale),
            _cf("would not scale down if spare queue after removing one replica <", q_t,
                float(check.get("spareQueueAfter", 0.0)), 1, q_scale),
        ]
    elif int(check.get("nonSaturated", 0)) >= 2:
        kv_after = float(check.get("spareKVAfter", 0.0))
        q_after = float(check.get("spareQueueAfter", 0.0))
        if kv_after < kv_t:
            found.append(_cf("would scale down if spare KV after removing one replica ≥", kv_t, kv_after, 3, kv_scale))
        if q_after < q_t:
            found.append(_cf("would scale down if spare queue after removing one replica ≥", q_t, q_after, 1, q_scale))
    else:
        found.append((1.0, f"would consider a scale-down with 2 or more non-saturated replicas (now "
                           f"{check.get('nonSaturated', 0)})"))
    return [text for _d, text in sorted(found)]


def _cf(prefix: str, trigger: float, now: float, digits: int, scale: float) -> tuple[float, str]:
    gap = abs(now - trigger)
    relative = gap / scale if scale > 0 else gap
    return relative, f"{prefix} {trigger:.{digits}f}; now {now:.{digits}f} ({gap:.{digits}f} away)"


def _result(record: Record, variant: str) -> Mapping[str, Any] | None:
    return next((r for r in record.get("results", []) if r.get("variant") == variant), None)


def _pods_table(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [f"Pods ({len(pods)})"]
    if not pods:
        return [*lines, "  none reported"]
    rows = []
    for p in pods:
        rows.append([
            p["variant"], p["pod"], _signal(p.get("kvCacheUsage"), p.get("kvState"), 3),
            _signal(p.get("queueLength"), p.get("queueState"), 0),
            "-" if p.get("age") is None else f"{float(p['age']):.1f}s", p.get("source") or "-",
        ])
    return lines + _table(["VARIANT", "POD", "KV", "QUEUE", "AGE", "SOURCE"], rows)


def _signal(value: Any, state: Any, digits: int) -> str:
    if state == "unknown" or value is None:
        return "unknown"
    return f"{float(value):.{digits}f}"  # a confirmed zero prints as 0; a missing series as "unknown"


def _rules(record: Record, thresholds: Mapping[str, Any]) -> list[str]:
    analysis = record.get("analysis")
    lines = ["Rules"]
    if not analysis:
        return [*lines, f"  no analysis: {record.get('inputs', {}).get('unavailable') or 'no metrics'}"]
    kv_c, q_c = _num(thresholds.get("kvCacheThreshold")), _num(thresholds.get("queueLengthThreshold"))
    kv_t, q_t = float(thresholds.get("kvSpareTrigger", 0.1)), float(thresholds.get("queueSpareTrigger", 3.0))
    total, non_sat = analysis["totalReplicas"], analysis["nonSaturated"]
    saturated = [pod for v in analysis.get("variants", []) for pod in v.get("saturatedPods", [])]
    lines.append(f"  1. saturated (KV ≥ {kv_c} or queue ≥ {q_c}): {total - non_sat} of {total}"
                 + (f" ({', '.join(saturated)})" if saturated else ""))
    kv, q = float(analysis["spareKV"]), float(analysis["spareQueue"])
    up = "fires" if analysis["scaleUp"] else "does not fire"
    lines.append(f"  2. scale-up: average spare over the {non_sat} non-saturated: KV {kv:.3f} "
                 f"{'<' if kv < kv_t else '≥'} {kv_t:.3f}, queue {q:.1f} {'<' if q < q_t else '≥'} {q_t:.1f}: {up}")
    check = analysis.get("scaleDownCheck") or {}
    if int(check.get("nonSaturated", 0)) < 2:
        lines.append(f"  3. scale-down (N-1 check): needs 2 non-saturated replicas, has {check.get('nonSaturated', 0)}")
    else:
        ka, qa = float(check["spareKVAfter"]), float(check["spareQueueAfter"])
        safe = "safe" if check.get("safe") else "not safe"
        lines.append(f"  3. scale-down (N-1 check, load of {check['nonSaturated']} on {check['nonSaturated'] - 1}): "
                     f"spare KV after {ka:.3f} {'≥' if ka >= kv_t else '<'} {kv_t:.3f}, spare queue after "
                     f"{qa:.1f} {'≥' if qa >= q_t else '<'} {q_t:.1f}: {safe}"
                     + ("" if analysis["scaleDownSafe"] == check.get("safe") else " (blocked by a guard)"))
    lines.append(f"  rule: {record.get('rule')}")
    return lines


def _choice(record: Record) -> list[str]:
    choice = record.get("choice")
    if not choice or choice.get("direction") == "none":
        return ["Choice: no step this cycle"]
    candidates = ", ".join(f"{c['variant']} (cost {_num(c['cost'])})" for c in choice.get("candidates", []))
    lines = [f"Choice: {choice['direction']}, {choice['order']}: {candidates or 'no eligible variant'}"
             f" -> {choice.get('chosen') or 'none'}"]
    if choice.get("excludedAtBound"):
        lines.append(f"  excluded at their bound: {', '.join(choice['excludedAtBound'])}")
    if choice.get("heldPending"):
        lines.append(f"  held, previous decision rolling out: {', '.join(choice['heldPending'])}")
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
    out = []
    for row in [header, *rows]:
        out.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return out


def _rule(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _num(value)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if not isinstance(value, float) else f"{value:g}"


def _time(value: Any) -> str:
    try:
        stamp = datetime.datetime.fromtimestamp(float(value), datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
