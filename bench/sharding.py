"""Sharding benchmark: one engine cycle of N VAs on one shard, and on each of K shards.

``python -m bench.sharding --n 10000 --shards 3``. The fleet, the emulator and the real Prometheus are
those of ``bench.run`` (N VAs x 4 pods, one model each, over 4 namespaces, collector v2 batched). Each
shard is a **subprocess** of its own (``--worker``), as each shard is a pod of its own in a cluster: its
CPU time and RSS are its own, and one shard's garbage or event loop never slows another. A worker builds
the operator's parts (inventory with the shard's assignment, fed the whole fleet as the watches would
feed it, collector, engine, status writer, a counting Kubernetes client), runs a warm-up cycle, reports
"ready", waits for "go" on stdin and runs the measured cycles.

Two runs for K shards:

- **isolated**: the workers one after the other, each alone on the machine: a shard's cycle as on a node
  of its own (the per-shard cost);
- **concurrent**: the K workers at once, their measured cycles started together: K shards sharing one
  Prometheus (and, here, the same two cores).

Results: ``bench/results/<date>-sharding.json`` and a Markdown table on stdout.
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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.emulator_proc import EmulatorProcess
from bench.fleet import NAMESPACES, PODS_PER_VA, build_operator, fleet
from bench.memory import peak_rss_mb, rss_mb
from bench.run import GCTimer, connect, prometheus_eval_seconds, round_trip
from wva.gctuning import tune_gc
from wva.sharding import ShardAssignment
from wva.sim.prometheus import LocalPrometheus

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SLOW_CYCLE = 15.0  # a cycle longer than this is measured once (as bench.run does)


# --- one shard (the worker process) -------------------------------------------------------------------
async def measure_shard(url: str, n: int, shards: int, index: int, cycles: int) -> dict[str, Any]:
    tune_gc()  # as `wva run` does
    base = rss_mb()
    prom = connect(url)
    t0 = time.perf_counter()
    op = build_operator(n, prom, shard=ShardAssignment(shards, index), query_timeout=120.0)
    populate_seconds = time.perf_counter() - t0  # the operator's parts and the whole fleet fed to them
    inventory, collector, engine, kube, prefetch = op.inventory, op.collector, op.engine, op.kube, op.prefetch_seconds
    vas = len(inventory.variants())
    await collector.start()
    try:
        started = time.perf_counter()
        warm = await engine.run_cycle()
        warm_seconds = time.perf_counter() - started
        if warm.group_errors or len(warm.decisions) != vas:
            raise RuntimeError(f"shard {index}/{shards}: warm-up decided {len(warm.decisions)} of {vas} VAs, "
                               f"errors {list(warm.group_errors.items())[:3]}")
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go": the measured cycles start together
        walls, cpus, gcs, queries, writes = [], [], [], [], []
        prefetch.clear()
        for _ in range(1 if warm_seconds > SLOW_CYCLE else cycles):
            q0, (_r0, w0), c0 = prom.queries, kube.totals(), time.process_time()
            prom.recorded = []
            with GCTimer() as gc_timer:
                report = await engine.run_cycle()
            cpus.append(time.process_time() - c0)
            gcs.append(gc_timer.seconds)
            walls.append(report.duration)
            queries.append(prom.queries - q0)
            writes.append(kube.totals()[1] - w0)
            if report.group_errors:
                raise RuntimeError(f"shard {index}/{shards}: cycle errors {list(report.group_errors.items())[:3]}")
        recorded = prom.recorded or []
        prom.recorded = None
        gc.collect()
        return {
            "shards": shards,
            "index": index,
            "vas": vas,
            "model_groups": inventory.model_groups,
            "engine_groups": report.groups,
            "populate_seconds": populate_seconds,
            "warmup_seconds": warm_seconds,
            "cycle_seconds": statistics.median(walls),
            "cycle_seconds_all": walls,
            "cpu_seconds_per_cycle": statistics.median(cpus),
            "cpu_seconds_all": cpus,
            "gc_seconds_per_cycle": statistics.median(gcs),
            "batch_prefetch_seconds": statistics.median(prefetch) if prefetch else None,
            "prometheus_queries_per_cycle": statistics.median(queries),
            "kube_write_calls_per_cycle": statistics.median(writes),
            "cycle_query_texts_bytes": sum(len(q) for q in recorded),
            "rss_base_mb": base,
            "rss_mb": rss_mb(),
            "peak_rss_mb": peak_rss_mb(),
            "_queries": recorded,
        }
    finally:
        await collector.stop()


def worker_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    result = asyncio.run(measure_shard(args.url, args.n, args.shards, args.index, args.cycles))
    print(json.dumps(result), flush=True)
    return 0


# --- the parent: Prometheus, the emulator, the workers --------------------------------------------------
def _worker(url: str, n: int, shards: int, index: int, cycles: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.sharding", "--worker", "--url", url, "--n", str(n), "--shards", str(shards),
         "--index", str(index), "--cycles", str(cycles)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )


def _await_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"a shard worker did not get ready: {line!r} (exit {proc.wait()})")


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"a shard worker failed with exit {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def _go(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def run_shards(url: str, n: int, shards: int, cycles: int, concurrent: bool) -> list[dict[str, Any]]:
    """Every shard of ``shards`` measured once: one after the other, or all at once."""
    if not concurrent:
        results = []
        for index in range(shards):
            proc = _worker(url, n, shards, index, cycles)
            _await_ready(proc)
            _go([proc])
            results.append(_finish(proc))
        return results
    procs = [_worker(url, n, shards, index, cycles) for index in range(shards)]
    for proc in procs:  # every warm-up done before any measured cycle starts
        _await_ready(proc)
    _go(procs)
    return [_finish(proc) for proc in procs]


async def wait_for_fleet(prometheus: LocalPrometheus, n: int) -> None:
    want = n * PODS_PER_VA
    await prometheus.wait_for(
        'count(vllm:kv_cache_usage_perc{namespace=~"bench-.*"})',
        lambda r: int(float(r[0]["value"][1])) == want, timeout=600.0,
    )
    # rate() needs two samples in its window, or the optimizer metrics are empty (a cheaper cycle)
    await prometheus.wait_for(
        'count(rate(vllm:request_success_total{namespace=~"bench-.*"}[1m]))',
        lambda r: bool(r) and int(float(r[0]["value"][1])) == want, timeout=600.0,
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "max_cycle_seconds": max(r["cycle_seconds"] for r in runs),
        "max_cpu_seconds_per_cycle": max(r["cpu_seconds_per_cycle"] for r in runs),
        "total_cpu_seconds_per_cycle": sum(r["cpu_seconds_per_cycle"] for r in runs),
        "max_rss_mb": max(r["rss_mb"] for r in runs),
        "vas": [r["vas"] for r in runs],
    }


def run(n: int, shards: int, cycles: int, scrape_interval: float) -> dict[str, Any]:
    started = time.monotonic()
    load_start = os.getloadavg()
    emulator = EmulatorProcess()
    port = emulator.start()
    prometheus = LocalPrometheus([f"127.0.0.1:{port}"], scrape_interval=scrape_interval)
    prometheus.start()
    try:
        prometheus.wait_for_blocking("up", timeout=60.0)
        emulator.add_pods([p for v in fleet(n) for p in v.emulator_pods()], timeout=600.0)
        asyncio.run(wait_for_fleet(prometheus, n))
        print(f"N={n}: {n * PODS_PER_VA} pods scraped after {time.monotonic() - started:.0f}s", flush=True)
        rtt = round_trip(prometheus.url)
        # one shard first and again last: the difference is the drift of the machine and of Prometheus
        plan = [("one shard", 1, False), (f"{shards} shards, isolated", shards, False),
                (f"{shards} shards, concurrent", shards, True), ("one shard, again", 1, False)]
        out: dict[str, Any] = {}
        evaluation: dict[str, float] = {}
        for label, count, concurrent in plan:
            runs = run_shards(prometheus.url, n, count, cycles, concurrent)
            for r in runs:
                queries = r.pop("_queries")
                if not concurrent and label not in evaluation and queries:
                    evaluation[label] = prometheus_eval_seconds(prometheus.url, queries)
            out[label] = {"shards": count, "concurrent": concurrent, "runs": runs, **summarize(runs)}
            print(f"  {label:24s} " + "  ".join(
                f"[{r['index']}] vas={r['vas']} cycle={r['cycle_seconds'] * 1000:.0f}ms "
                f"cpu={r['cpu_seconds_per_cycle'] * 1000:.0f}ms rss={r['rss_mb']:.0f}MB" for r in runs), flush=True)
        scrape = prometheus.query('max(scrape_duration_seconds{job="vllm"})')
        up = prometheus.query('min(min_over_time(up{job="vllm"}[2m]))')
    finally:
        prometheus.close()
        emulator.stop()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "setup": {"n": n, "pods": n * PODS_PER_VA, "namespaces": NAMESPACES, "shards": shards,
                  "measured_cycles": cycles, "warmup_cycles": 1, "scrape_interval_seconds": scrape_interval,
                  "collector": "v2 batched", "process_per_shard": True},
        "load_average": {"start": load_start, "end": os.getloadavg()},  # other work on the machine
        "rtt_seconds": rtt,
        # Prometheus' own evaluation of the last cycle's queries of one shard, re-run alone with stats
        "prometheus_eval_seconds_per_cycle": evaluation,
        "scrape_seconds": float(scrape[0]["value"][1]) if scrape else None,
        "target_up": bool(up) and float(up[0]["value"][1]) == 1.0,
        "results": out,
        "total_seconds": time.monotonic() - started,
    }


def markdown_table(results: dict[str, Any]) -> str:
    rows = ["| run | shard | VAs | model groups | cycle (ms) | CPU/cycle (ms) | batch prefetch (ms) "
            "| Prom queries/cycle | RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, entry in results["results"].items():
        for r in entry["runs"]:
            prefetch = r["batch_prefetch_seconds"]
            rows.append(
                f"| {label} | {r['index']} | {r['vas']} | {r['model_groups']} | {r['cycle_seconds'] * 1000:.0f} "
                f"| {r['cpu_seconds_per_cycle'] * 1000:.0f} | {'-' if prefetch is None else f'{prefetch * 1000:.0f}'} "
                f"| {r['prometheus_queries_per_cycle']:g} | {r['rss_mb']:.0f} |"
            )
    evaluation = ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in results["prometheus_eval_seconds_per_cycle"].items())
    return "\n".join(rows) + (f"\n\nPrometheus' own evaluation of one shard's cycle queries: {evaluation}; round trip "
                              f"{results['rtt_seconds'] * 1000:.2f} ms.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sharding", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="VAs (x 4 pods), default 1000")
    parser.add_argument("--shards", type=int, default=3, help="shards to compare with one, default 3")
    parser.add_argument("--cycles", type=int, default=3, help="measured cycles per shard (median reported)")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    results = run(args.n, args.shards, args.cycles, args.scrape_interval)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{datetime.date.today().isoformat()}-sharding.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(markdown_table(results))
    print(f"results: {path}; total time: {results['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
