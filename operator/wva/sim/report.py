"""What ``wva demo`` shows: the live terminal view, the summary table and the chart (HTML and PNG).

Everything works from the per-cycle records the demo prints with ``--no-ui`` (plain dicts, see
docs/demo.md), so a saved ``records.jsonl`` can be re-rendered. Only :func:`write_outputs` and
:class:`LiveView` write anything.
"""

from __future__ import annotations

import html
import importlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

Record = dict[str, Any]
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


# --- summary ---------------------------------------------------------------------------------------
def summarize(records: Sequence[Record], meta: dict[str, Any]) -> dict[str, Any]:
    """Per-variant start/peak/final replicas, decisions made, and the load peak."""
    variants: dict[str, Any] = {}
    for name, spec in meta["variants"].items():
        rows = [r["variants"][name] for r in records if name in r["variants"]]
        desired = [row["desired"] for row in rows if row["desired"] is not None]
        first_up = next((r["t"] for r in records if r["variants"][name]["decision"] == "up"), None)
        variants[name] = {
            "accelerator": spec["accelerator"],
            "cost": spec["cost"],
            "maxReplicas": spec["maxReplicas"],
            "start": rows[0]["current"] if rows else spec["replicas"],
            "peak": max((row["pods"] for row in rows), default=spec["replicas"]),
            "final": rows[-1]["pods"] if rows else spec["replicas"],
            "maxDesired": max(desired, default=None),
            "scaleUps": sum(1 for row in rows if row["decision"] == "up"),
            "scaleDowns": sum(1 for row in rows if row["decision"] == "down"),
            "firstScaleUpAt": first_up,
            "peakKv": max((row["kv"] for row in rows), default=0.0),
        }
    return {
        "scenario": meta["scenario"],
        "metricsSource": meta["metrics_source"],
        "collector": meta["collector"],
        "cycles": len(records),
        "simulatedSeconds": records[-1]["t"] if records else 0.0,
        "realSeconds": records[-1]["elapsed"] if records else 0.0,
        "peakLoad": max((r["load"] for r in records), default=0.0),
        "errors": sum(len(r.get("errors") or []) for r in records),
        "variants": variants,
    }


def summary_table(summary: dict[str, Any]) -> str:
    head = (
        f"Summary: scenario {summary['scenario']!r}, {summary['cycles']} cycles, "
        f"{summary['simulatedSeconds']:.0f}s simulated in {summary['realSeconds']:.0f}s, "
        f"metrics from {summary['metricsSource']}, collector {summary['collector']}, "
        f"peak load {summary['peakLoad']:.1f} req/s"
    )
    cols = ("variant", "accel", "cost", "start", "peak", "final", "max", "ups", "downs", "1st up at", "peak KV")
    rows = [cols]
    for name, v in summary["variants"].items():
        first = "-" if v["firstScaleUpAt"] is None else f"{v['firstScaleUpAt']:.0f}s"
        rows.append((name, v["accelerator"], f"{v['cost']:g}", str(v["start"]), str(v["peak"]), str(v["final"]),
                     str(v["maxReplicas"]), str(v["scaleUps"]), str(v["scaleDowns"]), first, f"{v['peakKv']:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head, ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if summary["errors"]:
        lines.append(f"{summary['errors']} group errors were reported (see demo.log)")
    return "\n".join(lines)


# --- live view -------------------------------------------------------------------------------------
def _bar(fraction: float, width: int = 30) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_live(meta: dict[str, Any], record: Record, recent: Sequence[str]) -> str:
    lines = [
        f"wva demo - scenario {meta['scenario']!r} - metrics: {meta['metrics_source']} - "
        f"collector {meta['collector']} - {meta['speed']:g}x",
        f"{_bar(record['progress'])} {record['progress'] * 100:3.0f}%  t={record['t']:.0f}s of "
        f"{meta['duration']:.0f}s simulated, cycle {record['cycle']}",
        f"offered load {record['load']:6.1f} req/s   utilisation "
        + ("-" if record.get("rho") is None else f"{record['rho']:.2f}"),
        "",
        f"{'variant':<18}{'accel':<7}{'cost':>5}{'current':>9}{'desired':>9}{'max':>5}{'KV':>7}{'queue':>7}  decision",
    ]
    for name, v in record["variants"].items():
        spec = meta["variants"][name]
        desired = "-" if v["desired"] is None else str(v["desired"])
        lines.append(
            f"{name:<18}{spec['accelerator']:<7}{spec['cost']:>5g}{v['current']:>9}{desired:>9}"
            f"{spec['maxReplicas']:>5}{v['kv']:>7.2f}{v['queue']:>7}  {v['decision']}"
        )
    lines += ["", "recent decisions:"]
    lines += [f"  {line}" for line in recent] or ["  (none yet)"]
    for error in record.get("errors") or []:
        lines.append(f"  error: {error}")
    return "\n".join(lines)


class LiveView:
    """Redraws the view in place on a terminal; elsewhere prints one short line per cycle."""

    def __init__(self, meta: dict[str, Any], out: TextIO, keep: int = 8) -> None:
        self.meta = meta
        self.out = out
        self.keep = keep
        self.recent: list[str] = []
        self.tty = bool(getattr(out, "isatty", lambda: False)())

    def update(self, record: Record) -> None:
        for name, v in record["variants"].items():
            if v["decision"] in ("up", "down"):
                self.recent.append(f"t={record['t']:>5.0f}s {name} {v['current']} -> {v['desired']}: {v['reason']}")
        self.recent = self.recent[-self.keep:]
        if self.tty:
            width = shutil.get_terminal_size((120, 30)).columns
            text = "\n".join(line[:width] for line in render_live(self.meta, record, self.recent).splitlines())
            self.out.write("\x1b[H\x1b[J" + text + "\n")
        else:
            parts = " ".join(
                f"{n}={v['current']}->{v['desired'] if v['desired'] is not None else '-'}({v['decision']})"
                for n, v in record["variants"].items()
            )
            progress = f"{record['progress'] * 100:3.0f}%"
            self.out.write(f"t={record['t']:>6.0f}s {progress} load={record['load']:.1f} {parts}\n")
        self.out.flush()


# --- charts ----------------------------------------------------------------------------------------
def _series(records: Sequence[Record], meta: dict[str, Any]) -> dict[str, Any]:
    t = [r["t"] for r in records]
    return {
        "t": t,
        "load": [r["load"] for r in records],
        "pods": {n: [r["variants"][n]["pods"] for r in records] for n in meta["variants"]},
        "desired": {n: [r["variants"][n]["desired"] or 0 for r in records] for n in meta["variants"]},
        "kv": {n: [r["variants"][n]["kv"] for r in records] for n in meta["variants"]},
        "queue": {n: [r["variants"][n]["queue"] for r in records] for n in meta["variants"]},
    }


def _svg_panel(
    title: str, t: Sequence[float], lines: Sequence[tuple[str, Sequence[float], str, bool]], y_max: float,
    width: int = 860, height: int = 200,
) -> str:
    left, right, top, bottom = 55, 170, 28, 30
    pw, ph = width - left - right, height - top - bottom
    t_max = max(t[-1] if t else 1.0, 1e-9)
    y_max = max(y_max, 1e-9)

    def xy(x: float, y: float) -> str:
        return f"{left + pw * x / t_max:.1f},{top + ph * (1 - y / y_max):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for i in range(5):
        y = y_max * i / 4
        parts.append(f'<text x="{left - 6}" y="{top + ph * (1 - i / 4) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{y:.3g}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="11">0 s</text>')
    parts.append(f'<text x="{left + pw}" y="{height - 8}" font-size="11" text-anchor="end">'
                 f'{t_max:.0f} s (simulated)</text>')
    for i, (label, ys, colour, dashed) in enumerate(lines):
        if not ys:
            continue
        # replica counts are steps: hold each value until the next cycle
        points: list[str] = []
        for j, y in enumerate(ys):
            if j > 0:
                points.append(xy(t[j], ys[j - 1]))
            points.append(xy(t[j], y))
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{" ".join(points)}"/>')
        ly = top + 14 + 16 * i
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + pw + 34}" y="{ly}" font-size="11">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(records: Sequence[Record], meta: dict[str, Any], summary: dict[str, Any]) -> str:
    s = _series(records, meta)
    names = list(meta["variants"])
    colour = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}
    load_panel = _svg_panel("Offered load (requests/s)", s["t"], [("load", s["load"], "#333", False)],
                            max(s["load"], default=1.0) * 1.1)
    replica_lines = []
    for n in names:
        replica_lines.append((f"{n} pods", s["pods"][n], colour[n], False))
        replica_lines.append((f"{n} desired", s["desired"][n], colour[n], True))
    top_replicas = max([meta["variants"][n]["maxReplicas"] for n in names] + [1])
    replicas_panel = _svg_panel("Replicas (solid: running pods, dashed: wva's decision)", s["t"], replica_lines,
                                top_replicas + 1)
    kv_panel = _svg_panel("KV-cache usage per replica", s["t"],
                          [(n, s["kv"][n], colour[n], False) for n in names], 1.0)
    queue_panel = _svg_panel("Queue length per replica", s["t"],
                             [(n, s["queue"][n], colour[n], False) for n in names],
                             max([max(s["queue"][n], default=0) for n in names] + [5]) * 1.1)
    table = html.escape(summary_table(summary))
    data = html.escape(json.dumps({"meta": meta, "summary": summary}, indent=1))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>wva demo: {html.escape(meta['scenario'])}</title>"
        "<style>body{font-family:sans-serif;margin:24px;max-width:900px}pre{background:#f6f6f6;padding:8px;"
        "overflow-x:auto}</style></head><body>"
        f"<h1>wva demo: scenario {html.escape(meta['scenario'])}</h1>"
        f"<p>{html.escape(meta.get('description') or '')}</p>"
        f"<p>Metrics source: {html.escape(meta['metrics_source'])}; collector {html.escape(meta['collector'])}; "
        f"engine interval {meta['interval']:g}s simulated; {meta['speed']:g} simulated seconds per real second. "
        f"{html.escape(window_note(meta))}</p>"
        f"{load_panel}<br>{replicas_panel}<br>{kv_panel}<br>{queue_panel}"
        f"<h2>Summary</h2><pre>{table}</pre>"
        f"<details><summary>Run details</summary><pre>{data}</pre></details>"
        "</body></html>\n"
    )


def window_note(meta: dict[str, Any]) -> str:
    """With Prometheus, scale-down trails a drop by its one-minute window, in real seconds."""
    if meta["metrics_source"] != "prometheus":
        return ""
    return (
        f"Prometheus' [1m] window is 60 real s = {60 * meta['speed']:.0f} simulated s: "
        "scale-down trails a load drop by that much"
    )


def write_png(path: Path, records: Sequence[Record], meta: dict[str, Any]) -> bool:
    """The same chart as a PNG; False (nothing written) when matplotlib is not installed."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    s = _series(records, meta)
    names = list(meta["variants"])
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(s["t"], s["load"], color="#333")
    axes[0].set_ylabel("offered load (req/s)")
    axes[0].set_title(
        f"wva demo: scenario {meta['scenario']} ({meta['metrics_source']}, collector {meta['collector']})"
        + ("\n" + window_note(meta) if window_note(meta) else "")
    )
    for i, n in enumerate(names):
        c = COLOURS[i % len(COLOURS)]
        axes[1].step(s["t"], s["pods"][n], where="post", color=c, label=f"{n} pods")
        axes[1].step(s["t"], s["desired"][n], where="post", color=c, linestyle="--", label=f"{n} desired")
        # the router keeps every replica at the same utilisation, so the KV lines coincide: dash the others
        axes[2].plot(s["t"], s["kv"][n], color=c, linestyle="-" if i == 0 else "--", label=f"{n} KV usage")
    axes[1].set_ylabel("replicas")
    axes[1].legend(fontsize=8, loc="upper right")
    axes[2].set_ylabel("KV-cache usage")
    axes[2].set_ylim(0, 1.0)
    axes[2].set_xlabel("simulated seconds")
    axes[2].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_outputs(folder: Path, records: Sequence[Record], meta: dict[str, Any]) -> dict[str, Path | None]:
    """records.jsonl, summary.txt, chart.html and (with matplotlib) chart.png in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, meta)
    files: dict[str, Path | None] = {
        "records": folder / "records.jsonl",
        "summary": folder / "summary.txt",
        "html": folder / "chart.html",
        "png": folder / "chart.png",
    }
    with (folder / "records.jsonl").open("w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    (folder / "summary.txt").write_text(summary_table(summary) + "\n")
    (folder / "chart.html").write_text(render_html(records, meta, summary))
    if not write_png(folder / "chart.png", records, meta):
        files["png"] = None
    return files
