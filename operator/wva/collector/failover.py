"""``FailoverCollector``: serve each model from a primary collector, or from a fallback while it fails.

Modes (``METRICS_SOURCE``; a per-model override can replace it): ``prometheus`` uses only the
primary, ``pods`` only the fallback, ``auto`` the primary unless it fails. In ``auto``, for each
(model, namespace) separately:

- a primary availability error (``PrometheusError``), stale data (``MetricsStale``, or replica
  metrics none of which is fresh) or a raised collection error switches that model to the fallback,
  for this cycle and the following ones;
- while on the fallback the primary is probed once per cycle (bounded by ``probe_timeout``); when it
  reports the metrics available *and* returns replica metrics, the model switches back.

``source_for(model, namespace)`` names the collector that served the model's last collection; the
engine turns a change into an Event, a gauge and the MetricsAvailable condition message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from wva.collector import MetricsCollector
from wva.collector.types import (
    AvailabilityReason,
    FreshnessStatus,
    MetricsValidationResult,
    OptimizerMetrics,
    ReplicaMetrics,
    VariantRef,
)

__all__ = ["MODES", "FailoverCollector"]

log = logging.getLogger(__name__)

MODE_PRIMARY, MODE_FALLBACK, MODE_AUTO = "prometheus", "pods", "auto"
MODES = frozenset({MODE_PRIMARY, MODE_FALLBACK, MODE_AUTO})
DEFAULT_TRIGGERS = frozenset({AvailabilityReason.PROMETHEUS_ERROR, AvailabilityReason.METRICS_STALE})

Key = tuple[str, str]  # (model_id, namespace)
SwitchHook = Callable[[str, str, str, str], None]
"""Called on every switch with (model_id, namespace, from source, to source)."""


class FailoverCollector:
    """A :class:`~wva.collector.MetricsCollector` over two collectors, choosing one per model."""

    def __init__(
        self,
        primary: MetricsCollector,
        fallback: MetricsCollector,
        mode: str = MODE_AUTO,
        *,
        primary_name: str = "prometheus",
        fallback_name: str = "pods",
        probe_timeout: float = 3.0,
        mode_for: Callable[[str, str], str | None] | None = None,
        on_switch: SwitchHook | None = None,
        triggers: frozenset[AvailabilityReason] = DEFAULT_TRIGGERS,
    ) -> None:
        mode = str(mode).strip().lower()
        if mode not in MODES:
            raise ValueError(f"metrics source mode must be one of {sorted(MODES)}, got {mode!r}")
        if probe_timeout <= 0:
            raise ValueError(f"probe_timeout must be > 0, got {probe_timeout}")
        self.primary = primary
        self.fallback = fallback
        self.mode = mode
        self.primary_name = primary_name
        self.fallback_name = fallback_name
        self.probe_timeout = probe_timeout
        self._mode_for = mode_for
        self._on_switch = on_switch
        self._triggers = triggers
        self._on_fallback: dict[Key, str] = {}  # key -> why it switched
        self._recovering: set[Key] = set()

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.primary.start()
        await self.fallback.start()

    async def stop(self) -> None:
        for collector in (self.primary, self.fallback):
            try:
                await collector.stop()
            except Exception:
                log.exception("Collector stop failed collector=%s", type(collector).__name__)

    # --- engine hooks ----------------------------------------------------------------------------
    def source_for(self, model_id: str, namespace: str) -> str:
        return self.fallback_name if self._uses_fallback((model_id, namespace)) else self.primary_name

    def mode_of(self, model_id: str, namespace: str) -> str:
        """The effective mode for one model: its override if valid, else the global mode."""
        if self._mode_for is not None:
            override = self._mode_for(model_id, namespace)
            if override is not None:
                normalised = str(override).strip().lower()
                if normalised in MODES:
                    return normalised
                log.warning("Ignoring unknown metrics source override model=%s namespace=%s value=%r",
                            model_id, namespace, override)
        return self.mode

    def failed_over(self) -> dict[Key, str]:
        """Models (auto mode) currently served by the fallback, with the reason."""
        return dict(self._on_fallback)

    async def begin_cycle(self, models: Sequence[tuple[str, str]]) -> None:
        """Pass the cycle's models to each collector that will serve some of them (if it batches)."""
        to_primary = [m for m in models if self.mode_of(*m) != MODE_FALLBACK]
        to_fallback = [m for m in models if self._uses_fallback(m)]
        for collector, subset in ((self.primary, to_primary), (self.fallback, to_fallback)):
            hook = getattr(collector, "begin_cycle", None)
            if hook is None or not subset:
                continue
            try:
                await hook(subset)
            except Exception:
                log.exception("Collector begin_cycle failed collector=%s", type(collector).__name__)

    async def end_cycle(self) -> None:
        """Tell each collector that batches that the cycle is over."""
        for collector in (self.primary, self.fallback):
            hook = getattr(collector, "end_cycle", None)
            if hook is None:
                continue
            try:
                await hook()
            except Exception:
                log.exception("Collector end_cycle failed collector=%s", type(collector).__name__)

    def cache_lookups(self) -> tuple[int, int]:
        """(hits, misses) of both collectors' result caches together."""
        hits = misses = 0
        for collector in (self.primary, self.fallback):
            lookups = getattr(collector, "cache_lookups", None)
            if lookups is not None:
                h, m = lookups()
                hits, misses = hits + h, misses + m
        return hits, misses

    # --- MetricsCollector ------------------------------------------------------------------------
    async def validate_metrics_availability(self, model_id: str, namespace: str) -> MetricsValidationResult:
        key = (model_id, namespace)
        mode = self.mode_of(model_id, namespace)
        self._recovering.discard(key)
        if mode == MODE_FALLBACK:
            return await self.fallback.validate_metrics_availability(model_id, namespace)
        if mode == MODE_PRIMARY:
            self._on_fallback.pop(key, None)
            return await self.primary.validate_metrics_availability(model_id, namespace)
        probing = key in self._on_fallback
        try:
            call = self.primary.validate_metrics_availability(model_id, namespace)
            result = await (asyncio.wait_for(call, self.probe_timeout) if probing else call)
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            result = MetricsValidationResult(False, AvailabilityReason.PROMETHEUS_ERROR, f"Failed to query: {text}")
        if result.reason in self._triggers:
            self._switch_to_fallback(key, f"{result.reason.value}: {result.message}")
            return await self.fallback.validate_metrics_availability(model_id, namespace)
        if probing:
            if not result.available:  # answered, but without data yet: stay on the fallback
                return await self.fallback.validate_metrics_availability(model_id, namespace)
            self._recovering.add(key)  # confirmed by its replica metrics below
        return result

    async def collect_optimizer_metrics(self, model_id: str, namespace: str, va_name: str) -> OptimizerMetrics:
        key = (model_id, namespace)
        if self._uses_fallback(key) and key not in self._recovering:
            return await self.fallback.collect_optimizer_metrics(model_id, namespace, va_name)
        return await self.primary.collect_optimizer_metrics(model_id, namespace, va_name)

    async def collect_replica_metrics(
        self, model_id: str, namespace: str, variants: Sequence[VariantRef]
    ) -> list[ReplicaMetrics]:
        key = (model_id, namespace)
        mode = self.mode_of(model_id, namespace)
        if mode == MODE_FALLBACK:
            return await self.fallback.collect_replica_metrics(model_id, namespace, variants)
        if mode == MODE_PRIMARY:
            return await self.primary.collect_replica_metrics(model_id, namespace, variants)
        recovering = key in self._recovering
        if key in self._on_fallback and not recovering:
            return await self.fallback.collect_replica_metrics(model_id, namespace, variants)
        self._recovering.discard(key)
        try:
            replicas = await self.primary.collect_replica_metrics(model_id, namespace, variants)
        except Exception as exc:
            problem: str | None = f"replica metrics failed: {str(exc) or type(exc).__name__}"
        else:
            problem = _stale(replicas)
            if problem is None and recovering and not replicas:
                problem = "no replica metrics yet"
        if problem is None:
            if recovering:
                self._switch_back(key)
            return replicas
        if recovering:
            log.info("Primary metrics not ready yet model=%s namespace=%s reason=%s", model_id, namespace, problem)
        else:
            self._switch_to_fallback(key, problem)
        return await self.fallback.collect_replica_metrics(model_id, namespace, variants)

    # --- state -----------------------------------------------------------------------------------
    def _uses_fallback(self, key: Key) -> bool:
        mode = self.mode_of(*key)
        return mode == MODE_FALLBACK or (mode == MODE_AUTO and key in self._on_fallback)

    def _switch_to_fallback(self, key: Key, reason: str) -> None:
        if key in self._on_fallback:
            self._on_fallback[key] = reason
            return
        self._on_fallback[key] = reason
        log.warning(
            "Metrics source failover model=%s namespace=%s from=%s to=%s reason=%s",
            key[0], key[1], self.primary_name, self.fallback_name, reason,
        )
        self._notify(key, self.primary_name, self.fallback_name)

    def _switch_back(self, key: Key) -> None:
        if self._on_fallback.pop(key, None) is None:
            return
        log.warning(
            "Metrics source restored model=%s namespace=%s from=%s to=%s",
            key[0], key[1], self.fallback_name, self.primary_name,
        )
        self._notify(key, self.fallback_name, self.primary_name)

    def _notify(self, key: Key, old: str, new: str) -> None:
        if self._on_switch is None:
            return
        try:
            self._on_switch(key[0], key[1], old, new)
        except Exception:
            log.exception("Failover hook failed")


def _stale(replicas: Sequence[ReplicaMetrics]) -> str | None:
    """A reason when every replica's metrics are marked stale or unavailable (none is fresh)."""
    if not replicas:
        return None
    statuses = [r.metadata.freshness_status for r in replicas if r.metadata is not None]
    if len(statuses) == len(replicas) and all(s != FreshnessStatus.FRESH for s in statuses):
        return f"replica metrics are {statuses[0].value}"
    return None
