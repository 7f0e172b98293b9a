"""The operator's Prometheus metrics: the ``wva_*`` decision gauges and its own health.

Everything lives in one ``CollectorRegistry`` per operator instance (not the process-global one), so
tests and the demo can run several instances side by side, and a standby replica can clear its
decision series entirely.
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DECISION_LABELS = ("variant_name", "namespace", "accelerator_type")
REASON_LABELS = ("variant_name", "namespace", "model_id", "reason")
CONFIG_ERROR_KINDS = ("saturation_config", "variant")
"""``wva_config_errors{kind}``: invalid entries of the saturation ConfigMap; VAs rejected as invalid."""


class OperatorMetrics:
    """Self-metrics: cycle duration, queries, cache, API calls, errors, leadership, scale from zero, config."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cycle_duration = Histogram(
            "wva_engine_cycle_duration_seconds",
            "Wall time of one saturation engine cycle.",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.cycles = Counter(
            "wva_engine_cycles_total", "Engine cycles run, by outcome.", ["outcome"], registry=registry
        )
        self.groups = Counter(
            "wva_engine_groups_total",
            "Model groups handled by engine cycles: decided again, or kept (inputs unchanged since a quiet decision).",
            ["outcome"],
            registry=registry,
        )
        self.interval = Gauge(
            "wva_engine_interval_seconds", "The configured engine interval (GLOBAL_OPT_INTERVAL).", registry=registry
        )
        self.effective_interval = Gauge(
            "wva_engine_effective_interval_seconds",
            "The time between cycle starts in force: the interval, or longer (at most 4 times) while cycles "
            "take more than 80% of it.",
            registry=registry,
        )
        self.prometheus_response_series = Histogram(
            "wva_prometheus_response_series",
            "Series in one Prometheus query answer.",
            registry=registry,
            buckets=(1, 10, 100, 1000, 10000, 100000, 1000000),
        )
        self.prometheus_response_bytes = Histogram(
            "wva_prometheus_response_bytes",
            "Bytes of one Prometheus query answer (queries sent as POST, the default).",
            registry=registry,
            buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8),
        )
        self.queries = Counter(
            "wva_metrics_queries_total",
            "Metric source queries, by source and outcome.",
            ["source", "outcome"],
            registry=registry,
        )
        self.query_latency = Histogram(
            "wva_metrics_query_duration_seconds",
            "Latency of one metric source query (including retries).",
            ["source"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.cache_requests = Counter(
            "wva_metrics_cache_requests_total",
            "Lookups of the metrics collector's result cache (v1: per model; v2: the source's), by result.",
            ["result"],
            registry=registry,
        )
        self.kube_requests = Counter(
            "wva_kube_api_requests_total",
            "Kubernetes API requests made by the engine and actuator, by verb, resource and outcome.",
            ["verb", "resource", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "wva_errors_total", "Errors by component and kind.", ["component", "kind"], registry=registry
        )
        self.decisions = Counter(
            "wva_scaling_decisions_total",
            "Replica changes decided, by direction.",
            ["namespace", "variant_name", "direction"],
            registry=registry,
        )
        self.leader = Gauge("wva_leader", "1 while this replica runs the engine.", registry=registry)
        self.metrics_source = Gauge(
            "wva_metrics_source_active",
            "1 for the metrics source that served the model's last cycle.",
            ["namespace", "model_id", "source"],
            registry=registry,
        )
        self.scale_from_zero = Counter(
            "wva_scale_from_zero_total",
            "Scale-ups from zero to one replica on a queued EPP request, by outcome (scaled, failed).",
            ["namespace", "model_id", "outcome"],
            registry=registry,
        )
        self.scale_from_zero_poll_duration = Histogram(
            "wva_scale_from_zero_poll_duration_seconds",
            "Latency of one batched EPP queue read of the scale-from-zero poller.",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.scale_from_zero_models = Gauge(
            "wva_scale_from_zero_models", "Models at zero replicas watched by the scale-from-zero poller.",
            registry=registry,
        )
        self.config_errors = Gauge(
            "wva_config_errors",
            "Configuration problems in force, by kind: invalid saturation ConfigMap entries (saturation_config), "
            "VariantAutoscalings rejected as invalid (variant).",
            ["kind"],
            registry=registry,
        )
        for kind in CONFIG_ERROR_KINDS:
            self.config_errors.labels(kind).set(0)
        self.shard_info = Gauge(
            "wva_shard_info",
            "1, labelled with this process' shard (shard_index of shards); shards=1 when unsharded.",
            ["shard_index", "shards"],
            registry=registry,
        )
        self.shard_groups = Gauge(
            "wva_shard_groups",
            "Model groups (namespace, model) this process' shard owns: those its inventory holds VAs of.",
            registry=registry,
        )


class MetricsEmitter:
    """Publishes each variant's decision as ``wva_desired_replicas`` & co. (the HPA/KEDA input)."""

    def __init__(self, registry: CollectorRegistry | None = None, controller_instance: str = "") -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.controller_instance = controller_instance
        labels = [*DECISION_LABELS, "controller_instance"] if controller_instance else list(DECISION_LABELS)
        self.desired = Gauge(
            "wva_desired_replicas", "Replicas wva decided for the variant.", labels, registry=self.registry
        )
        self.current = Gauge(
            "wva_current_replicas", "Replicas the variant's Deployment has.", labels, registry=self.registry
        )
        self.ratio = Gauge(
            "wva_desired_ratio",
            "Desired over current replicas (= desired when current is 0).",
            labels,
            registry=self.registry,
        )
        self.shadow_desired = Gauge(
            "wva_shadow_desired_replicas",
            "Replicas the model's shadow (candidate) configuration would decide; never acted on.",
            labels,
            registry=self.registry,
        )
        self.cold_start = Gauge(
            "wva_cold_start_seconds",
            "Median creation-to-Ready time of the variant's recent pods, learnt from the pod watch.",
            labels,
            registry=self.registry,
        )
        self.ready = Gauge(
            "wva_ready_replicas", "Ready replicas of the variant's Deployment.", labels, registry=self.registry
        )
        self.reporting = Gauge(
            "wva_reporting_replicas",
            "Replicas of the variant whose KV-cache usage and queue length both reached the last decision.",
            labels,
            registry=self.registry,
        )
        reason_labels = [*REASON_LABELS, "controller_instance"] if controller_instance else list(REASON_LABELS)
        self.decision_reason = Gauge(
            "wva_decision_reason",
            "1 for the reason code of the variant's last decision (see wva.decisions.codes).",
            reason_labels,
            registry=self.registry,
        )
        self.operator = OperatorMetrics(self.registry)
        self._lock = threading.Lock()
        self._reason_series: dict[tuple[str, str], tuple[str, ...]] = {}
        self._cold_series: dict[tuple[str, str], tuple[str, ...]] = {}
        self._series: dict[tuple[str, str], tuple[str, ...]] = {}
        self._shadow_series: dict[tuple[str, str], tuple[str, ...]] = {}
        # what each emit_* last published per (kind, namespace, variant): an unchanged value is not set again
        # (a labels() lookup per series and VA each cycle was a twentieth of a large fleet's cycle)
        self._published: dict[tuple[str, str, str], tuple[object, ...]] = {}

    def _labels(self, variant_name: str, namespace: str, accelerator: str) -> tuple[str, ...]:
        base = (variant_name, namespace, accelerator)
        return (*base, self.controller_instance) if self.controller_instance else base

    def emit(
        self,
        variant_name: str,
        namespace: str,
        accelerator: str,
        desired: int,
        current: int,
        *,
        ready: int | None = None,
        reporting: int | None = None,
    ) -> None:
        """Publish one variant's decision; a changed accelerator replaces the old series.

        ``ready`` (the Deployment's ready replicas) and ``reporting`` (replicas whose signals reached
        the decision) are published when given; None leaves their last value.
        """
        labels = self._labels(variant_name, namespace, accelerator)
        state = (labels, desired, current, ready, reporting)
        with self._lock:
            if self._published.get(("decision", namespace, variant_name)) == state:
                return
            previous = self._series.get((namespace, variant_name))
            if previous is not None and previous != labels:
                self._remove_labels(previous)
            self._series[(namespace, variant_name)] = labels
            self._published[("decision", namespace, variant_name)] = state
            self.desired.labels(*labels).set(desired)
            self.current.labels(*labels).set(current)
            self.ratio.labels(*labels).set(desired / current if current > 0 else desired)
            if ready is not None:
                self.ready.labels(*labels).set(ready)
            if reporting is not None:
                self.reporting.labels(*labels).set(reporting)

    def emit_reason(self, variant_name: str, namespace: str, model_id: str, reason: str | None) -> None:
        """Publish (or, with None, drop) the reason code of a variant's last decision: one series at a time."""
        key = (namespace, variant_name)
        base = (variant_name, namespace, model_id, reason or "")
        labels = (*base, self.controller_instance) if self.controller_instance else base
        with self._lock:
            previous = self._reason_series.get(key)
            if reason is not None and previous == labels:
                return  # the series exists and its value is always 1
            if previous is not None and (reason is None or previous != labels):
                with contextlib.suppress(KeyError):
                    self.decision_reason.remove(*previous)
                self._reason_series.pop(key, None)
            if reason is not None:
                self._reason_series[key] = labels
                self.decision_reason.labels(*labels).set(1)

    def emit_shadow(self, variant_name: str, namespace: str, accelerator: str, desired: int | None) -> None:
        """Publish (or, with None, drop) what the shadow configuration would decide for one variant."""
        key = (namespace, variant_name)
        labels = self._labels(variant_name, namespace, accelerator)
        with self._lock:
            previous = self._shadow_series.get(key)
            if desired is not None and previous == labels and self._published.get(("shadow", *key)) == (desired,):
                return
            if previous is not None and (desired is None or previous != labels):
                with contextlib.suppress(KeyError):
                    self.shadow_desired.remove(*previous)
                self._shadow_series.pop(key, None)
                self._published.pop(("shadow", *key), None)
            if desired is not None:
                self._shadow_series[key] = labels
                self._published[("shadow", *key)] = (desired,)
                self.shadow_desired.labels(*labels).set(desired)

    def emit_cold_start(self, variant_name: str, namespace: str, accelerator: str, seconds: float | None) -> None:
        """Publish (or, with None, drop) a variant's learnt cold-start time."""
        key = (namespace, variant_name)
        labels = self._labels(variant_name, namespace, accelerator)
        with self._lock:
            previous = self._cold_series.get(key)
            if seconds is not None and previous == labels and self._published.get(("cold", *key)) == (seconds,):
                return
            if previous is not None and (seconds is None or previous != labels):
                with contextlib.suppress(KeyError):
                    self.cold_start.remove(*previous)
                self._cold_series.pop(key, None)
                self._published.pop(("cold", *key), None)
            if seconds is not None:
                self._cold_series[key] = labels
                self._published[("cold", *key)] = (seconds,)
                self.cold_start.labels(*labels).set(seconds)

    def remove(self, variant_name: str, namespace: str) -> bool:
        """Drop a deleted variant's series. Returns whether it had any."""
        self.emit_cold_start(variant_name, namespace, "", None)
        self.emit_reason(variant_name, namespace, "", None)
        for direction in ("up", "down"):  # its decision counters too: dead series would pile up with churn
            with contextlib.suppress(KeyError):
                self.operator.decisions.remove(namespace, variant_name, direction)
        with self._lock:
            shadow = self._shadow_series.pop((namespace, variant_name), None)
            if shadow is not None:
                with contextlib.suppress(KeyError):
                    self.shadow_desired.remove(*shadow)
            self._published.pop(("decision", namespace, variant_name), None)
            labels = self._series.pop((namespace, variant_name), None)
            if labels is None:
                return False
            self._remove_labels(labels)
            return True

    def clear(self) -> None:
        """Drop every decision series (a replica that lost leadership publishes none)."""
        with self._lock:
            self._published.clear()
            for labels in self._series.values():
                self._remove_labels(labels)
            self._series.clear()
            for labels in self._shadow_series.values():
                with contextlib.suppress(KeyError):
                    self.shadow_desired.remove(*labels)
            self._shadow_series.clear()
            for labels in self._cold_series.values():
                with contextlib.suppress(KeyError):
                    self.cold_start.remove(*labels)
            self._cold_series.clear()
            for labels in self._reason_series.values():
                with contextlib.suppress(KeyError):
                    self.decision_reason.remove(*labels)
            self._reason_series.clear()
            for kind in CONFIG_ERROR_KINDS:  # the leader's configuration problems are its own
                self.operator.config_errors.labels(kind).set(0)

    def series(self) -> dict[tuple[str, str], tuple[str, ...]]:
        with self._lock:
            return dict(self._series)

    def _remove_labels(self, labels: tuple[str, ...]) -> None:
        for gauge in (self.desired, self.current, self.ratio, self.ready, self.reporting):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def value(self, name: str, **labels: str) -> float | None:
        """Read a sample back (for status output and tests)."""
        return self.registry.get_sample_value(name, labels)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
