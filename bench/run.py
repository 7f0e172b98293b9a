"""Scale benchmark: engine cycle cost for N VAs x 4 pods, collector v1 vs v2 per-model vs v2 batched.

Real Prometheus scrapes one emulator (in a child process) serving every pod. For each N the
operator's pieces are built directly (inventory, collector, saturation engine, a counting Kubernetes
client), a warm-up cycle runs, then ``--cycles`` measured cycles. Results go to
``bench/results/<date>.json``, ``.md`` and ``.png``. Run: ``python -m bench.run [--quick]``.

``v2-batched-decide-all`` is the batched mode with every group decided every cycle (no kept quiet
decisions), as in a fleet whose signals all move. ``v2-recorded`` is the batched mode with wva's
recording rules (deploy/prometheus/wva-recording-rules.yaml) loaded into the benchmark's Prometheus
for that mode only. ``--cpu-window S`` also measures
Prometheus' own CPU (``process_cpu_seconds_total``, rule evaluation included) over S seconds per
setting: idle (scraping only), the batched mode cycling every ``--cpu-tick`` seconds without rules,
and the recorded mode cycling with the rules loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from urllib3.util.retry import Retry

from bench.emulator_proc import EmulatorProcess
from bench.fleet import NAMESPACES, PODS_PER_VA, build_operator, fleet
from bench.report import BATCHED_MODES, DECIDE_ALL, MODES, markdown_table, plot
from wva.collector.v2.recording import DEFAULT_RULE_INTERVAL, RULE_GROUP, rules_file_text
from wva.gctuning import tune_gc
from wva.promconnect import MeteredPrometheusConnect
from wva.sim.prometheus import LocalPrometheus

log = logging.getLogger("bench")
RESULTS = Path(__file__).resolve().parent / "results"
RECORDING_RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "wva-recording-rules.yaml"
MODE_ORDER = ("v2-batched", "v2-batched-decide-all", "v2-recorded", "v2-per-model", "v1")
"""Light modes first: after thousands of per-model queries Prometheus stays busy for a while."""
RTT_SAMPLES = 20
SLOW_CYCLE = 15.0
MAX_WARMUPS = 4


class RecordingPrometheusConnect(MeteredPrometheusConnect):
    """Keeps the text of every query while ``recorded`` is a list (None: recording off)."""

    recorded: list[str] | None = None

    def custom_query(self, query: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        if self.recorded is not None:
            self.recorded.append(query)
        return super().custom_query(query, params=params, timeout=timeout)


def connect(url: str) -> RecordingPrometheusConnect:
    return RecordingPrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=30.0)


def prometheus_eval_seconds(url: str, queries: list[str]) -> float:
    """Prometheus' own evaluation time for ``queries`` (sum of ``execTotalTime``), each re-run once with
    ``stats=all``: the part of a cycle no client-side work can remove."""
    total = 0.0
    with requests.Session() as session:
        for query in queries:
            response = session.get(f"{url}/api/v1/query", params={"query": query, "stats": "all"}, timeout=30)
            response.raise_for_status()
            total += float(response.json()["data"]["stats"]["timings"]["execTotalTime"])
    return total


def prometheus_cpu_seconds(url: str) -> float:
    """Prometheus' own ``process_cpu_seconds_total`` from its /metrics."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    match = re.search(r"^process_cpu_seconds_total (\S+)$", text, flags=re.MULTILINE)
    if match is None:
        raise RuntimeError("Prometheus' /metrics has no process_cpu_seconds_total")
    return float(match.group(1))


def rule_group_stats(url: str) -> dict[str, float] | None:
    """The wva recording group's last evaluation time and interval (``/api/v1/rules``), if loaded."""
    groups = requests.get(f"{url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    for group in groups:
        if group["name"] == RULE_GROUP:
            return {"evaluation_seconds": float(group["evaluationTime"]), "interval_seconds": float(group["interval"])}
    return None


async def prometheus_cpu_window(url: str, seconds: float, tick: float, engine: Any | None) -> dict[str, Any]:
    """Prometheus' CPU over a fixed window of ``seconds``, ``engine`` (if any) cycling every ``tick`` seconds.

    Scrapes and rule evaluations run in it as always, so the figure is Prometheus' whole cost of the
    setting; compare it with an idle window (no engine) for the cycles' own share.
    """
    cpu0, t0 = prometheus_cpu_seconds(url), time.monotonic()
    cycles = 0
    while True:
        started = time.monotonic()
        if started - t0 >= seconds:
            break
        if engine is not None:
            await engine.run_cycle()
            cycles += 1
        await asyncio.sleep(max(0.0, min(t0 + seconds, started + tick) - time.monotonic()))
    elapsed, cpu = time.monotonic() - t0, prometheus_cpu_seconds(url) - cpu0
    return {
        "window_seconds": elapsed, "cycles": cycles, "cpu_seconds": cpu, "cpu_per_second": cpu / elapsed,
        "rule_group": rule_group_stats(url), "load_average": os.getloadavg(),
    }


class GCTimer:
    """Wall time spent in the garbage collector while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self)


def round_trip(url: str) -> float:
    prom = connect(url)
    prom.custom_query("vector(1)")  # open the connection first
    samples = []
    for _ in range(RTT_SAMPLES):
        t0 = time.perf_counter()
        prom.custom_query("vector(1)")
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def fresh_process_memory(url: str, n: int) -> dict[str, float]:
    """RSS of a fresh process holding the batched operator state for ``n`` VAs (``bench.memory``)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--url", url, "--n", str(n)],
        check=True, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def measure_mode(
    mode: str, n: int, url: str, cycles: int, cpu_window: float = 0.0, cpu_tick: float = 30.0
) -> tuple[dict[str, Any], Any]:
    prom = connect(url)
    op = build_operator(n, prom, mode)
    engine, kube = op.engine, op.kube
    await op.collector.start()
    try:
        # warm up to the steady state: the first cycles write every VA's status (and the fleet's
        # first decisions change it once more); measured cycles start after a cycle that wrote nothing
        warmups, warm_writes = 0, 0
        while True:
            t_warm, w_before = time.perf_counter(), kube.totals()[1]
            warm = await engine.run_cycle()
            warm_seconds = time.perf_counter() - t_warm
            warmups += 1
            wrote = kube.totals()[1] - w_before
            warm_writes += wrote
            if warm.group_errors:
                raise RuntimeError(f"{mode} N={n}: warm-up cycle had errors: {list(warm.group_errors.items())[:3]}")
            if len(warm.decisions) != n:
                raise RuntimeError(f"{mode} N={n}: {len(warm.decisions)} decisions for {n} VAs")
            if wrote == 0 or warmups >= MAX_WARMUPS:
                break
        walls, cpus, gcs, queries, reads, writes = [], [], [], [], [], []
        op.prefetch_seconds.clear()
        batcher = getattr(op.collector, "batcher", None)
        stats_before = batcher.stats if batcher is not None else None
        # a cycle longer than SLOW_CYCLE is one stable sample on its own: keep the whole run short
        for _ in range(1 if warm_seconds > SLOW_CYCLE else cycles):
            q0, (r0, w0), c0 = prom.queries, kube.totals(), time.process_time()
            prom.recorded = [] if mode in BATCHED_MODES else None
            with GCTimer() as gc_timer:
                report = await engine.run_cycle()
            cpus.append(time.process_time() - c0)
            gcs.append(gc_timer.seconds)
            walls.append(report.duration)
            queries.append(prom.queries - q0)
            r1, w1 = kube.totals()
            reads.append(r1 - r0)
            writes.append(w1 - w0)
            if report.group_errors:
                raise RuntimeError(f"{mode} N={n}: cycle errors {list(report.group_errors.items())[:3]}")
        phases = None
        if mode in ("v2-batched", DECIDE_ALL):
            # one more cycle under the profiler: where the CPU goes, by phase (bench.profile)
            from bench.profile import profiled_cycles

            shares, _functions = await profiled_cycles(engine, 1)
            cpu = statistics.median(cpus)
            phases = {phase: share * cpu for phase, share in shares.items()}
        measured = len(walls)
        recorded_stats = None
        if batcher is not None and stats_before is not None and mode == "v2-recorded":
            stats, was = batcher.stats, stats_before
            recorded_stats = {
                "recorded_prefetches_per_cycle": (stats.recorded_prefetches - was.recorded_prefetches) / measured,
                "raw_fallbacks_per_cycle": (stats.recorded_fallbacks - was.recorded_fallbacks) / measured,
                "per_model_queries_per_cycle": (stats.per_model_queries - was.per_model_queries) / measured,
            }
        evaluation = prometheus_eval_seconds(url, prom.recorded) if prom.recorded else None
        window = await prometheus_cpu_window(url, cpu_window, cpu_tick, engine) if cpu_window > 0 else None
        result = {
            "recording": recorded_stats,
            "prometheus_cpu_window": window,
            "cpu_seconds_per_cycle_by_phase": phases,
            "cycle_seconds": statistics.median(walls),
            "cycle_seconds_all": walls,
            "prometheus_queries_per_cycle": statistics.median(queries),
            "prometheus_queries_all": queries,
            "kube_mapping_calls_per_cycle": statistics.median(reads),
            "kube_write_calls_per_cycle": statistics.median(writes),
            "kube_write_calls_warmup": warm_writes,
            "warmup_cycles": warmups,
            "cpu_seconds_per_cycle": statistics.median(cpus),
            "gc_seconds_per_cycle": statistics.median(gcs),
            # the last cycle's queries, evaluated again by Prometheus with stats (batched mode only:
            # re-running thousands of per-model queries would double the run time)
            "prometheus_eval_seconds_per_cycle": evaluation,
            "batch_prefetch_seconds": statistics.median(op.prefetch_seconds) if op.prefetch_seconds else None,
            "decisions": len(warm.decisions),
        }
        keep = op
        return result, keep
    finally:
        await op.collector.stop()


def rules_file(interval: str | None, directory: Path) -> Path:
    """The shipped rules file, or (``interval`` given) the same rules evaluated every ``interval``."""
    if interval is None:
        return RECORDING_RULES
    path = directory / "wva-recording-rules.yaml"
    path.write_text(rules_file_text(interval), encoding="utf-8")
    return path


async def load_recording_rules(prometheus: LocalPrometheus, n: int, rules: Path) -> None:
    """Load the recording rules and wait until they have recorded every model of the fleet."""
    await asyncio.to_thread(prometheus.load_rules, [rules], [RULE_GROUP])
    t0 = time.monotonic()
    await prometheus.wait_for(
        'count(namespace_model:vllm_request_success:rate1m{namespace=~"bench-.*"})',
        lambda r: int(float(r[0]["value"][1])) == n,
        timeout=180.0,
    )
    print(f"  recording rules loaded, every model recorded after {time.monotonic() - t0:.1f}s", flush=True)


async def run(
    sizes: list[int], cycles: int, scrape_interval: float, modes_at: dict[int, tuple[str, ...]] | None = None,
    cpu_window: float = 0.0, cpu_tick: float = 30.0, memory: bool = True, rule_interval: str | None = None,
) -> dict[str, Any]:
    """``modes_at``: N -> the modes measured at that N (default: every mode at every N). ``cpu_window``
    > 0 measures Prometheus' CPU over that many seconds per setting (see :func:`prometheus_cpu_window`)."""
    started = time.monotonic()
    tune_gc()  # as `wva run` does
    emulator = EmulatorProcess()
    port = emulator.start()
    prometheus = LocalPrometheus([f"127.0.0.1:{port}"], scrape_interval=scrape_interval)
    prometheus.start()
    rules = rules_file(rule_interval, prometheus.data_dir.parent)
    stages: list[dict[str, Any]] = []
    try:
        prometheus.wait_for_blocking("up", timeout=60.0)
        added = 0
        for n in sorted(sizes):
            variants = fleet(n)[added:]
            pods = [p for v in variants for p in v.emulator_pods()]
            emulator.add_pods(pods)
            added = n
            want = n * PODS_PER_VA
            t0 = time.monotonic()
            await prometheus.wait_for(
                'count(vllm:kv_cache_usage_perc{namespace=~"bench-.*"})',
                lambda r, want=want: int(float(r[0]["value"][1])) == want,
                timeout=120.0,
            )
            # rate() needs two samples in its window: until then the optimizer metrics of new pods are
            # empty, which would make the mode measured first look cheaper than the others
            await prometheus.wait_for(
                'count(rate(vllm:request_success_total{namespace=~"bench-.*"}[1m]))',
                lambda r, want=want: bool(r) and int(float(r[0]["value"][1])) == want,
                timeout=120.0,
            )
            print(f"N={n}: {want} pods scraped, rate windows filled after {time.monotonic() - t0:.1f}s", flush=True)
            rtt = round_trip(prometheus.url)
            stage: dict[str, Any] = {"n": n, "pods": want, "rtt_seconds": rtt, "modes": {}}
            if cpu_window > 0:
                idle = await prometheus_cpu_window(prometheus.url, cpu_window, cpu_tick, None)
                stage["prometheus_cpu"] = {"idle": idle}
                print(f"  idle window: Prometheus CPU {idle['cpu_per_second'] * 1000:.0f} ms/s", flush=True)
            for mode in MODE_ORDER:
                if modes_at and mode not in modes_at.get(n, MODES):
                    continue
                gc.collect()
                if mode == "v2-recorded":
                    await load_recording_rules(prometheus, n, rules)
                    if cpu_window > 0:  # the rules' own cost: evaluated, but nobody reads them
                        quiet = await prometheus_cpu_window(prometheus.url, cpu_window, cpu_tick, None)
                        stage["prometheus_cpu"]["rules, no engine"] = quiet
                        print(f"  rules-only window: Prometheus CPU {quiet['cpu_per_second'] * 1000:.0f} ms/s",
                              flush=True)
                try:
                    result, _state = await measure_mode(mode, n, prometheus.url, cycles, cpu_window, cpu_tick)
                finally:
                    if mode == "v2-recorded":
                        await asyncio.to_thread(prometheus.load_rules, [], [])
                del _state
                window = result.pop("prometheus_cpu_window")
                if window is not None:
                    stage["prometheus_cpu"][mode] = window
                    print(f"  {mode} window: Prometheus CPU {window['cpu_per_second'] * 1000:.0f} ms/s "
                          f"({window['cycles']} cycles)", flush=True)
                result["cycle_rtt_multiple"] = result["cycle_seconds"] / rtt
                evaluation = result.get("prometheus_eval_seconds_per_cycle")
                # the target: a cycle costs little more than Prometheus' own evaluation of its queries
                result["cycle_to_prometheus_eval"] = result["cycle_seconds"] / evaluation if evaluation else None
                stage["modes"][mode] = result
                if mode == "v2-batched" and memory:
                    # before the per-model modes keep Prometheus busy for a while
                    stage["memory"] = await asyncio.to_thread(fresh_process_memory, prometheus.url, n)
                print(
                    f"  {mode:13s} cycle={result['cycle_seconds'] * 1000:8.1f} ms "
                    f"({result['cycle_rtt_multiple']:6.1f}x rtt) queries={result['prometheus_queries_per_cycle']:g} "
                    f"mapping calls={result['kube_mapping_calls_per_cycle']:g}",
                    flush=True,
                )
            scrape = prometheus.query('max(scrape_duration_seconds{job="vllm"})')
            up = prometheus.query('min(min_over_time(up{job="vllm"}[2m]))')
            stage["scrape_seconds"] = float(scrape[0]["value"][1]) if scrape else None
            stage["target_up"] = bool(up) and float(up[0]["value"][1]) == 1.0
            if not stage["target_up"]:
                print(f"  warning: the emulator target was down during N={n}; results are not valid", flush=True)
            stage["rss_mb"] = stage.get("memory", {}).get("rss_mb")
            stages.append(stage)
    finally:
        prometheus.close()
        emulator.stop()
    by_n = {s["n"]: s for s in stages if s.get("memory")}
    lo, hi = (min(by_n), max(by_n)) if by_n else (0, 0)
    growth = (by_n[hi]["rss_mb"] - by_n[lo]["rss_mb"]) / ((hi - lo) / 1000) if hi > lo else 0.0
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "setup": {
            "pods_per_va": PODS_PER_VA,
            "namespaces": NAMESPACES,
            "scrape_interval_seconds": scrape_interval,
            "measured_cycles": cycles,
            "warmup_cycles": f"until a cycle writes no status, at most {MAX_WARMUPS}",
            "cpu_window_seconds": cpu_window,
            "cpu_window_tick_seconds": cpu_tick,
            "recording_rules": str(RECORDING_RULES.relative_to(RECORDING_RULES.parents[2])),
            "rule_interval": rule_interval or DEFAULT_RULE_INTERVAL,
        },
        "rtt_samples": RTT_SAMPLES,
        "stages": stages,
        "memory": {
            # a fresh process per N holding one batched operator state (bench.memory)
            "baseline_rss_mb": by_n[lo]["memory"]["base_mb"],
            "peak_rss_mb": max(s["memory"]["peak_rss_mb"] for s in by_n.values()),
            "rss_growth_mb_per_1000_vas": growth,
        } if by_n else None,
        "total_seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated VA counts (default 10,100,1000)")
    parser.add_argument("--quick", action="store_true", help="N in {10, 100} and 2 measured cycles")
    parser.add_argument("--cycles", type=int, default=3, help="measured cycles per mode (median reported)")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--batched-only-from", type=int, default=None, metavar="N",
        help="from this N on, measure only the batched mode (the per-model modes take minutes per cycle there)",
    )
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated modes to measure (default: all of {', '.join(MODES)})")
    parser.add_argument("--cpu-window", type=float, default=0.0, metavar="SECONDS",
                        help="also measure Prometheus' CPU over this many seconds per setting (idle, raw, recorded)")
    parser.add_argument("--cpu-tick", type=float, default=30.0, metavar="SECONDS",
                        help="engine interval during the CPU windows (default 30, the operator's)")
    parser.add_argument("--rule-interval", default=None, metavar="DURATION",
                        help=f"evaluate the recording rules every DURATION (default: the shipped file's, "
                             f"{DEFAULT_RULE_INTERVAL})")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurement")
    parser.add_argument("--tag", default="", help="results file name suffix: <date>-<tag>.json")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    sizes = [10, 100] if args.quick else [int(x) for x in args.sizes.split(",") if x.strip()]
    cycles = 2 if args.quick else args.cycles
    modes_at = {
        n: tuple(m for m in modes if m in BATCHED_MODES or not (args.batched_only_from and n >= args.batched_only_from))
        for n in sizes
    }
    results = asyncio.run(run(sizes, cycles, args.scrape_interval, modes_at, args.cpu_window, args.cpu_tick,
                              memory=not args.no_memory, rule_interval=args.rule_interval))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (datetime.date.today().isoformat() + (f"-{args.tag}" if args.tag else ""))
    previous = previous_results(args.out, stem.with_suffix(".json").name)
    table = markdown_table(results)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(f"# wva benchmark {results['date']}\n\n{table}")
    skipped = plot(results, stem.with_suffix(".png"))
    print()
    print(table)
    print(f"results: {stem}.json, {stem}.md" + (f" ({skipped})" if skipped else f", {stem}.png"))
    print(f"total time: {results['total_seconds']:.0f}s")
    if previous is not None and not args.tag:
        print()
        print(comparison(previous, results))
    return 0


def previous_results(directory: Path, this_name: str) -> tuple[str, dict[str, Any]] | None:
    """The newest scale result in ``directory`` other than ``this_name`` (named <date>.json)."""
    candidates = sorted(
        p for p in directory.glob("*.json") if p.stem.count("-") == 2 and p.name != this_name
    )
    if not candidates:
        return None
    return candidates[-1].stem, json.loads(candidates[-1].read_text())


def comparison(previous: tuple[str, dict[str, Any]], results: dict[str, Any]) -> str:
    """Cycle time and CPU per N and mode, this run against ``previous`` (its date, its results)."""
    when, old = previous
    old_modes = {(s["n"], mode): m for s in old["stages"] for mode, m in s["modes"].items()}
    lines = [
        f"Compared with {when}:",
        "| N | mode | cycle ms (was) | CPU ms/cycle (was) |",
        "|---:|---|---:|---:|",
    ]
    for stage in results["stages"]:
        for mode, m in stage["modes"].items():
            was = old_modes.get((stage["n"], mode))
            cycle_was = f"{was['cycle_seconds'] * 1000:.1f}" if was else "-"
            cpu_was = f"{was['cpu_seconds_per_cycle'] * 1000:.1f}" if was else "-"
            lines.append(
                f"| {stage['n']} | {mode} | {m['cycle_seconds'] * 1000:.1f} ({cycle_was}) "
                f"| {m['cpu_seconds_per_cycle'] * 1000:.1f} ({cpu_was}) |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
