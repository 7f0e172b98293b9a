"""Soak benchmark: the whole operator for a long run under churn; its resources must not grow.

``python -m bench.soak`` (or ``make soak``) runs, in this process, the real operator exactly as
``wva run`` assembles it: kopf with wva's handlers and ``wva.runtime.Runtime`` (collector v2, batched
queries, leader election on a Lease, the engine on its own interval, the HTTP server, the periodic
inventory resync), with ``wva run``'s garbage-collector settings. Everything it talks to runs
elsewhere, so this process holds only the operator:

- the embedded Kubernetes API (``wva.sim.local_api``, the kmock-based server the reliability tests
  use), the workloads, the vLLM emulator and the churn run in a child process (``bench.soak_cluster``);
- the real Prometheus (``wva.sim.prometheus.LocalPrometheus``) is a child process scraping the
  emulator every 5 s; it is stopped once in the middle of the soak and started again on the same port.

N variants (default 1000) with 4 pods each are created first. Then, for ``--duration`` (default 20
minutes): variants are replaced continuously (the oldest deleted with its Deployment and pods, a new
one created under a new name and model) and pods restarted under new names. Every ``--sample-interval``
(default one minute) the process's RSS, open file descriptors, asyncio tasks and threads are sampled.

The comparison is between two *quiescent* samples, taken the same way: at the end of the warm-up and
at the end of the run, each with churn paused, after two complete engine cycles and a full garbage
collection, as the minimum of each measure over one engine interval (kopf's per-object workers and a
cycle's own tasks come and go within it). The run fails (exit status 1) when, between them:

- RSS grew by more than the larger of 15 % and 30 MiB,
- open file descriptors grew by more than 20,
- asyncio tasks are more than 10 away from the baseline, or threads more than 4,

or when the operator lost track of the cluster: after the run, the inventory must hold exactly the
live variants and pods, the last cycle must have decided every variant without a group error, every
variant must have exactly one gauge series and every live VA a decision in its status.

Figures go to ``bench/results/<date>-soak.json`` (every sample) and ``<date>-soak.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_cluster import NAMESPACES, ClusterProcess
from wva.durations import parse_duration

log = logging.getLogger("bench.soak")
RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
OPERATOR_NAMESPACE = "wva-system"

# the bounds (baseline = the quiescent sample after the warm-up, final = the one at the end)
RSS_GROWTH_FRACTION = 0.15
RSS_GROWTH_MIB = 30.0
FD_GROWTH = 20
TASK_DELTA = 10
THREAD_DELTA = 4


@dataclass
class Options:
    n: int = 1000
    pods_per_va: int = 4
    duration: float = 1200.0
    warmup: float | None = None  # None: 15 % of the duration, within [30 s, 180 s]
    sample_interval: float = 60.0
    interval: float = 10.0  # GLOBAL_OPT_INTERVAL
    churn_vas_per_minute: float = 30.0
    churn_pods_per_minute: float = 120.0
    churn_step: float = 5.0
    scrape_interval: float = 5.0
    outage: float = 60.0
    out: Path = RESULTS

    @property
    def warmup_seconds(self) -> float:
        if self.warmup is not None:
            return self.warmup
        return min(180.0, max(30.0, 0.15 * self.duration))


# --- what is measured --------------------------------------------------------------------------
def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    """Every thread of the process (Python's and native ones), from the kernel."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return threading.active_count()


def _kind_of_fd(target: str) -> str:
    for prefix in ("socket", "pipe", "anon_inode"):
        if target.startswith(prefix):
            return prefix
    return "file"


def breakdown() -> dict[str, dict[str, int]]:
    """What the counted tasks, threads and fds are (by coroutine, thread name and fd kind): the diagnosis
    when a bound is exceeded."""
    fds: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds[_kind_of_fd(os.readlink(f"/proc/self/fd/{fd}"))] += 1
    tasks = Counter(getattr(t.get_coro(), "__qualname__", type(t.get_coro()).__name__) for t in asyncio.all_tasks())
    threads = Counter(t.name.rstrip("0123456789_-") or t.name for t in threading.enumerate())
    return {"tasks": dict(tasks.most_common()), "threads": dict(threads.most_common()), "fds": dict(fds)}


def thread_pools() -> dict[str, list[int]]:
    """The worker threads of every live ``ThreadPoolExecutor`` by name prefix: [threads, max_workers, pools].

    A pool starts its workers lazily, up to ``max_workers``, and keeps them: a pool that reaches its
    maximum only under load (the Prometheus outage makes every query wait) has grown, not leaked.
    """
    from concurrent.futures import thread as futures_thread

    pools: dict[int, Any] = {}
    for t in threading.enumerate():
        if getattr(t, "_target", None) is futures_thread._worker:
            executor = t._args[0]()  # type: ignore[attr-defined]  # the worker's weak reference to its pool
            if executor is not None:
                pools[id(executor)] = executor
    out: dict[str, list[int]] = {}
    for executor in pools.values():
        prefix = executor._thread_name_prefix.split("ThreadPoolExecutor-")[0] or "ThreadPoolExecutor"
        entry = out.setdefault(prefix, [0, 0, 0])
        entry[0] += len(executor._threads)
        entry[1] += executor._max_workers
        entry[2] += 1
    return out


def measure() -> dict[str, float]:
    return {
        "rss_mib": rss_mib(),
        "fds": open_fds(),
        "tasks": len(asyncio.all_tasks()),
        "threads": os_threads(),
        "python_threads": threading.active_count(),
        # blocks held by Python's allocator: unlike RSS, blind to arenas the allocator keeps after a peak
        "allocated_blocks": sys.getallocatedblocks(),
    }


class CycleTracker:
    """Wraps the engine's ``run_cycle``: counts cycles, keeps the last report, knows when one is running."""

    def __init__(self, engine: Any, clock_zero: float) -> None:
        self.engine = engine
        self.completed = 0
        self.running = False
        self.last: Any = None
        self.last_decided = 0  # decisions made from fresh metrics (not held) in the last cycle
        self.held_cycles = 0  # cycles that held some decisions: a group error, or no fresh decision at all
        self.durations: list[float] = []
        self.errored_cycles = 0
        self.group_error_cycles = 0
        self.ended_at = 0.0
        self.created = clock_zero  # cycle times on the soak's clock
        self.log: list[tuple[float, float, int, int, int]] = []  # (t, seconds, decisions, fresh, group errors)
        self.held_codes: list[dict[str, int]] = []  # per cycle: the reason codes of the decisions held
        self._inner = engine.run_cycle
        engine.run_cycle = self._run_cycle

    def _held_codes(self, report: Any) -> dict[str, int]:
        series = getattr(self.engine.emitter, "_reason_series", {})
        codes = Counter(str(series[key][3]) if key in series else "?"
                        for key, decision in report.decisions.items() if not decision.decided)
        return dict(codes)

    async def _run_cycle(self) -> Any:
        self.running = True
        try:
            report = await self._inner()
        except BaseException:
            self.errored_cycles += 1
            raise
        finally:
            self.running = False
            self.ended_at = time.monotonic()
        self.completed += 1
        self.log.append((round(time.monotonic() - self.created, 1), round(report.duration, 2), len(report.decisions),
                         sum(1 for d in report.decisions.values() if d.decided), len(report.group_errors)))
        self.held_codes.append(self._held_codes(report))
        self.last = report
        self.last_decided = sum(1 for d in report.decisions.values() if d.decided)
        if report.group_errors or (report.decisions and not self.last_decided):
            self.held_cycles += 1
        self.durations.append(report.duration)
        if report.group_errors:
            self.group_error_cycles += 1
        return report


class LogCounter(logging.Handler):
    """Counts the operator's log records by level (warnings and errors are expected around the outage)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1
        with contextlib.suppress(Exception):
            self.first.setdefault(record.levelname, f"{record.name}: {record.getMessage()}"[:300])


async def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f}s (last: {value!r})")
        await asyncio.sleep(interval)


# --- the operator, as `wva run` builds it --------------------------------------------------------
def operator_settings(api_url: str, prometheus_url: str, interval: float) -> Any:
    from wva.settings import Settings

    return Settings.from_env({
        "PROMETHEUS_BASE_URL": prometheus_url,
        "WVA_KUBE_API_URL": api_url,
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
        "POD_NAME": "wva-soak-0",
        "LEADER_ELECTION": "true",
        "COLLECTOR_V2": "true",
        "GLOBAL_OPT_INTERVAL": f"{interval:g}s",
        "WVA_METRICS_SECURE": "false",  # plain HTTP /metrics: the embedded API answers no TokenReviews
    })


@contextlib.asynccontextmanager
async def running_operator(runtime: Any) -> AsyncIterator[asyncio.Task[Any]]:
    """kopf with wva's handlers in this event loop (``wva run`` minus signal handling)."""
    import kopf

    import wva.handlers  # noqa: F401  (registers the handlers on kopf's default registry)

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready,
                      memo=kopf.Memo(runtime=runtime)),
        name="kopf-operator",
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await wait_until(lambda: runtime.started or task.done(), 60, "the operator to start")
        if task.done():
            raise RuntimeError(f"the operator stopped during startup: {task.exception()!r}")
        yield task
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=30)


@dataclass
class Soak:
    options: Options
    cluster: ClusterProcess
    prometheus: Any
    runtime: Any = None
    tracker: CycleTracker | None = None
    started: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "setup"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str, **extra: Any) -> None:
        self.events.append({"t_seconds": round(self.elapsed(), 1), "event": what, **extra})
        print(f"[{self.elapsed():7.1f}s] {what}" + (f" {extra}" if extra else ""), flush=True)

    async def call(self, command: str, argument: Any = None, timeout: float = 600.0) -> Any:
        return await asyncio.to_thread(self.cluster.call, command, argument, timeout)

    def operator_state(self) -> dict[str, Any]:
        rt, tracker = self.runtime, self.tracker
        assert rt is not None and tracker is not None
        sizes = rt.inventory.sizes()
        return {
            "inventory_vas": sizes["variants"],
            "inventory_deployments": sizes["deployments"],
            "inventory_pods": sizes["pods"],
            "mapper": sizes["mapper"],
            "gauge_series": len(rt.emitter.series()),
            "cycles": tracker.completed,
            "last_cycle_seconds": round(tracker.durations[-1], 3) if tracker.durations else None,
            "last_cycle_decisions": len(tracker.last.decisions) if tracker.last is not None else None,
            "last_cycle_fresh_decisions": tracker.last_decided,
            "last_cycle_group_errors": len(tracker.last.group_errors) if tracker.last is not None else None,
        }

    async def sample(self, kind: str = "periodic") -> dict[str, Any]:
        stats = await self.call("stats")
        entry = {"t_seconds": round(self.elapsed(), 1), "phase": self.phase, "kind": kind, **measure(),
                 **self.operator_state(), "cluster_live_vas": stats["live_vas"],
                 "cluster_live_pods": stats["live_pods"], "churn": stats["counts"]}
        self.samples.append(entry)
        print(f"[{entry['t_seconds']:7.1f}s] sample {self.phase:8s} rss={entry['rss_mib']:.1f}MiB fds={entry['fds']} "
              f"tasks={entry['tasks']} threads={entry['threads']} vas={entry['inventory_vas']} "
              f"pods={entry['inventory_pods']} cycles={entry['cycles']}", flush=True)
        return entry

    async def sampler(self) -> None:
        while True:
            await asyncio.sleep(self.options.sample_interval)
            with contextlib.suppress(Exception):
                await self.sample()

    async def quiescent(self, label: str) -> dict[str, Any]:
        """Churn paused, two complete cycles, a full collection, then the minimum over one engine interval."""
        tracker = self.tracker
        assert tracker is not None
        await self.call("churn", {"running": False})
        # the pause applies at the next step: one step later nothing is being created or deleted
        await asyncio.sleep(self.options.churn_step)
        start = tracker.completed
        await wait_until(lambda: tracker.completed >= start + 2 and not tracker.running,
                         3 * self.options.interval + 120, f"two engine cycles ({label})")
        gc.collect()
        readings = []
        deadline = time.monotonic() + self.options.interval
        while time.monotonic() < deadline:
            readings.append(measure())
            await asyncio.sleep(0.25)
        entry: dict[str, Any] = {key: min(r[key] for r in readings) for key in readings[0]}
        entry.update(max_over_window={key: max(r[key] for r in readings) for key in readings[0]},
                     readings=len(readings), gc_objects=len(gc.get_objects()), breakdown=breakdown(),
                     thread_pools=thread_pools())
        entry.update(t_seconds=round(self.elapsed(), 1), phase=self.phase, kind=label, **self.operator_state())
        stats = await self.call("stats", "coverage")
        entry.update(cluster_live_vas=stats["live_vas"], cluster_live_pods=stats["live_pods"],
                     vas_listed=stats["vas_listed"], vas_with_decision=stats["vas_with_decision"],
                     churn=stats["counts"])
        self.samples.append(entry)
        print(f"[{entry['t_seconds']:7.1f}s] {label}: rss={entry['rss_mib']:.1f}MiB fds={entry['fds']} "
              f"tasks={entry['tasks']} threads={entry['threads']} (minimum of {len(readings)} readings)", flush=True)
        return entry

    async def restart_prometheus(self) -> dict[str, Any]:
        tracker = self.tracker
        assert tracker is not None
        held_before = tracker.held_cycles
        # a VA that churn created since Prometheus' last scrape has no series yet: its decision is held
        # (HoldMetricsUnavailable) whether Prometheus was restarted or not
        o = self.options
        newcomers = max(2, math.ceil(2 * o.churn_vas_per_minute * o.scrape_interval / 60))
        self.note("prometheus stopped")
        await asyncio.to_thread(self.prometheus.stop)
        outage_started = time.monotonic()
        await asyncio.sleep(self.options.outage)
        await asyncio.to_thread(self.prometheus.start)
        down_for = time.monotonic() - outage_started
        self.note("prometheus started again", port=self.prometheus.port)
        # the first scrape after a start lands a few seconds later; then a cycle in which every group
        # answered and every variant but churn's newest (two scrape intervals' worth) is decided from
        # fresh metrics
        recovered_from = tracker.completed

        def recovered() -> bool:
            last = tracker.last
            return (tracker.completed > recovered_from and last is not None and not last.group_errors
                    and 0 < len(last.decisions) <= tracker.last_decided + newcomers)

        fresh_again = True
        try:
            await wait_until(recovered, 10 * self.options.interval + 180, "fresh decisions after the restart")
        except TimeoutError as exc:
            fresh_again = False
            self.note("no fresh decisions after the restart", error=str(exc))
        info = {"down_seconds": round(down_for, 1),
                "cycles_holding_decisions": tracker.held_cycles - held_before,
                "fresh_again": fresh_again, "held_allowed_for_new_vas": newcomers,
                "fresh_again_after_restart_seconds": round(time.monotonic() - outage_started - down_for, 1)}
        self.note("decisions fresh again" if fresh_again else "gave up waiting for fresh decisions", **info)
        return info


def verdict(
    baseline: dict[str, Any] | None, final: dict[str, Any] | None, options: Options, restart: dict[str, Any],
    failure: str | None = None,
) -> dict[str, Any]:
    if baseline is None or final is None:
        return {"bounds": {}, "checks": {"the run completed": False}, "ok": False, "failure": failure}
    rss_bound = max(RSS_GROWTH_MIB, RSS_GROWTH_FRACTION * baseline["rss_mib"])
    limits = {
        "rss_mib": (final["rss_mib"] - baseline["rss_mib"], rss_bound,
                    f"growth <= max({RSS_GROWTH_MIB:g} MiB, {RSS_GROWTH_FRACTION:.0%} of the baseline)"),
        "fds": (final["fds"] - baseline["fds"], FD_GROWTH, f"growth <= {FD_GROWTH}"),
        "tasks": (final["tasks"] - baseline["tasks"], TASK_DELTA, f"|delta| <= {TASK_DELTA}"),
        "threads": (final["threads"] - baseline["threads"], THREAD_DELTA, f"|delta| <= {THREAD_DELTA}"),
    }
    bounds = {}
    for key, (delta, bound, rule) in limits.items():
        within = abs(delta) <= bound if key in ("tasks", "threads") else delta <= bound
        bounds[key] = {"baseline": baseline[key], "final": final[key], "delta": round(delta, 2),
                       "bound": round(bound, 2), "rule": rule, "ok": within}
    # threads: a thread pool that existed at the baseline may have started more of its workers since,
    # up to its max_workers (it keeps them); only threads outside those pools must be back
    pools_b, pools_f = baseline["thread_pools"], final["thread_pools"]
    outside = (final["threads"] - sum(v[0] for v in pools_f.values())) \
        - (baseline["threads"] - sum(v[0] for v in pools_b.values()))
    same_pools = {k: v[2] for k, v in pools_f.items()} == {k: v[2] for k, v in pools_b.items()}
    capped = all(v[0] <= v[1] for v in pools_f.values())
    threads = bounds["threads"]
    threads.update(outside_pools_delta=outside, pools_unchanged=same_pools, pools_within_max_workers=capped,
                   rule=f"|delta| <= {THREAD_DELTA}, or |delta outside the baseline's thread pools| <= "
                        f"{THREAD_DELTA} with those pools within their max_workers")
    threads["ok"] = bool(threads["ok"] or (abs(outside) <= THREAD_DELTA and same_pools and capped))
    n, pods = options.n, options.n * options.pods_per_va
    checks = {
        "cluster holds N variants and their pods": (final["cluster_live_vas"], final["cluster_live_pods"]) == (n, pods),
        "inventory holds exactly the live variants": final["inventory_vas"] == final["cluster_live_vas"],
        "inventory holds exactly the live deployments": final["inventory_deployments"] == final["cluster_live_vas"],
        "inventory holds exactly the live pods": final["inventory_pods"] == final["cluster_live_pods"],
        "pod mapper holds exactly the live variants": final["mapper"] == final["cluster_live_vas"],
        "last cycle decided every variant": final["last_cycle_decisions"] == final["cluster_live_vas"],
        "last cycle had no group errors": final["last_cycle_group_errors"] == 0,
        "last cycle decided every variant from fresh metrics":
            final["last_cycle_fresh_decisions"] == final["cluster_live_vas"],
        "one gauge series per variant": final["gauge_series"] == final["cluster_live_vas"],
        "every live VA has a decision in its status": final["vas_with_decision"] == final["vas_listed"] == n,
        "the Prometheus outage was seen (a cycle held decisions)": restart.get("cycles_holding_decisions", 0) >= 1,
        "decisions fresh again after the Prometheus restart": bool(restart.get("fresh_again")),
        "the run completed": failure is None,
    }
    return {"bounds": bounds, "checks": checks, "failure": failure,
            "ok": all(b["ok"] for b in bounds.values()) and all(checks.values())}


def trend_mib_per_hour(samples: list[dict[str, Any]], since: float) -> float | None:
    """Least-squares slope of the periodic RSS samples after ``since`` (informative, not a bound)."""
    points = [(s["t_seconds"], s["rss_mib"]) for s in samples if s["kind"] == "periodic" and s["t_seconds"] >= since]
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var * 3600


async def run(options: Options) -> dict[str, Any]:
    from wva.gctuning import tune_gc
    from wva.runtime import Runtime
    from wva.sim.prometheus import LocalPrometheus, free_port

    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    cluster = ClusterProcess(options.pods_per_va)
    await asyncio.to_thread(cluster.start)
    prometheus = LocalPrometheus([f"127.0.0.1:{cluster.emulator_port}"], scrape_interval=options.scrape_interval)
    soak = Soak(options, cluster, prometheus)
    restart: dict[str, Any] = {}
    baseline: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    failure: str | None = None
    try:
        await asyncio.to_thread(prometheus.start)
        soak.note("cluster process and Prometheus up", api=cluster.api_url, prometheus=prometheus.url)
        populated = await soak.call("populate", options.n)
        soak.note(f"{options.n} variants with {options.pods_per_va} pods each created",
                  seconds=round(populated["seconds"], 1))
        want = options.n * options.pods_per_va
        await prometheus.wait_for('count(vllm:kv_cache_usage_perc{namespace=~"soak-.*"})',
                                  lambda r: int(float(r[0]["value"][1])) == want, timeout=180.0)
        soak.note("Prometheus has every pod")

        settings = operator_settings(cluster.api_url, prometheus.url, options.interval)
        metrics_port, probe_port = free_port(), free_port()
        runtime = Runtime.build(settings, metrics_port=metrics_port, probe_port=probe_port)
        soak.runtime, soak.tracker = runtime, CycleTracker(runtime.engine, soak.started)
        tune_gc()  # as `wva run` does, after the build
        async with running_operator(runtime):
            tracker = soak.tracker
            await wait_until(lambda: runtime.inventory.sizes()["pods"] == want
                             and runtime.inventory.sizes()["variants"] == options.n, 600, "the inventory filled")
            await wait_until(lambda: tracker.last is not None and len(tracker.last.decisions) == options.n
                             and not tracker.last.group_errors, 10 * options.interval + 300, "a cycle deciding all")
            soak.note("operator running: every variant decided", cycles=tracker.completed)
            await soak.call("operator", (metrics_port, probe_port))
            steps_per_minute = 60.0 / options.churn_step
            churn = {"running": True, "step": options.churn_step,
                     "vas_per_step": options.churn_vas_per_minute / steps_per_minute,
                     "pods_per_step": options.churn_pods_per_minute / steps_per_minute}
            soak.phase = "warm-up"
            await soak.call("churn", churn)
            sampler = asyncio.create_task(soak.sampler(), name="soak-sampler")
            measured_from = time.monotonic()
            try:
                try:
                    await soak.sample("start")
                    await asyncio.sleep(options.warmup_seconds)
                    baseline = await soak.quiescent("baseline")
                    soak.phase = "soak"
                    await soak.call("churn", churn)
                    soak_seconds = max(0.0, options.duration - (time.monotonic() - measured_from))
                    restart_at = time.monotonic() + soak_seconds / 2
                    end_at = time.monotonic() + soak_seconds
                    await asyncio.sleep(max(0.0, restart_at - time.monotonic()))
                    restart = await soak.restart_prometheus()
                    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
                    soak.phase = "end"
                    final = await soak.quiescent("final")
                except Exception as exc:  # reported, and the run fails, rather than lost with its samples
                    failure = f"{type(exc).__name__}: {exc}"
                    soak.note("run failed", error=failure)
                    if baseline is not None and final is None:
                        soak.phase = "end"
                        with contextlib.suppress(Exception):
                            final = await soak.quiescent("final")
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
    finally:
        stats = await asyncio.to_thread(_stats_or_none, cluster)
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(prometheus.close)
        logging.getLogger().removeHandler(counter)
    tracker = soak.tracker
    assert tracker is not None
    result = verdict(baseline, final, options, restart, failure)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "setup": {
            "n": options.n, "pods_per_va": options.pods_per_va, "namespaces": NAMESPACES,
            "duration_seconds": options.duration, "warmup_seconds": options.warmup_seconds,
            "sample_interval_seconds": options.sample_interval, "engine_interval_seconds": options.interval,
            "churn_vas_per_minute": options.churn_vas_per_minute,
            "churn_pods_per_minute": options.churn_pods_per_minute, "churn_step_seconds": options.churn_step,
            "prometheus_scrape_interval_seconds": options.scrape_interval,
            "prometheus_outage_seconds": options.outage,
            "api_server": "embedded kmock-based API (wva.sim.local_api) in a child process",
            "operator": "kopf + wva.handlers + wva.runtime.Runtime (collector v2 batched, leader election, "
                        "HTTP server, resync), wva run's GC settings",
        },
        "verdict": result,
        "baseline": baseline,
        "final": final,
        "rss_trend_mib_per_hour": trend_mib_per_hour(soak.samples, baseline["t_seconds"]) if baseline else None,
        "prometheus_restart": restart,
        "python_heap": {  # informative: what RSS steps are made of (quiescent samples, after a full collection)
            key: {"baseline": baseline[key], "final": final[key], "delta": final[key] - baseline[key]}
            for key in ("allocated_blocks", "gc_objects")
        } if baseline and final else None,
        "cycles": {
            "completed": tracker.completed,
            "median_seconds": statistics.median(tracker.durations) if tracker.durations else None,
            "max_seconds": max(tracker.durations) if tracker.durations else None,
            "with_group_errors": tracker.group_error_cycles,
            "raised": tracker.errored_cycles,
            "log": [{**dict(zip(("t_seconds", "seconds", "decisions", "fresh", "group_errors"), c, strict=True)),
                     "held": codes} for c, codes in zip(tracker.log, tracker.held_codes, strict=True)],
        },
        "cluster": stats,
        "operator_log": {"counts": dict(counter.counts), "first": counter.first},
        "events": soak.events,
        "samples": soak.samples,
        "total_seconds": round(soak.elapsed(), 1),
    }


def _stats_or_none(cluster: ClusterProcess) -> Any:
    try:
        return cluster.call("stats", timeout=30)
    except Exception as exc:
        return {"error": repr(exc)}


def markdown(results: dict[str, Any]) -> str:
    s, v = results["setup"], results["verdict"]
    lines = [
        f"# wva soak {results['date']}",
        "",
        f"N = {s['n']} VAs x {s['pods_per_va']} pods, {s['duration_seconds'] / 60:g} min "
        f"(warm-up {s['warmup_seconds']:g} s), engine every {s['engine_interval_seconds']:g} s, churn "
        f"{s['churn_vas_per_minute']:g} VAs and {s['churn_pods_per_minute']:g} pod restarts per minute, Prometheus "
        f"stopped for {s['prometheus_outage_seconds']:g} s halfway. API: {s['api_server']}.",
        "",
        f"**Verdict: {'PASS' if v['ok'] else 'FAIL'}**" + (f" ({v['failure']})" if v.get("failure") else ""),
        "",
        "| measure | baseline | final | delta | bound | ok |",
        "|---|---:|---:|---:|---|---|",
    ]
    for key, b in v["bounds"].items():
        lines.append(f"| {key} | {b['baseline']:g} | {b['final']:g} | {b['delta']:+g} | {b['rule']} "
                     f"({b['bound']:g}) | {'yes' if b['ok'] else 'NO'} |")
    lines += ["", "| check | ok |", "|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in v["checks"].items()]
    cycles, restart, cluster = results["cycles"], results["prometheus_restart"], results["cluster"] or {}
    counts = cluster.get("counts", {})
    trend = results["rss_trend_mib_per_hour"]
    lines += [
        "",
        f"Cycles: {cycles['completed']} (median {cycles['median_seconds'] or 0:.2f} s, max "
        f"{cycles['max_seconds'] or 0:.2f} s; {cycles['with_group_errors']} with group errors, around the outage). "
        f"Prometheus restart: {restart}. Churn: {counts.get('vas_created', 0)} VAs created, "
        f"{counts.get('vas_deleted', 0)} deleted, {counts.get('pod_restarts', 0)} pod restarts "
        f"({counts.get('pods_created', 0)} pods created in all). RSS trend over the periodic samples after the "
        f"baseline: {'n/a' if trend is None else f'{trend:+.1f} MiB/hour'}. Python heap (baseline -> final): "
        + ", ".join(f"{k} {h['baseline']} -> {h['final']} ({h['delta']:+d})"
                    for k, h in (results.get("python_heap") or {}).items()) + ".",
        "",
        "| t (s) | phase | kind | RSS (MiB) | fds | tasks | threads | VAs | pods | cycles | last cycle (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in results["samples"]:
        lines.append(f"| {e['t_seconds']:g} | {e['phase']} | {e['kind']} | {e['rss_mib']:.1f} | {e['fds']:g} | "
                     f"{e['tasks']:g} | {e['threads']:g} | {e['inventory_vas']} | {e['inventory_pods']} | "
                     f"{e['cycles']} | {e['last_cycle_seconds']} |")
    return "\n".join(lines) + "\n"


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=_duration, default=os.environ.get("WVA_SOAK_DURATION", "20m"),
                        help="warm-up plus soak, e.g. 20m or 180 (env WVA_SOAK_DURATION; default 20m)")
    parser.add_argument("--n", type=int, default=int(os.environ.get("WVA_SOAK_N", "1000")),
                        help="VariantAutoscalings (env WVA_SOAK_N; default 1000)")
    parser.add_argument("--pods-per-va", type=int, default=4)
    parser.add_argument("--warmup", type=_duration, default=None,
                        help="warm-up before the baseline (default 15%% of the duration, 30 s to 3 min)")
    parser.add_argument("--sample-interval", type=_duration, default="60s")
    parser.add_argument("--interval", type=_duration, default="10s", help="GLOBAL_OPT_INTERVAL of the operator")
    parser.add_argument("--churn-vas", type=float, default=30.0, help="variants replaced per minute")
    parser.add_argument("--churn-pods", type=float, default=120.0, help="pods restarted per minute")
    parser.add_argument("--outage", type=_duration, default="60s", help="how long Prometheus stays down")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)  # argparse converts the string defaults with their type too
    if args.n < 1 or args.pods_per_va < 1:
        parser.error("--n and --pods-per-va must be at least 1")
    return Options(n=args.n, pods_per_va=args.pods_per_va, duration=args.duration, warmup=args.warmup,
                   sample_interval=args.sample_interval, interval=args.interval,
                   churn_vas_per_minute=args.churn_vas, churn_pods_per_minute=args.churn_pods,
                   outage=args.outage, out=args.out)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    # warnings (expected around the outage) are counted into the results; only errors are printed
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.ERROR)
    logging.getLogger("kopf").setLevel(logging.ERROR)  # kopf's per-object chatter
    results = asyncio.run(run(options))
    options.out.mkdir(parents=True, exist_ok=True)
    stem = options.out / f"{datetime.date.today().isoformat()}-soak"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(results))
    print()
    print(markdown(results))
    print(f"results: {stem}.json, {stem}.md; total time {results['total_seconds']:.0f}s")
    return 0 if results["verdict"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
