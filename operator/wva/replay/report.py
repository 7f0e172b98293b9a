"""What ``wva backtest`` shows and writes: text tables, ``timeline.csv``, ``backtest.json`` and ``backtest.png``.

Everything is built from :class:`~wva.replay.backtest.BacktestResult` objects (one per model file;
the first is "A", the second "B"). The text and dict builders are pure; only the ``write_*``
functions touch the file system. Times are UTC.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wva.durations import format_go_duration
from wva.replay.backtest import BacktestResult, ScaleEvent, Step

__all__ = [
    "LABELS",
    "SCHEMA",
    "backtest_dict",
    "comparison_dict",
    "comparison_table",
    "csv_rows",
    "header",
    "iso",
    "timeline_table",
    "totals_table",
    "write_csv",
    "write_json",
    "write_png",
]

SCHEMA = "wva.backtest/v1"
LABELS = ("A", "B")
CSV_COLUMNS = (
    "config", "time", "unix", "variant", "replicas", "ready", "target", "code",
    "recorded_pods", "recorded_kv", "recorded_queue", "kv_per_replica", "queue_per_replica", "saturated",
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


# --- formatting --------------------------------------------------------------------------------------
def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _clock(t: float, long_range: bool) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M" if long_range else "%H:%M:%S")


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell; ``right`` columns aligned right; a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value: float, digits: int = 2) -> str:
    text = f"{value:+.{digits}f}"
    return text if text.strip("+-0.") else f"{0:.{digits}f}"


def header(result: BacktestResult) -> str:
    count = len(result.steps)
    unknown = sum(1 for s in result.steps if not s.load.known)
    return (
        f"wva backtest: model {result.model} in namespace {result.namespace}, {iso(result.start)} to "
        f"{iso(result.end)}, step {format_go_duration(result.step_seconds)}, {count} steps "
        f"({unknown} with no data), startup delay {format_go_duration(result.startup_delay)}, "
        f"{result.queries} Prometheus queries"
    )


# --- timeline ----------------------------------------------------------------------------------------
def _sampled(count: int, samples: int) -> set[int]:
    """``samples`` step indexes spread evenly over ``count`` steps, first and last included."""
    if count <= 0 or samples <= 0:
        return set()
    if count <= samples:
        return set(range(count))
    return {round(i * (count - 1) / (samples - 1)) for i in range(samples)} if samples > 1 else {0}


def timeline_table(result: BacktestResult, variant: str, *, samples: int = 8, max_events: int = 30) -> str:
    """One variant's timeline: a row at each scale event (``*``) and at ``samples`` evenly spread steps."""
    event_times = [e.time for e in result.events if e.variant == variant]
    shown_events = set(event_times[:max_events])
    index = _sampled(len(result.steps), samples)
    long_range = result.end - result.start > 86_400
    rows = [(" ", "time", "replicas", "ready", "target", "kv/rep", "queue/rep", "code")]
    for i, step in enumerate(result.steps):
        is_event = step.time in shown_events
        if not is_event and i not in index:
            continue
        v = step.variant(variant)
        rows.append(("*" if is_event else "", _clock(step.time, long_range), str(v.replicas), str(v.ready),
                     str(v.target), _num(step.kv), "-" if step.queue is None else str(step.queue), v.code))
    lines = [f"Timeline of {variant} ({len(event_times)} scale events; * marks one):"]
    lines += _table(rows, right=frozenset({2, 3, 4, 5, 6}))
    if len(event_times) > max_events:
        lines.append(f"... {len(event_times) - max_events} more scale events in timeline.csv and backtest.json")
    return "\n".join(lines)


# --- totals ------------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    return format_go_duration(round(seconds))


def totals_table(result: BacktestResult) -> str:
    rows = [("variant", "cost/h", "replica-h", "cost", "ups", "downs", "min", "max", "final")]
    for t in result.totals:
        rows.append((t.variant, f"{t.cost_per_hour:g}", f"{t.replica_hours:.2f}", f"{t.cost:.2f}", str(t.scale_ups),
                     str(t.scale_downs), str(t.min_replicas), str(t.max_replicas), str(t.final_replicas)))
    rows.append(("total", "", f"{result.replica_hours:.2f}", f"{result.cost:.2f}",
                 str(sum(t.scale_ups for t in result.totals)), str(sum(t.scale_downs for t in result.totals)),
                 "", "", ""))
    lines = ["Totals:", *_table(rows, right=frozenset(range(1, 9)))]
    lines.append(f"Saturated {_duration(result.saturated_seconds)} "
                 f"({_share(result.saturated_seconds, result)}), no data {_duration(result.unknown_seconds)}")
    return "\n".join(lines)


def _share(seconds: float, result: BacktestResult) -> str:
    covered = result.step_seconds * len(result.steps)
    return f"{100.0 * seconds / covered:.1f}% of the range" if covered > 0 else "-"


def comparison_table(a: BacktestResult, b: BacktestResult) -> str:
    """Per variant replica-hours, cost and scale events of A and B, and B - A; then time saturated."""
    data = comparison_dict(a, b)
    rows = [("variant", "rep-h A", "rep-h B", "B-A", "cost A", "cost B", "B-A", "events A", "events B", "B-A")]
    for row in [*data["variants"], {"variant": "total", **data}]:
        hours, cost, events = row["replicaHours"], row["cost"], row["events"]
        rows.append((
            row["variant"], _num(hours["A"]), _num(hours["B"]), _signed(hours["delta"]),
            _num(cost["A"]), _num(cost["B"]), _signed(cost["delta"]),
            _count(events["A"]), _count(events["B"]), f"{events['delta']:+d}",
        ))
    lines = [f"Comparison: A = {a.source}, B = {b.source}"]
    lines += _table(rows, right=frozenset(range(1, 10)))
    delta = b.saturated_seconds - a.saturated_seconds
    sign = "-" if delta < 0 else "+"
    lines.append(f"Saturated: A {_duration(a.saturated_seconds)}, B {_duration(b.saturated_seconds)}, "
                 f"B-A {sign}{_duration(abs(delta))}")
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pair(a: float | int | None, b: float | int | None) -> dict[str, Any]:
    """A, B and B - A; a variant only one config has counts as 0 in the difference."""
    return {"A": a, "B": b, "delta": (b or 0) - (a or 0)}


def comparison_dict(a: BacktestResult, b: BacktestResult) -> dict[str, Any]:
    """B against A: per variant (by name; None where a config lacks the variant) and for the model."""
    names = list(dict.fromkeys([*a.variant_names, *b.variant_names]))
    rows = []
    for name in names:
        ta = next((t for t in a.totals if t.variant == name), None)
        tb = next((t for t in b.totals if t.variant == name), None)
        rows.append({
            "variant": name,
            "replicaHours": _pair(ta.replica_hours if ta else None, tb.replica_hours if tb else None),
            "cost": _pair(ta.cost if ta else None, tb.cost if tb else None),
            "events": _pair(ta.events if ta else None, tb.events if tb else None),
        })
    return {
        "variants": rows,
        "replicaHours": _pair(a.replica_hours, b.replica_hours),
        "cost": _pair(a.cost, b.cost),
        "events": _pair(len(a.events), len(b.events)),
        "saturatedSeconds": _pair(a.saturated_seconds, b.saturated_seconds),
    }


# --- CSV ---------------------------------------------------------------------------------------------
def _float(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def csv_rows(results: Sequence[BacktestResult]) -> list[list[str]]:
    """One row per step and variant per config, steps in time order within each config."""
    rows: list[list[str]] = []
    for index, result in enumerate(results):
        for step in result.steps:
            for v in step.variants:
                rows.append([
                    LABELS[index], iso(step.time), _float(step.time), v.variant, str(v.replicas), str(v.ready),
                    str(v.target), v.code, str(step.load.pods), _float(step.load.kv), _float(step.load.queue),
                    _float(step.kv), "" if step.queue is None else str(step.queue), str(step.saturated).lower(),
                ])
    return rows


def write_csv(path: Path, results: Sequence[BacktestResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_rows(results))


# --- JSON --------------------------------------------------------------------------------------------
def _step_dict(step: Step) -> dict[str, Any]:
    return {
        "time": step.time,
        "recordedPods": step.load.pods,
        "recordedKV": step.load.kv,
        "recordedQueue": step.load.queue,
        "kvPerReplica": step.kv,
        "queuePerReplica": step.queue,
        "saturated": step.saturated,
        "variants": {v.variant: {"replicas": v.replicas, "ready": v.ready, "target": v.target, "code": v.code}
                     for v in step.variants},
    }


def _event_dict(event: ScaleEvent) -> dict[str, Any]:
    return {"time": event.time, "at": iso(event.time), "variant": event.variant, "from": event.from_replicas,
            "to": event.to_replicas, "code": event.code, "message": event.message}


def _result_dict(label: str, result: BacktestResult) -> dict[str, Any]:
    return {
        "label": label,
        "file": result.source,
        "thresholds": result.config.thresholds(),
        "variants": [
            {"name": v.name, "deployment": v.deployment, "accelerator": v.accelerator, "cost": v.cost,
             "minReplicas": v.min_replicas, "maxReplicas": v.max_replicas, "initialReplicas": v.initial_replicas}
            for v in result.variants
        ],
        "totals": {
            "variants": [
                {"variant": t.variant, "costPerReplicaHour": t.cost_per_hour, "replicaHours": t.replica_hours,
                 "cost": t.cost, "scaleUps": t.scale_ups, "scaleDowns": t.scale_downs,
                 "minReplicas": t.min_replicas, "maxReplicas": t.max_replicas, "finalReplicas": t.final_replicas}
                for t in result.totals
            ],
            "replicaHours": result.replica_hours,
            "cost": result.cost,
            "saturatedSeconds": result.saturated_seconds,
            "unknownSeconds": result.unknown_seconds,
        },
        "events": [_event_dict(e) for e in result.events],
        "timeline": [_step_dict(s) for s in result.steps],
    }


def backtest_dict(results: Sequence[BacktestResult]) -> dict[str, Any]:
    """The whole run as one JSON-ready dict: meta, then per config its totals, events and timeline."""
    first = results[0]
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "meta": {
            "model": first.model,
            "namespace": first.namespace,
            "from": iso(first.start),
            "to": iso(first.end),
            "start": first.start,
            "end": first.end,
            "stepSeconds": first.step_seconds,
            "steps": len(first.steps),
            "unknownSteps": sum(1 for s in first.steps if not s.load.known),
            "startupDelaySeconds": first.startup_delay,
            "prometheusQueries": first.queries,
        },
        "configs": [_result_dict(LABELS[i], r) for i, r in enumerate(results)],
    }
    if len(results) == 2:
        data["comparison"] = comparison_dict(results[0], results[1])
    return data


def write_json(path: Path, results: Sequence[BacktestResult]) -> None:
    path.write_text(json.dumps(backtest_dict(results), indent=1) + "\n", encoding="utf-8")


# --- PNG ---------------------------------------------------------------------------------------------
def _load_series(result: BacktestResult) -> tuple[list[float], list[float], list[float]]:
    """Hours since the start, the recorded pods' mean KV and their total queue (NaN where unknown)."""
    hours = [(s.time - result.start) / 3600.0 for s in result.steps]
    kv = [s.load.kv / s.load.pods if s.load.kv is not None and s.load.pods else math.nan for s in result.steps]
    queue = [s.load.queue if s.load.queue is not None else math.nan for s in result.steps]
    return hours, kv, queue


def write_png(path: Path, results: Sequence[BacktestResult]) -> bool:
    """Load on top, replicas per variant and config below (B dashed); False when matplotlib is missing."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
        ticker: Any = importlib.import_module("matplotlib.ticker")
    except ImportError:
        return False
    first = results[0]
    hours, kv, queue = _load_series(first)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    top.plot(hours, kv, color="#333", label="KV-cache usage per recorded pod")
    top.set_ylabel("KV-cache usage")
    top.set_ylim(0, 1.05)
    waiting = top.twinx()
    waiting.plot(hours, queue, color="#ff7f0e", linewidth=1, label="waiting requests (all recorded pods)")
    waiting.set_ylabel("waiting requests")
    handles = top.get_legend_handles_labels()[0] + waiting.get_legend_handles_labels()[0]
    top.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper right")
    top.set_title(f"wva backtest: {first.model} in {first.namespace}, {iso(first.start)} to {iso(first.end)}, "
                  f"step {format_go_duration(first.step_seconds)}")
    names = list(dict.fromkeys(n for r in results for n in r.variant_names))
    for index, result in enumerate(results):
        style = "-" if index == 0 else "--"
        for n, name in enumerate(names):
            if name not in result.variant_names:
                continue
            replicas = [v.replicas for v in result.series(name)]
            bottom.step(hours, replicas, where="post", color=COLOURS[n % len(COLOURS)], linestyle=style,
                        label=f"{name} ({LABELS[index]})")
    bottom.set_ylabel("replicas")
    bottom.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    bottom.set_xlabel("hours since the start")
    bottom.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
