"""The benchmark's Markdown table and PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODES = ("v1", "v2-per-model", "v2-batched", "v2-batched-decide-all", "v2-recorded")
BATCHED_MODES = ("v2-batched", "v2-batched-decide-all", "v2-recorded")
DECIDE_ALL = "v2-batched-decide-all"
"""Batched, with no group keeping its quiet decision: every group decided every cycle, as in a fleet
whose signals all move (the benchmark's fleet is at its equilibrium: in ``v2-batched`` the groups keep
their decisions once settled)."""


def markdown_table(results: dict[str, Any]) -> str:
    head = (
        "| N VAs | pods | mode | cycle (ms) | x round trip | Prom queries/cycle | API calls/cycle: mapping "
        "| API calls/cycle: status writes | CPU/cycle (ms) | GC/cycle (ms) | batch prefetch (ms, x round trip) "
        "| Prometheus evaluation/cycle (ms, x round trip) |\n"
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for stage in results["stages"]:
        for mode in MODES:
            m = stage["modes"].get(mode)
            if m is None:
                continue
            prefetch = m.get("batch_prefetch_seconds") if mode in BATCHED_MODES else None
            pre = _ms_and_multiple(prefetch, stage["rtt_seconds"])
            evaluation = _ms_and_multiple(m.get("prometheus_eval_seconds_per_cycle"), stage["rtt_seconds"])
            gc_time = m.get("gc_seconds_per_cycle")
            rows.append(
                f"| {stage['n']} | {stage['pods']} | {mode} | {m['cycle_seconds'] * 1000:.1f} "
                f"| {m['cycle_rtt_multiple']:.1f} | {m['prometheus_queries_per_cycle']:g} "
                f"| {m['kube_mapping_calls_per_cycle']:g} | {m['kube_write_calls_per_cycle']:g} "
                f"| {m['cpu_seconds_per_cycle'] * 1000:.1f} | {'-' if gc_time is None else f'{gc_time * 1000:.1f}'} "
                f"| {pre} | {evaluation} |"
            )
    mem = results["memory"]
    rtts = ", ".join(f"N={s['n']}: {s['rtt_seconds'] * 1000:.2f} ms" for s in results["stages"])
    foot = f"\nPrometheus round trip (median of {results['rtt_samples']} `vector(1)` queries): {rtts}.  \n"
    if mem is not None:
        foot += (
            f"Operator RSS (a fresh process holding one batched operator state after its cycles; "
            f"{mem['baseline_rss_mb']:.1f} MB after the imports): "
            + ", ".join(f"N={s['n']}: {s['rss_mb']:.1f} MB" for s in results["stages"] if s.get("rss_mb"))
            + f"; peak {mem['peak_rss_mb']:.1f} MB; growth {mem['rss_growth_mb_per_1000_vas']:.1f} MB per 1000 VAs.\n"
        )
    return head + "\n".join(rows) + "\n" + foot + prometheus_cpu_table(results)


def prometheus_cpu_table(results: dict[str, Any]) -> str:
    """Prometheus' own CPU over the fixed windows (``--cpu-window``), when they were measured."""
    rows = []
    for stage in results["stages"]:
        for name, w in (stage.get("prometheus_cpu") or {}).items():
            group = w.get("rule_group")
            rules = "-" if group is None else (
                f"{group['evaluation_seconds'] * 1000:.1f} ms every {group['interval_seconds']:g} s "
                f"({group['evaluation_seconds'] / group['interval_seconds'] * 1000:.1f} ms/s)"
            )
            rows.append(
                f"| {stage['n']} | {name} | {w['window_seconds']:.0f} | {w['cycles']} "
                f"| {w['cpu_seconds']:.2f} | {w['cpu_per_second'] * 1000:.0f} | {rules} |"
            )
    if not rows:
        return ""
    return (
        "\nPrometheus' own CPU (`process_cpu_seconds_total`) over a fixed window, the engine cycling every "
        f"{results['setup'].get('cpu_window_tick_seconds', 30):g} s:\n\n"
        "| N VAs | window | seconds | cycles | Prometheus CPU (s) | Prometheus CPU (ms per s) "
        "| rule group evaluation |\n"
        "|---:|---|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )


def _ms_and_multiple(seconds: float | None, rtt: float) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ({seconds / rtt:.0f}x)"


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Cycle time against N for the three modes; returns why it was skipped, or None once written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[plot]'); skipped the plot"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in MODES:
        points = [(s["n"], s["modes"][mode]["cycle_seconds"] * 1000) for s in results["stages"] if mode in s["modes"]]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
    floor = [
        (s["n"], s["modes"]["v2-batched"]["prometheus_eval_seconds_per_cycle"] * 1000)
        for s in results["stages"]
        if s["modes"].get("v2-batched", {}).get("prometheus_eval_seconds_per_cycle")
    ]
    if floor:
        ax.plot([p[0] for p in floor], [p[1] for p in floor], linestyle=":", marker=".", color="black",
                label="Prometheus' own evaluation of the batched queries")
    rtt = [(s["n"], 10 * s["rtt_seconds"] * 1000) for s in results["stages"]]
    ax.plot([p[0] for p in rtt], [p[1] for p in rtt], linestyle="--", color="grey", label="10x round trip")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("VariantAutoscalings (4 pods each)")
    ax.set_ylabel("engine cycle wall time (ms)")
    ax.set_title("wva engine cycle time vs fleet size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
