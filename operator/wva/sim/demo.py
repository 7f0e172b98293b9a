"""``wva demo``: the real operator against an embedded local environment, in one process.

What runs: the embedded local Kubernetes API (kmock-based, :mod:`wva.sim.local_api`) with the
VariantAutoscaling CRD declared; a simulated Deployment controller (:mod:`wva.sim.cluster`) whose
pods are emulated vLLM servers (:mod:`wva.sim.vllm`); the real Prometheus binary scraping them when
one is installed; a load generator that plays a scenario through the queueing model of
:mod:`wva.sim.loadmodel`; and the real operator (kopf handlers, inventory, collector, saturation
engine) with direct actuation, so its decisions become new or removed emulated pods.

Time: the scenario runs on a simulated clock, ``speed`` simulated seconds per real second, and the
engine runs one cycle per simulated ``interval``. Prometheus keeps real time: its ``[1m]`` windows
are one real minute, i.e. ``60 * speed`` simulated seconds (docs/demo.md explains what that means
for scale-down).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from wva.sim.loadmodel import LoadModel, Scenario, ScenarioError, load_scenario

if TYPE_CHECKING:  # the demo imports its heavy parts only when it runs
    from wva.runtime import Runtime
    from wva.sim.cluster import SimulatedCluster
    from wva.sim.epp import EppEmulator
    from wva.sim.prometheus import LocalPrometheus
    from wva.sim.vllm import VLLMEmulator

log = logging.getLogger(__name__)

OPERATOR_NAMESPACE = "wva-system"
LOAD_TICK = 0.2  # real seconds between load-generator updates of the emulated pods
STARTUP_TIMEOUT = 45.0


class SimClock:
    """The demo's simulated clock: ``speed`` simulated seconds per real second, from its creation.

    Pod scraping runs on it (its one-minute window is a simulated minute, as in a real cluster);
    Prometheus cannot, so with Prometheus the window stays one real minute.
    """

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._mono0 = time.monotonic()
        self._wall0 = time.time()

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono0) * self.speed

    def wall(self) -> float:
        return self._wall0 + self.monotonic()


class DemoError(RuntimeError):
    """The demo cannot run here; the message says why and what to do."""


class DemoStopped(DemoError):
    """The scenario did not run to its end (interrupted, or the operator stopped)."""


@dataclass
class DemoOptions:
    scenario: Scenario
    collector: str = "v1"  # the operator's default (docs/configuration.md, "One set of defaults")
    metrics_source: str | None = None  # None: Prometheus when its binary is found, else pod scraping
    ui: bool = True
    output: Path = Path("demo-output")
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class DemoResult:
    records: list[dict[str, Any]]
    metrics_source: str
    files: dict[str, Path | None]


def main(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario).with_overrides(args.duration, args.speed)
    except ScenarioError as exc:
        print(f"wva demo: {exc}", file=sys.stderr)
        return 2
    options = DemoOptions(
        scenario, collector=args.collector, metrics_source=args.metrics_source, ui=not args.no_ui,
        output=Path(args.output),
    )
    try:
        options.output.mkdir(parents=True, exist_ok=True)
        _log_to_file(options.output / "demo.log")
    except OSError as exc:
        print(f"wva demo: cannot write to --output {str(options.output)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_demo(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("wva demo: interrupted", file=sys.stderr)
        return 130
    except DemoStopped as exc:
        print(f"wva demo: {exc}", file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f"wva demo: {exc}", file=sys.stderr)
        return 3
    return 0


def _log_to_file(path: Path) -> None:
    """The operator logs to a file: the terminal belongs to the live view or the JSON lines."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(path, mode="w")],
        force=True,
    )
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def run_demo(options: DemoOptions) -> DemoResult:
    """Run one scenario end to end and write the report; returns every per-cycle record."""
    from wva.sim import report

    say = _Narrator(options)
    records: list[dict[str, Any]] = []
    source = ""
    finished = False
    replay_files: dict[str, Any] = {}
    try:
        async with _environment(options, say) as env:
            source = env.metrics_source
            driver = _Driver(options, env, say)
            records = driver.records
            await driver.run()
            finished = not driver.stopped_early
            try:
                replay_files = _save_replay_inputs(options, env, driver)
            except OSError as exc:
                say(f"could not save the inputs for explain and backtest: {exc}")
    finally:
        if not finished and records:  # Ctrl-C or the operator ended: keep what was recorded
            report.write_outputs(options.output, records, _meta(options, source))
            say(f"stopped early after {len(records)} cycles; partial results in {options.output.resolve()}")
    if not finished:
        raise DemoStopped("the operator stopped before the scenario ended (see demo.log)")
    meta = _meta(options, source)
    files = report.write_outputs(options.output, records, meta)
    summary = report.summarize(records, meta)
    if options.ui:
        options.out.write("\n" + report.summary_table(summary) + "\n")
        for kind, path in files.items():
            options.out.write(f"  {kind:8} {path if path is not None else 'skipped (pip install .[plot])'}\n")
        options.out.write(f"Everything is in {options.output.resolve()}\n")
        for line in replay_files.get("commands", []):
            options.out.write(line + "\n")
        options.out.flush()
    else:
        say.json({"event": "end", "output": str(options.output.resolve()), "summary": summary,
                  "files": {k: (str(v) if v else None) for k, v in files.items()},
                  "commands": replay_files.get("commands", [])})
    return DemoResult(records, source, files)


CANDIDATE_THRESHOLDS = {"kvCacheThreshold": 0.85, "kvSpareTrigger": 0.05}
"""The what-if the demo prepares for ``wva backtest``: run hotter before adding a replica."""


def _save_replay_inputs(options: DemoOptions, env: _Env, driver: _Driver) -> dict[str, Any]:
    """Decision records, model files and Prometheus' data, so a run can be explained and backtested later."""
    import shutil

    import yaml

    s = options.scenario
    out = options.output
    (out / "decisions.json").write_text(json.dumps({"variantAutoscalings": driver.decision_log}, indent=1) + "\n")
    model: dict[str, Any] = {
        "model": s.model,
        "namespace": s.namespace,
        "thresholds": demo_rules(s),
        "variants": [
            {"name": v.name, "deployment": v.name, "accelerator": v.accelerator, "cost": v.cost,
             "minReplicas": v.min_replicas, "maxReplicas": v.max_replicas, "initialReplicas": v.initial_replicas}
            for v in s.variants
        ],
    }
    (out / "model.yaml").write_text("# the demo's model as it ran (wva backtest --config)\n"
                                    + yaml.safe_dump(model, sort_keys=False))
    thresholds: dict[str, Any] = {**demo_rules(s), **CANDIDATE_THRESHOLDS}
    candidate = {**model, "thresholds": thresholds}
    (out / "model-candidate.yaml").write_text("# a candidate: run hotter before adding a replica\n"
                                              + yaml.safe_dump(candidate, sort_keys=False))
    commands = []
    explained = driver.most_scaled_variant()
    if explained is not None:
        commands.append(f"Why did it scale?  wva explain {s.namespace}/{explained} --records {out / 'decisions.json'}")
    if env.prometheus is not None and driver.wall_start and driver.wall_end:
        target = out / "prometheus-data"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(env.prometheus.data_dir, target, ignore=shutil.ignore_patterns("lock"))
        step = max(1.0, s.interval / s.speed)
        commands.append(
            f"What if?           wva backtest --prometheus-data {target} --config {out / 'model.yaml'} "
            f"--config {out / 'model-candidate.yaml'} --from {math.floor(driver.wall_start)} "
            f"--to {math.ceil(driver.wall_end)} --step {step:g}s --output {out / 'backtest'}"
        )
    return {"commands": commands}


def _meta(options: DemoOptions, source: str) -> dict[str, Any]:
    s = options.scenario
    return {
        "scenario": s.name,
        "description": s.description,
        "model": s.model,
        "namespace": s.namespace,
        "metrics_source": source,
        "collector": options.collector if source == "prometheus" else "v2",  # pod scraping is a v2 source
        "speed": s.speed,
        "interval": s.interval,
        "duration": s.duration,
        "variants": {
            v.name: {
                "accelerator": v.accelerator, "cost": v.cost, "capacity": v.capacity,
                "minReplicas": v.min_replicas, "maxReplicas": v.max_replicas, "replicas": v.initial_replicas,
            }
            for v in s.variants
        },
    }


class _Narrator:
    """Human messages go to the terminal in UI mode and to stderr in JSON mode; JSON goes to ``out``."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options

    def __call__(self, message: str) -> None:
        stream = self.options.out if self.options.ui else sys.stderr
        stream.write(f"wva demo: {message}\n")
        stream.flush()
        log.info("Demo %s", message)

    def json(self, obj: dict[str, Any]) -> None:
        self.options.out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.options.out.flush()


# --- the environment -----------------------------------------------------------------------------
@dataclass
class _Env:
    api: Any  # LocalKubernetesAPI (kmock is untyped)
    emulator: VLLMEmulator
    cluster: SimulatedCluster
    runtime: Runtime
    prometheus: LocalPrometheus | None
    metrics_source: str
    clock: SimClock
    loads: dict[str, dict[str, Any]]  # current emulator values per variant; new pods start with them
    operator_task: asyncio.Task[Any]
    epp: EppEmulator | None = None  # the gateway's queue, for scale-to-zero scenarios
    kubeconfig: Path | None = None  # kubectl --kubeconfig FILE sees the embedded API while the demo runs


def _choose_metrics_source(requested: str | None) -> tuple[str, str | None]:
    """("prometheus", binary) when the server binary is installed (or asked for), else ("pods", None)."""
    from wva.sim.prometheus import INSTALL_HINT, find_prometheus_binary

    if requested == "pods":
        return "pods", None
    binary = find_prometheus_binary()
    if binary is not None:
        return "prometheus", binary
    if requested == "prometheus":
        raise DemoError(f"--metrics-source prometheus: no Prometheus server binary found; {INSTALL_HINT}")
    return "pods", None


@contextlib.asynccontextmanager
async def _environment(options: DemoOptions, say: _Narrator) -> AsyncIterator[_Env]:
    import kmock

    from wva.runtime import Runtime
    from wva.settings import Settings
    from wva.sim.cluster import SimulatedCluster
    from wva.sim.epp import EppEmulator, EppEmulatorThread
    from wva.sim.local_api import LocalKubernetesAPI, write_kubeconfig
    from wva.sim.prometheus import LocalPrometheus
    from wva.sim.vllm import EmulatorThread

    scenario = options.scenario
    source, binary = _choose_metrics_source(options.metrics_source)
    clock = SimClock(scenario.speed)
    emulator_thread = EmulatorThread()
    emulator = emulator_thread.start()
    say(f"emulated vLLM pods served at {emulator.base_url}")
    epp_thread: EppEmulatorThread | None = None
    epp: EppEmulator | None = None
    if scenario.scale_to_zero_retention is not None:
        # the gateway's Endpoint Picker: requests for a model at zero wait in its queue
        epp_thread = EppEmulatorThread(EppEmulator(pool="demo-pool"))
        epp = epp_thread.start()
        say(f"emulated gateway EPP (flow-control queue) at {epp.metrics_url}")
    prometheus: LocalPrometheus | None = None
    prom_start: asyncio.Task[None] | None = None
    if source == "prometheus":
        prometheus = LocalPrometheus(targets=[f"127.0.0.1:{emulator.port}"], binary=binary)
        prom_start = asyncio.create_task(asyncio.to_thread(prometheus.start))
    try:
        async with LocalKubernetesAPI() as api, kmock.Server(api):
            api.declare_resources()
            say(f"embedded local Kubernetes API (kmock) at {api.base_url}")
            kubeconfig = write_kubeconfig(options.output / "kubeconfig", api.base_url, scenario.namespace)
            say(f"watch it with kubectl: kubectl --kubeconfig {kubeconfig} get va -w")
            loads: dict[str, dict[str, Any]] = {}
            async with SimulatedCluster(api.base_url, emulator, lambda dep, _pod: dict(loads.get(dep, {}))) as cluster:
                env_vars = demo_environment(
                    scenario, source, options.collector, api.base_url,
                    prometheus_url=prometheus.url if prometheus is not None else None,
                    epp_url=epp.metrics_url if epp is not None else None,
                )
                settings = Settings.from_env(env_vars)
                await _create_objects(cluster, scenario, settings.config_map_name, settings.saturation_config_map_name)
                # the initial replicas were up before the demo began; the new ones load their model first
                cluster.startup_delay = scenario.cold_start / scenario.speed
                runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)
                if prometheus is None:
                    _use_pod_scraping_on(runtime, clock, emulator.base_url)
                if prom_start is not None and prometheus is not None:
                    try:
                        await prom_start
                    except (OSError, RuntimeError) as exc:
                        raise DemoError(f"Prometheus did not start ({exc}); try --metrics-source pods") from exc
                    say(f"metrics source: real Prometheus ({binary}) at {prometheus.url}, scraping every 1s")
                else:
                    why = "as asked" if options.metrics_source == "pods" else "no Prometheus binary found"
                    say(f"metrics source: pod scraping ({why}), the operator reads each pod's /metrics directly")
                async with _running_operator(runtime) as operator_task:
                    collector = options.collector if source == "prometheus" else "v2"
                    say(f"operator running: kopf + collector {collector} + saturation engine, direct actuation")
                    env = _Env(api, emulator, cluster, runtime, prometheus, source, clock, loads, operator_task, epp,
                               kubeconfig=kubeconfig)
                    await _wait_until_observed(env, scenario)
                    yield env
    finally:
        if prom_start is not None and not prom_start.done():
            with contextlib.suppress(Exception):
                await prom_start
        if prometheus is not None:
            await asyncio.to_thread(prometheus.close)
        if epp_thread is not None:
            await asyncio.to_thread(epp_thread.stop)
        await asyncio.to_thread(emulator_thread.stop)


def _use_pod_scraping_on(runtime: Runtime, clock: SimClock, emulator_url: str) -> None:
    """The collector METRICS_SOURCE=pods builds, with two demo specifics: every emulated pod is a
    path on the emulator's one port (not a pod IP), and time is the simulated clock."""
    from wva.collector.v2 import (
        Cache,
        InventoryPodDiscovery,
        PodScrapingConfig,
        PodScrapingSource,
        SourceRegistry,
        V2MetricsCollector,
    )

    def target_url(namespace: str, pod: str, _ip: str, _port: int) -> str:
        return f"{emulator_url}/pods/{namespace}/{pod}/metrics"

    source = PodScrapingSource(
        InventoryPodDiscovery(runtime.inventory, target_url=target_url),
        PodScrapingConfig(scrape_timeout=2.0),
        clock=clock.monotonic,
        wall_clock=clock.wall,
        cache=Cache(clock=clock.monotonic),
    )
    registry = SourceRegistry()
    registry.register("pods", source)
    collector = V2MetricsCollector(registry, runtime.inventory.mapper, source_name="pods", clock=clock.wall)
    runtime.collector = collector
    runtime.engine.collector = collector


def _seen_by_engine(record: Any, variant: str) -> tuple[list[float | None], list[int | None]]:
    """Per pod of ``variant``, the KV usage and queue length in ``record``'s inputs (None: unknown)."""
    if record is None:
        return [], []
    inputs = record.inputs
    kv: list[float | None] = []
    queue: list[int | None] = []
    for i, name in enumerate(inputs.variants):
        if name == variant:
            kv.append(None if inputs.kv[i] != inputs.kv[i] else round(inputs.kv[i], 4))
            queue.append(None if inputs.queue[i] != inputs.queue[i] else int(inputs.queue[i]))
    return kv, queue


# Where the demo departs from the operator's defaults, and why: docs/configuration.md ("The demo's
# departures") lists exactly these, and a test compares the two.
DEMO_MAIN_CONFIG: dict[str, str] = {
    # collector v1 caches Prometheus answers for 30 real seconds; the demo's compressed cycles are
    # faster than that, so it switches the cache off the way an operator would
    "PROMETHEUS_METRICS_CACHE_ENABLED": "false",
}


def demo_environment(
    scenario: Scenario, source: str, collector: str, kube_api_url: str,
    prometheus_url: str | None = None, epp_url: str | None = None,
) -> dict[str, str]:
    """The operator's environment in the demo: the operator's defaults except where the demo's one
    process, its missing HPA and its compressed clock need otherwise."""
    env = {
        "WVA_KUBE_API_URL": kube_api_url,
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
        "POD_NAME": "wva-demo-0",
        "LEADER_ELECTION": "false",  # one operator process
        "ACTUATION_MODE": "direct",  # there is no HPA: the operator patches the Deployments itself
        "COLLECTOR_V2": "true" if collector == "v2" else "false",
        "GLOBAL_OPT_INTERVAL": f"{scenario.interval:g}s",
        "METRICS_SOURCE": source,
        # the variants run on different accelerators and should compete on cost
        "WVA_GROUP_BY_ACCELERATOR": "false",
    }
    if prometheus_url is not None:
        env["PROMETHEUS_BASE_URL"] = prometheus_url
    if epp_url is not None:
        env["WVA_EPP_METRICS_SOURCE"] = "pods"
        env["WVA_EPP_METRICS_URLS"] = f"{scenario.namespace}={epp_url}"
    return env


def demo_rules(scenario: Scenario) -> dict[str, Any]:
    """wva's own rules on the demo's compressed clock: the engine's windows are real seconds, so the
    default 300 s scale-down stabilisation becomes 300 simulated seconds (300 / speed real ones)."""
    rules: dict[str, Any] = {"scaleDownStabilizationWindow": f"{300.0 / scenario.speed:g}s"}
    if scenario.scale_to_zero_retention is not None:
        rules["scaleToZero"] = True
        rules["scaleToZeroRetention"] = f"{scenario.scale_to_zero_retention / scenario.speed:g}s"
    return rules


async def _create_objects(
    cluster: SimulatedCluster, scenario: Scenario, main_config_map: str, saturation_config_map: str
) -> None:
    # (the embedded API keeps namespaced objects without a Namespace object, so none is created)
    await cluster.request(
        "POST",
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": main_config_map, "namespace": OPERATOR_NAMESPACE},
            "data": dict(DEMO_MAIN_CONFIG),
        },
    )
    rules = "".join(f"{k}: {v}\n" for k, v in demo_rules(scenario).items())
    await cluster.request(
        "POST",
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": saturation_config_map, "namespace": OPERATOR_NAMESPACE},
            "data": {"default": rules},
        },
    )
    for v in scenario.variants:
        await cluster.create_deployment(v.name, scenario.namespace, scenario.model, replicas=v.initial_replicas)
    await cluster.reconcile()
    for v in scenario.variants:
        await cluster.create_va(
            v.name, scenario.namespace, scenario.model, v.name, v.accelerator,
            cost=f"{v.cost:g}", min_replicas=v.min_replicas, max_replicas=v.max_replicas,
            labels={"wva.llmd.ai/demo-accelerator": v.accelerator},
        )


@contextlib.asynccontextmanager
async def _running_operator(runtime: Runtime) -> AsyncIterator[asyncio.Task[Any]]:
    """kopf with wva's handlers in this event loop (as ``wva run`` does, minus signal handling)."""
    import kopf

    import wva.handlers  # noqa: F401  (registers the handlers on kopf's default registry)

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready, memo=kopf.Memo(runtime=runtime)
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), STARTUP_TIMEOUT)
        await _poll(lambda: runtime.started or task.done(), STARTUP_TIMEOUT, "the operator to start")
        if task.done():
            raise DemoError(f"the operator stopped during startup: {task.exception()!r}")
        yield task
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=20)


async def _poll(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def _pods_in_inventory(env: _Env, namespace: str) -> int:
    return sum(len(env.runtime.inventory.ready_pods(namespace, d.name)) for d in env.cluster.deployments.values())


def _pods_in_cluster(env: _Env) -> int:
    return sum(len(d.ready_pods) for d in env.cluster.deployments.values())


async def _wait_until_observed(env: _Env, scenario: Scenario) -> None:
    """The operator has seen every VA and pod, and the metrics pipeline has the pods."""
    inv = env.runtime.inventory
    await _poll(lambda: len(inv.variants()) == len(scenario.variants), STARTUP_TIMEOUT, "the VAs in the inventory")
    await _poll(lambda: _pods_in_inventory(env, scenario.namespace) == _pods_in_cluster(env),
                STARTUP_TIMEOUT, "the pods in the inventory")
    if env.prometheus is not None:
        query = f'count(vllm:kv_cache_usage_perc{{namespace="{scenario.namespace}"}})'
        try:
            await env.prometheus.wait_for(query, timeout=STARTUP_TIMEOUT)
        except TimeoutError as exc:
            raise DemoError(f"Prometheus did not scrape the emulated pods: {exc}") from exc


# --- the scenario driver -------------------------------------------------------------------------
class _Driver:
    def __init__(self, options: DemoOptions, env: _Env, say: _Narrator) -> None:
        self.options = options
        self.scenario = options.scenario
        self.env = env
        self.say = say
        self.model = LoadModel(self.scenario.variants, self.scenario.queue)
        self.loads = env.loads
        self.t0 = 0.0  # real (monotonic) start of the scenario
        self.sim0 = 0.0  # simulated clock at the start of the scenario
        # counters advance in the metrics pipeline's time: simulated with pod scraping, real with Prometheus
        self.counter_time_scale = 1.0 if env.prometheus is not None else self.scenario.speed
        self.records: list[dict[str, Any]] = []
        self.decision_log: dict[str, list[dict[str, Any]]] = {}  # "ns/name" -> every cycle's record
        self.wall_start = 0.0
        self.wall_end = 0.0
        self.stopped_early = False  # kopf ended (it stops on SIGINT/SIGTERM) before the scenario did

    def sim_time(self) -> float:
        return self.env.clock.monotonic() - self.sim0

    def replicas(self) -> dict[str, int]:
        ns = self.scenario.namespace
        return {v.name: len(self.env.cluster.deployments[(ns, v.name)].ready_pods) for v in self.scenario.variants}

    def apply_load(self, t: float, dt_real: float) -> dict[str, Any]:
        """Set every emulated pod's values for simulated time ``t`` (and count served requests)."""
        ns = self.scenario.namespace
        load = self.scenario.offered_load(t)
        pod_loads = self.model.pod_loads(load, self.replicas())
        emulator = self.env.emulator
        for v in self.scenario.variants:
            pl = pod_loads[v.name]
            values = {"kv_cache_usage": pl.kv_cache_usage, "num_requests_waiting": pl.queue_length,
                      "num_requests_running": round(min(pl.rho, 1.0) * 64)}
            self.loads[v.name] = values
            for pod in list(self.env.cluster.deployments[(ns, v.name)].pods):
                with contextlib.suppress(KeyError):
                    emulator.set_values(ns, pod, **values)
                    served = min(pl.requests_per_second, v.capacity) * dt_real * self.counter_time_scale
                    emulator.record_requests(ns, pod, count=served, prompt_tokens=512, generation_tokens=128,
                                             ttft_seconds=0.05 + 0.2 * min(pl.rho, 2.0),
                                             tpot_seconds=0.01 + 0.01 * min(pl.rho, 2.0))
        if self.env.epp is not None:
            # with no replica at all, the offered requests wait at the gateway (the EPP's queue)
            at_zero = sum(self.replicas().values()) == 0
            self.env.epp.set_queue(self.scenario.model, math.ceil(load) if at_zero and load > 0 else 0)
        return {"load": load, "rho": self.model.utilisation(load, self.replicas()), "pods": pod_loads}

    async def load_generator(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            self.apply_load(self.sim_time(), now - last)
            last = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LOAD_TICK)

    async def pipeline_caught_up(self, timeout: float) -> None:
        """Wait (briefly) until Prometheus' latest scrape has exactly the pods that exist now."""
        prom = self.env.prometheus
        if prom is None or timeout <= 0:
            return
        ns = self.scenario.namespace
        expected = {pod for n, pod in self.env.emulator.pods() if n == ns}
        query = f'vllm:kv_cache_usage_perc{{namespace="{ns}"}}'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = await asyncio.wait_for(asyncio.to_thread(prom.query, query), timeout)
            except Exception:
                return
            if {r["metric"].get("pod") for r in result} == expected:
                return
            await asyncio.sleep(0.1)

    async def run(self) -> list[dict[str, Any]]:
        from wva.sim.report import LiveView

        s = self.scenario
        period = s.interval / s.speed
        if not self.options.ui:
            self.say.json({"event": "start", **_meta(self.options, self.env.metrics_source),
                           "kubeconfig": str(self.env.kubeconfig) if self.env.kubeconfig else None})
        else:
            self.say(f"scenario {s.name!r}: {s.duration:g}s simulated at {s.speed:g}x "
                     f"= {s.duration / s.speed:.0f}s; one engine cycle every {s.interval:g}s simulated")
        view = LiveView(_meta(self.options, self.env.metrics_source), self.options.out) if self.options.ui else None
        self.t0 = time.monotonic()
        self.wall_start = time.time()
        self.sim0 = self.env.clock.monotonic()
        self.apply_load(0.0, 0.0)
        stop = asyncio.Event()
        loader = asyncio.create_task(self.load_generator(stop))
        try:
            cycle = 0
            while True:
                cycle += 1
                wake = self.t0 + cycle * period
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
                t = self.sim_time()
                if t > s.duration + 1e-9:
                    break
                if self.env.operator_task.done():
                    self.stopped_early = True
                    break
                await self.pipeline_caught_up(min(1.5, period * 0.8))
                record = await self.one_cycle(cycle, t)
                self.records.append(record)
                if view is not None:
                    view.update(record)
                else:
                    self.say.json(record)
        finally:
            self.wall_end = time.time()
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
        return self.records

    def most_scaled_variant(self) -> str | None:
        """The variant whose decision changed most often (the best one to explain), else the first."""
        changes: dict[str, int] = {}
        for record in self.records:
            for name, v in record["variants"].items():
                changes[name] = changes.get(name, 0) + (v["decision"] in ("up", "down"))
        return max(changes, key=lambda n: (changes[n], n)) if changes else None

    async def one_cycle(self, cycle: int, t: float) -> dict[str, Any]:
        s = self.scenario
        before = self.replicas()
        state = self.apply_load(t, 0.0)
        report = await self.env.runtime.engine.run_cycle()
        await self.env.cluster.reconcile()
        # the operator learns about new or removed pods from its watches, as in a cluster
        with contextlib.suppress(DemoError):
            await _poll(lambda: _pods_in_inventory(self.env, s.namespace) == _pods_in_cluster(self.env),
                        5.0, "the inventory to see the new pods")
        after = self.replicas()
        variants: dict[str, Any] = {}
        for v in s.variants:
            decision = report.decisions.get((s.namespace, v.name))
            pl = state["pods"][v.name]
            current = decision.current if decision is not None else before[v.name]
            desired = decision.target if decision is not None else None
            if desired is None:
                action = "none"
            else:
                action = "up" if desired > current else "down" if desired < current else "hold"
            latest = self.env.runtime.engine.decisions.latest(s.namespace, v.name)
            outcome = latest.outcome(v.name) if latest is not None else None
            if latest is not None:
                log_ = self.decision_log.setdefault(f"{s.namespace}/{v.name}", [])
                if not log_ or log_[-1]["id"] != latest.record_id:
                    log_.append(latest.to_dict())
            seen = _seen_by_engine(latest, v.name)
            variants[v.name] = {
                "code": outcome.code if outcome is not None else None,
                # what the engine decided on (Prometheus' max_over_time windows, or the pods' own reading),
                # next to the simulated values below
                "engine_kv": seen[0],
                "engine_queue": seen[1],
                "record": latest.record_id if latest is not None else None,
                "current": current,
                "desired": desired,
                "pods": after[v.name],
                "kv": pl.kv_cache_usage,
                "queue": pl.queue_length,
                "decision": action,
                "reason": decision.reason if decision is not None else "no decision this cycle",
            }
        return {
            "event": "cycle",
            "cycle": cycle,
            "t": round(t, 1),
            "elapsed": round(time.monotonic() - self.t0, 2),
            "progress": round(min(1.0, t / s.duration), 4),
            "load": round(state["load"], 3),
            "rho": round(state["rho"], 4) if math.isfinite(state["rho"]) else None,
            "errors": [f"{k}: {e}" for k, e in report.group_errors.items()],
            "variants": variants,
        }
