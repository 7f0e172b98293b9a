"""Everything one running operator owns, built from settings, started and stopped as a unit.

kopf handlers reach it through kopf's memo; tests and ``wva demo`` can build one with their own
parts (an embedded API, a different Prometheus) and hand it to kopf the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from wva.actuator.drain import DrainAwareScaler
from wva.actuator.metrics import MetricsEmitter
from wva.actuator.status import StatusWriter
from wva.authfilter import AuthFilter, KubeReviewer
from wva.collector import MetricsCollector, new_metrics_collector
from wva.collector.activity import RequestActivity
from wva.collector.v2 import PodScrapingSource, PodVAMapper
from wva.collector.v2.recording import RecordingMode
from wva.decisions import DecisionStore
from wva.inventory import Inventory
from wva.kube import KubeClient, KubeError, build_api_client
from wva.leader import LeaderElector
from wva.promconnect import build_prometheus_connect
from wva.resync import InventoryResync
from wva.saturation.config import SaturationConfigStore
from wva.saturation.engine import SaturationEngine
from wva.scalefromzero import ScaleFromZeroPoller, epp_source_from_settings, poller_from_settings
from wva.server import OperatorServer
from wva.servingcerts import ServingCertificate
from wva.settings import ActuationMode, MetricsSourceMode, Settings
from wva.sharding import ShardAssignment
from wva.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    inventory: Inventory
    config_store: SaturationConfigStore
    emitter: MetricsEmitter
    kube: KubeClient
    collector: MetricsCollector
    engine: SaturationEngine
    prom: Any = None
    server: OperatorServer | None = None
    elector: LeaderElector | None = None
    resync: InventoryResync | None = None
    from_zero: ScaleFromZeroPoller | None = None  # leader only, like the engine
    epp_source: Any = None
    drain_source: PodScrapingSource | None = None  # scrapes in-flight counts for the drain wait
    main_config: dict[str, str] = field(default_factory=dict)
    prometheus_ok: bool = False
    started: bool = False
    run_engine_loop: bool = True  # False: cycles run only when run_cycle() is called (tests, benchmarks)
    _probe_task: asyncio.Task[None] | None = None
    _saturation_data: dict[str, str] | None = None
    _reported_config_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        prom: Any = None,
        collector: MetricsCollector | None = None,
        kube: KubeClient | None = None,
        metrics_port: int = 8443,
        probe_port: int = 8081,
        serve_http: bool = True,
        run_engine_loop: bool = True,
    ) -> Runtime:
        emitter = MetricsEmitter(controller_instance=settings.controller_instance)
        ops = emitter.operator
        mapper = PodVAMapper()
        shard = ShardAssignment(settings.shards, settings.shard_index)
        inventory = Inventory(mapper, controller_instance=settings.controller_instance, shard=shard)
        ops.shard_info.labels(str(shard.index), str(shard.shards)).set(1)
        ops.shard_groups.set_function(lambda: inventory.model_groups)
        if kube is None:
            kube = KubeClient(
                build_api_client(settings.kube_api_url),
                on_request=lambda verb, res, outcome: ops.kube_requests.labels(verb, res, outcome).inc(),
                field_manager=shard.field_manager,
            )
        runtime_ref: dict[str, Runtime] = {}

        def on_query(outcome: str, seconds: float) -> None:
            ops.queries.labels("prometheus", outcome).inc()
            ops.query_latency.labels("prometheus").observe(seconds)
            rt = runtime_ref.get("rt")
            if rt is not None and outcome == "ok":
                rt.prometheus_ok = True

        def on_answer(series: int, size: int | None) -> None:
            ops.prometheus_response_series.observe(series)
            if size is not None:
                ops.prometheus_response_bytes.observe(size)

        pods_only = settings.metrics_source is MetricsSourceMode.PODS
        if prom is None and collector is None and not pods_only:
            prom = build_prometheus_connect(settings, on_query=on_query, on_answer=on_answer)
        direct = settings.actuation_mode is ActuationMode.DIRECT
        shared = collector is None and settings.metrics_source is not MetricsSourceMode.PROMETHEUS
        # the drain wait polls the victims' in-flight requests with a fresh scrape of each (Prometheus lags)
        pod_source = pod_scraping_source(settings, inventory, metrics=ops) \
            if shared or (direct and settings.drain_timeout > 0) else None
        if collector is None:
            collector = _build_collector(settings, prom, mapper, inventory, metrics=ops, pod_source=pod_source)
        config_store = SaturationConfigStore()
        status_writer = StatusWriter(kube, inventory, heartbeat=max(10 * settings.global_opt_interval, 60.0))
        engine = SaturationEngine(
            inventory,
            collector,
            config_store,
            status_writer,
            emitter,
            kube,
            interval=settings.global_opt_interval,
            direct_actuation=settings.actuation_mode is ActuationMode.DIRECT,
            group_by_accelerator=settings.group_by_accelerator,
            decisions=DecisionStore(settings.decision_ring_size),
            drain=DrainAwareScaler.from_settings(
                settings, kube, inventory.ready_pods, metrics=emitter.operator,
                in_flight=pod_source.in_flight if pod_source is not None and settings.drain_timeout > 0 else None,
            ) if direct else None,
        )
        if prom is not None:
            engine.activity = RequestActivity(prom, timeout=settings.prometheus_query_timeout)
        runtime = cls(settings, inventory, config_store, emitter, kube, collector, engine, prom=prom)
        runtime.drain_source = None if shared else pod_source  # a source of its own, stopped with the runtime
        runtime.run_engine_loop = run_engine_loop
        engine.before_cycle = runtime.refresh_config
        runtime_ref["rt"] = runtime
        if serve_http:
            tls, auth = metrics_security(settings, kube) if metrics_port >= 0 else (None, None)
            runtime.server = OperatorServer(
                emitter, runtime.readiness, metrics_port=metrics_port, probe_port=probe_port,
                decisions=engine.decisions, tls=tls, auth=auth,
            )
        runtime.resync = InventoryResync(
            kube, inventory, engine.forget, namespaces=settings.watch_namespaces, interval=settings.resync_interval
        )
        runtime.epp_source = epp_source_from_settings(settings, prom, metrics=ops)
        if runtime.epp_source is not None:
            runtime.from_zero = poller_from_settings(
                settings, runtime.epp_source, engine.zero_groups, runtime._scale_from_zero, metrics=ops
            )
        if settings.leader_election:
            runtime.elector = LeaderElector(
                kube,
                settings.pod_namespace,
                shard.lease_name(settings.lease_name),
                settings.pod_name,
                on_started=runtime._lead,
                on_stopped=runtime._follow,
                lease_duration=settings.lease_duration,
            )
        return runtime

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()
        await self._apply_main_config()
        await self.collector.start()
        if self.epp_source is not None and hasattr(self.epp_source, "start"):
            await self.epp_source.start()
        self._probe_task = asyncio.create_task(self._probe_prometheus(), name="wva-prometheus-probe")
        if self.resync is not None:
            self.resync.start()
        if self.elector is not None:
            self.elector.start()
        else:
            await self._lead()
        self.started = True
        log.info(
            "Operator started collector=%s actuation=%s interval=%.1fs leader_election=%s shard=%s lease=%s",
            "v2" if self.settings.collector_v2 else "v1",
            self.settings.actuation_mode.value,
            self.settings.global_opt_interval,
            self.settings.leader_election,
            self.inventory.shard,
            self.elector.name if self.elector is not None else "-",
        )

    async def stop(self) -> None:
        if self.elector is not None:
            await self.elector.stop()
        if self.from_zero is not None:
            await self.from_zero.stop()
        await self.engine.stop()
        await cancel_and_wait(self._probe_task)
        if self.resync is not None:
            await self.resync.stop()
        await self.collector.stop()
        if self.drain_source is not None:
            await self.drain_source.stop()
        if self.epp_source is not None and hasattr(self.epp_source, "stop"):
            await self.epp_source.stop()
        if self.server is not None:
            await self.server.stop()
        self.kube.close()
        self.started = False
        log.info("Operator stopped")

    async def _apply_main_config(self) -> None:
        """Read the main ConfigMap once at startup: collector v1's cache settings live there."""
        from wva.collector.legacy import PrometheusCollector, load_cache_config

        s = self.settings
        try:
            data = await self.kube.get_configmap_data(s.pod_namespace, s.config_map_name)
        except KubeError as exc:
            log.warning("Main ConfigMap unreadable, using defaults name=%s error=%s", s.config_map_name, exc)
            return
        self.main_config = data or {}
        if data is None or not isinstance(self.collector, PrometheusCollector) or self.prom is None:
            return
        cache_config, warnings = load_cache_config(data)
        for warning in warnings:
            log.warning("Main ConfigMap: %s", warning)
        self.collector = new_metrics_collector(
            False, self.prom, self.inventory.mapper, cache_config=cache_config,
            query_timeout=s.prometheus_query_timeout,
        )
        self.engine.collector = self.collector

    async def refresh_config(self) -> None:
        """Read the saturation ConfigMap (namespaced GET) and apply it if it changed.

        Called before every engine cycle, so an edit applies at the next cycle without a restart. A
        deleted ConfigMap keeps the last configuration; invalid entries are rejected with a Warning
        Event on the ConfigMap naming the key, and their last good version stays in force.
        """
        s = self.settings
        try:
            data = await self.kube.get_configmap_data(s.pod_namespace, s.saturation_config_map_name)
        except KubeError as exc:
            log.warning(
                "Saturation ConfigMap unreadable; keeping the current thresholds name=%s error=%s",
                s.saturation_config_map_name, exc,
            )
            return
        if data == self._saturation_data:
            self._publish_config_errors()  # again: a new leader's gauge starts at 0
            return
        previous, self._saturation_data = self._saturation_data, data
        if data is None:
            if previous is not None:
                self.config_store.clear_source()
                log.warning("Saturation ConfigMap deleted; keeping the last configuration name=%s",
                            s.saturation_config_map_name)
            return
        errors = self.config_store.update(data)
        log.info(
            "Saturation config updated name=%s entries=%d errors=%d version=%d",
            s.saturation_config_map_name, len(data), len(errors), self.config_store.version,
        )
        involved = {"apiVersion": "v1", "kind": "ConfigMap", "name": s.saturation_config_map_name,
                    "namespace": s.pod_namespace}
        for key, message in sorted(errors.items()):
            log.warning("Invalid saturation config entry configmap=%s key=%s error=%s",
                        s.saturation_config_map_name, key, message)
            if self._reported_config_errors.get(key) != message:
                try:
                    text = f"entry {key!r}: {message}"
                    await self.kube.create_event(involved, "InvalidConfiguration", text, "Warning")
                except KubeError as exc:
                    log.warning("Event post failed configmap=%s error=%s", s.saturation_config_map_name, exc)
        self._reported_config_errors = dict(errors)
        self._publish_config_errors()

    def _publish_config_errors(self) -> None:
        self.emitter.operator.config_errors.labels("saturation_config").set(len(self._reported_config_errors))

    async def _lead(self) -> None:
        self.emitter.operator.leader.set(1)
        if self.run_engine_loop:
            self.engine.start()
        if self.from_zero is not None:  # its own fast loop, also when the engine's cycles are driven by hand
            await self.from_zero.start()

    async def _follow(self) -> None:
        self.emitter.operator.leader.set(0)
        if self.from_zero is not None:
            await self.from_zero.stop()
        await self.engine.stop()
        self.emitter.clear()

    async def _scale_from_zero(self, namespace: str, deployment: str, replicas: int) -> None:
        """The poller saw requests queued for a model at zero: wake it on its cheapest variant now.

        With direct actuation the Deployment is patched at once; on the HPA/KEDA path the variant's
        ``wva_desired_replicas`` goes to ``replicas`` (KEDA activates the workload). The engine keeps
        that decision until the model has replicas again.
        """
        records = [r for r in self.inventory.variants_for_deployment(namespace, deployment) if r.problem is None]
        if not records:
            raise LookupError(f"no VariantAutoscaling targets {namespace}/{deployment}")
        record = records[0]
        self.engine.wake(namespace, record.model_id)
        if self.settings.actuation_mode is ActuationMode.DIRECT:
            await self.kube.patch_deployment_scale(namespace, deployment, replicas)
        else:
            self.emitter.emit(record.name, namespace, record.accelerator, replicas, 0)

    @property
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def readiness(self) -> tuple[bool, str]:
        if not self.started:
            return False, "starting"
        if not self.prometheus_ok:
            return False, "waiting for the metrics source to answer"
        return True, "ready (leader)" if self.is_leader else "ready (standby)"

    async def _probe_prometheus(self) -> None:
        """Until the metrics source has answered once, ask it every few seconds (never fatal)."""
        if self.settings.metrics_source is MetricsSourceMode.PODS:
            self.prometheus_ok = True  # no Prometheus in this configuration: pods are scraped directly
            return
        delay = 1.0
        while not self.prometheus_ok:
            custom_query = getattr(self.prom, "custom_query", None)
            if custom_query is None:
                self.prometheus_ok = True  # no Prometheus in this configuration (pod scraping)
                return
            started = time.monotonic()
            try:
                await asyncio.wait_for(asyncio.to_thread(custom_query, "vector(1)"), timeout=10.0)
                self.prometheus_ok = True
                log.info("Prometheus answered url=%s", self.settings.prometheus_base_url)
                return
            except Exception as exc:
                log.warning("Prometheus not answering yet url=%s error=%s", self.settings.prometheus_base_url, exc)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))
            delay = min(delay * 2, 30.0)


# --- the metrics port's security (WVA_METRICS_SECURE, WVA_METRICS_CERT_PATH) ------------------------------
def metrics_security(settings: Settings, kube: KubeClient) -> tuple[ServingCertificate | None, AuthFilter | None]:
    """The metrics port's certificate and auth filter, or (None, None) for plain HTTP.

    Raises ServingCertError when the certificate folder does not hold a usable pair.
    """
    if not settings.metrics_secure:
        return None, None
    if settings.metrics_cert_path:
        tls = ServingCertificate.from_directory(settings.metrics_cert_path)
    else:
        tls = ServingCertificate.self_signed([settings.pod_name])
    return tls, AuthFilter(KubeReviewer(kube))


# --- metrics source selection (METRICS_SOURCE) ---------------------------------------------------------
def pod_scraping_source(settings: Settings, inventory: Inventory, *, metrics: Any = None) -> PodScrapingSource:
    """The pod-scraping source the WVA_POD_METRICS_* settings describe (the collector's, and the drain wait's)."""
    from wva.collector.v2 import InventoryPodDiscovery, PodScrapingConfig, PodScrapingSource

    template = settings.pod_metrics_url_template

    def target_url(namespace: str, pod: str, ip: str, port: int) -> str:
        assert template is not None
        return template.format(namespace=namespace, pod=pod, ip=ip, port=port)

    discovery = InventoryPodDiscovery(
        inventory,
        port=settings.pod_metrics_port,
        scheme=settings.pod_metrics_scheme,
        path=settings.pod_metrics_path,
        target_url=target_url if template else None,
    )

    def on_scrape(outcome: str, seconds: float) -> None:
        if metrics is not None:
            metrics.queries.labels("pods", str(outcome)).inc()
            metrics.query_latency.labels("pods").observe(seconds)
            if str(outcome) != "ok":
                metrics.errors.labels("pod_scraping", str(outcome)).inc()

    return PodScrapingSource(
        discovery,
        PodScrapingConfig(
            scrape_timeout=settings.pod_scrape_timeout,
            max_concurrency=settings.pod_scrape_concurrency,
            token_path=settings.pod_metrics_token_path,
            verify_tls=not settings.pod_metrics_tls_insecure_skip_verify,
            ca_cert_path=settings.pod_metrics_ca_cert_path,
        ),
        on_scrape=on_scrape,
    )


def _build_collector(
    settings: Settings, prom: Any, mapper: PodVAMapper, inventory: Inventory, *, metrics: Any = None,
    pod_source: PodScrapingSource | None = None,
) -> MetricsCollector:
    """The collector METRICS_SOURCE selects: Prometheus, pod scraping, or Prometheus with pod failover.

    ``metrics`` (the emitter's OperatorMetrics) receives pod-scrape outcomes and failover switches.
    A VA annotation ``wva.llmd.ai/metrics-source`` overrides the mode for its model (in ``auto``).
    """
    from wva.collector.failover import FailoverCollector
    from wva.collector.v2 import METRICS_SOURCE_ANNOTATION, SourceRegistry, V2MetricsCollector
    mode = settings.metrics_source
    if mode is MetricsSourceMode.PROMETHEUS:
        return new_metrics_collector(
            settings.collector_v2, prom, mapper, query_timeout=settings.prometheus_query_timeout,
            batch_queries=settings.batch_queries, recording_rules=RecordingMode(settings.recording_rules),
        )
    source = pod_source or pod_scraping_source(settings, inventory, metrics=metrics)
    registry = SourceRegistry()
    registry.register("pods", source)
    pods = V2MetricsCollector(registry, mapper, source_name="pods")
    if mode is MetricsSourceMode.PODS:
        log.info("Metrics collector selected source=pods")
        return pods

    def mode_for(model_id: str, namespace: str) -> str | None:
        for record in inventory.variants():
            annotations = getattr(record, "annotations", None) or {}
            same_model = (record.model_id, record.namespace) == (model_id, namespace)
            if same_model and METRICS_SOURCE_ANNOTATION in annotations:
                return str(annotations[METRICS_SOURCE_ANNOTATION])
        return None

    if metrics is not None:  # both series from the start: increase() then counts the first failover too
        metrics.errors.labels("collector", "failover")
        metrics.errors.labels("collector", "failback")

    def on_switch(model_id: str, namespace: str, old: str, new: str) -> None:
        if metrics is not None:
            metrics.errors.labels("collector", "failover" if new == "pods" else "failback").inc()

    primary = new_metrics_collector(
        settings.collector_v2, prom, mapper, query_timeout=settings.prometheus_query_timeout,
        batch_queries=settings.batch_queries, recording_rules=RecordingMode(settings.recording_rules),
    )
    log.info("Metrics collector selected source=auto primary=prometheus fallback=pods")
    return FailoverCollector(
        primary,
        pods,
        "auto",
        probe_timeout=min(settings.prometheus_query_timeout, 3.0),
        mode_for=mode_for,
        on_switch=on_switch,
    )
