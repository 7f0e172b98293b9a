"""Where a batched engine cycle spends its CPU, by phase: ``python -m bench.profile [--n 1000]``.

``--record FILE`` runs the fleet of the scale benchmark against the real Prometheus (emulated pods,
as ``bench.run`` does), keeps the raw JSON of every answer of one cycle, and writes them to FILE.
``--replay FILE`` (the default mode once a recording exists) answers the same queries from FILE, decoding the
JSON again on every call as the HTTP client would, so a cycle's CPU can be profiled without
Prometheus in the loop and two versions of the code compared on identical input. The cycles run
under cProfile; every function's own time is attributed to a phase by the module it lives in, and
the table gives CPU milliseconds per cycle and per VA for each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import json
import logging
import pstats
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.fleet import PODS_PER_VA, CountingKube, build_operator, fleet
from wva.collector import MetricsCollector
from wva.gctuning import tune_gc
from wva.saturation.engine import SaturationEngine

# (phase, substrings of the code's file path), first match wins
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode (JSON)", ("/json/", "orjson")),
    ("HTTP", ("/requests/", "/urllib3/", "http/client.py", "/socket.py", "/ssl.py", "prometheus_api_client")),
    ("samples -> values", ("collector/v2/prometheus.py", "collector/v2/results.py")),
    ("split per model", ("collector/v2/batching.py",)),
    ("result cache", ("collector/v2/cache.py", "/cachetools/")),
    ("per-pod assembly", ("collector/v2/replica.py", "collector/v2/mapper.py", "collector/v2/collector.py",
                          "collector/v2/source.py", "collector/v2/query.py")),
    ("analysis", ("saturation/analyzer.py", "decisions/decide.py", "saturation/config.py")),
    ("decision records", ("decisions/",)),
    ("status diff and write", ("actuator/status.py",)),
    ("gauges", ("actuator/metrics.py", "prometheus_client")),
    ("grouping and engine", ("saturation/engine.py", "inventory.py", "coldstart.py")),
    ("pydantic", ("pydantic",)),
    ("logging", ("/logging/",)),
    ("event loop", ("/asyncio/", "selectors.py", "/concurrent/", "threading.py", "/queue.py")),
)


def phase_of(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    for phase, needles in PHASES:
        if any(n in filename for n in needles):
            return phase
    return "other"


class RecordingClient:
    """A real PrometheusConnect that keeps each answer (as JSON text) by query."""

    def __init__(self, url: str) -> None:
        from bench.run import connect

        self._prom = connect(url)
        self.answers: dict[str, str] = {}

    def custom_query(self, query: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        result = self._prom.custom_query(query, params=params, timeout=timeout)
        self.answers[query] = stamp_free(result)
        return result


NOW = '"@now@"'


def stamp_free(result: Any) -> str:
    """The answer as JSON with every sample's timestamp replaced by a marker the replay fills with the
    time of the call: recorded samples would otherwise turn stale, and the cycle take another path."""
    copy = json.loads(json.dumps(result))  # the caller keeps the real answer
    for series in copy if isinstance(copy, list) else []:
        if isinstance(series, dict) and isinstance(series.get("value"), list) and len(series["value"]) == 2:
            series["value"][0] = "@now@"
    return json.dumps(copy)


class ReplayClient:
    """Answers recorded queries; decodes the JSON on every call, as the HTTP client does."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.queries = 0

    def custom_query(self, query: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        self.queries += 1
        try:
            text = self.answers[query]
        except KeyError:
            raise RuntimeError(f"query not in the recording: {query[:200]}") from None
        return json.loads(text.replace(NOW, f"{time.time():.3f}"))


def build_engine(n: int, prom: Any) -> tuple[SaturationEngine, MetricsCollector, CountingKube]:
    op = build_operator(n, prom)
    return op.engine, op.collector, op.kube

async def record(n: int, path: Path, scrape_interval: float) -> None:
    from bench.emulator_proc import EmulatorProcess
    from wva.sim.prometheus import LocalPrometheus

    emulator = EmulatorProcess()
    port = emulator.start()
    prometheus = LocalPrometheus([f"127.0.0.1:{port}"], scrape_interval=scrape_interval)
    prometheus.start()
    try:
        emulator.add_pods([p for v in fleet(n) for p in v.emulator_pods()])
        want = n * PODS_PER_VA
        await prometheus.wait_for(
            'count(rate(vllm:request_success_total{namespace=~"bench-.*"}[1m]))',
            lambda r: bool(r) and int(float(r[0]["value"][1])) == want, timeout=180.0,
        )
        client = RecordingClient(prometheus.url)
        engine, collector, _kube = build_engine(n, client)
        await collector.start()
        try:
            report = await engine.run_cycle()
            if report.group_errors or len(report.decisions) != n:
                raise RuntimeError(f"recording cycle: {len(report.decisions)} decisions, errors {report.group_errors}")
        finally:
            await collector.stop()
        with gzip.open(path, "wt") as fh:
            json.dump({"n": n, "answers": client.answers}, fh)
        size = sum(len(a) for a in client.answers.values())
        print(f"recorded {len(client.answers)} answers ({size / 1e6:.1f} MB of JSON) for N={n} to {path}")
    finally:
        prometheus.close()
        emulator.stop()


async def _cycles(engine: SaturationEngine, count: int) -> list[float]:
    cpus = []
    for _ in range(count):
        c0 = time.process_time()
        report = await engine.run_cycle()
        cpus.append(time.process_time() - c0)
        if report.group_errors:
            raise RuntimeError(f"cycle errors: {list(report.group_errors.items())[:3]}")
    return cpus


QUERY_THREADS = "query threads (HTTP read, JSON decode)"


def phase_split(
    profiler: cProfile.Profile, other_threads: float = 0.0
) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """(phase -> share of the cycles' CPU, [(own seconds, function)]) from a finished profile.

    The profile measures the event loop's thread (its CPU time, so waiting for Prometheus costs
    nothing); ``other_threads`` is the CPU the process spent meanwhile in its other threads, the
    query threads that send the requests and decode the answers."""
    stats = pstats.Stats(profiler)
    by_phase: dict[str, float] = defaultdict(float)
    functions: list[tuple[float, str]] = []
    for (filename, line, name), (_cc, _nc, tottime, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        functions.append((tottime, f"{filename.rsplit('/operator/', 1)[-1]}:{line}({name})"))
        phase = phase_of(filename)
        if phase != "builtins" or not callers:
            by_phase[phase] += tottime
            continue
        # a builtin (dict.get, heappop, float()) counts for the phases of the code that called it
        per_caller = {caller: entry[2] for caller, entry in callers.items()}
        spent = sum(per_caller.values()) or 1.0
        for (caller_file, _l, _n), own in per_caller.items():
            by_phase[phase_of(caller_file)] += tottime * own / spent
    if other_threads > 0:
        by_phase[QUERY_THREADS] += other_threads
    total = sum(by_phase.values()) or 1.0
    shares = {phase: seconds / total for phase, seconds in sorted(by_phase.items(), key=lambda kv: -kv[1])}
    return shares, sorted(functions, reverse=True)


async def profiled_cycles(engine: SaturationEngine, cycles: int) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """Profile ``cycles`` cycles: the loop's thread by its own CPU time, the other threads as one phase."""
    profiler = cProfile.Profile(time.thread_time)
    thread0, process0 = time.thread_time(), time.process_time()
    profiler.enable()
    try:
        await _cycles(engine, cycles)
    finally:
        profiler.disable()
    own, process = time.thread_time() - thread0, time.process_time() - process0
    return phase_split(profiler, max(0.0, process - own))


def phase_table(shares: dict[str, float], cpu: float, n: int) -> str:
    lines = ["| phase | share | CPU ms per cycle | µs per VA |", "|---|---:|---:|---:|"]
    lines += [f"| {phase} | {share * 100:.0f} % | {share * cpu * 1000:.1f} | {share * cpu / n * 1e6:.0f} |"
              for phase, share in shares.items()]
    return "\n".join(lines)


async def replay(path: Path, cycles: int, top: int, reuse: bool = True) -> dict[str, Any]:
    with gzip.open(path, "rt") as fh:
        recording = json.load(fh)
    n = int(recording["n"])
    client = ReplayClient(recording["answers"])
    engine, collector, kube = build_engine(n, client)
    engine.reuse_decisions = reuse  # off: every group is decided again, as when every signal moves
    await collector.start()
    try:
        await _cycles(engine, 2)  # warm-up: first status writes, caches, gauges' label sets
        plain = await _cycles(engine, cycles)
        shares, functions = await profiled_cycles(engine, cycles)
    finally:
        await collector.stop()
    cpu = sorted(plain)[len(plain) // 2]
    print(f"N={n}, {cycles} cycles: CPU {cpu * 1000:.1f} ms per cycle ({cpu / n * 1e6:.0f} µs per VA) "
          f"without the profiler; {len(client.answers)} queries per cycle; {kube.totals()[0]} API reads in all")
    print()
    print(phase_table(shares, cpu, n))
    print()
    print(f"top {top} functions by own time (profiled):")
    for tottime, where in functions[:top]:
        print(f"  {tottime / cycles * 1000:7.1f} ms/cycle  {where}")
    return {"n": n, "cpu_seconds_per_cycle": cpu, "phase_shares": shares}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="VAs when recording (default 1000)")
    parser.add_argument("--record", type=Path, help="record one cycle's answers from the real Prometheus to FILE")
    parser.add_argument("--replay", type=Path, help="profile cycles answered from a recording")
    parser.add_argument("--cycles", type=int, default=5, help="profiled cycles (default 5)")
    parser.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="decide every group every cycle (no kept decisions), as when every signal moves")
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    tune_gc()
    if args.record:
        asyncio.run(record(args.n, args.record, args.scrape_interval))
    if args.replay or args.record:
        asyncio.run(replay(args.replay or args.record, args.cycles, args.top, reuse=not args.no_reuse))
    elif not args.record:
        parser.error("give --record FILE (needs Prometheus) or --replay FILE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
