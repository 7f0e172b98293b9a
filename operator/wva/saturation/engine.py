"""The saturation engine: one cycle = group, collect, analyze, decide, write, emit.

Data flows one way: the inventory (kept by kopf watches) says what exists; the collector says how
loaded it is; the analyzer decides; the actuator writes status, publishes gauges, posts Events and,
in direct mode, scales. A failure in one model group never stops the others, missing data never
causes a scale-down, and a metrics outage keeps the last decision in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from wva import gctuning
from wva.actuator.drain import DrainAwareScaler
from wva.actuator.metrics import MetricsEmitter
from wva.actuator.status import ConditionUpdate, DecisionSummary, StatusUpdate, StatusWriter
from wva.api.v1alpha1 import (
    CONDITION_METRICS_AVAILABLE,
    CONDITION_OPTIMIZATION_READY,
    CONDITION_REPLICAS_READY,
    CONDITION_TARGET_RESOLVED,
    REASON_INVALID_CONFIGURATION,
    REASON_METRICS_UNAVAILABLE,
    REASON_OPTIMIZATION_SUCCEEDED,
    REASON_PROMETHEUS_ERROR,
    REASON_SATURATION_ONLY_MODE,
    REASON_TARGET_FOUND,
    REASON_TARGET_NOT_FOUND,
    Allocation,
    LoadProfile,
    ReplicasReadyReason,
)
from wva.collector import MetricsCollector
from wva.collector.activity import RequestActivity
from wva.collector.types import AvailabilityReason, MetricsValidationResult, OptimizerMetrics, ReplicaMetrics
from wva.decisions import DecisionStore, GroupDecision, VariantInput, decide_group
from wva.decisions.codes import ReasonCode
from wva.decisions.decide import DEFAULT_STABILIZATION_WINDOW, GroupHistory, next_history, pending_replicas
from wva.inventory import DeploymentRecord, Inventory, VariantRecord
from wva.kube import KubeClient, KubeError
from wva.saturation.config import SaturationConfigStore, SaturationScalingConfig, with_variant_overrides
from wva.saturation.reuse import decision_inputs, is_quiet, same_config
from wva.tasks import cancel_and_wait

log = logging.getLogger(__name__)

GroupKey = tuple[str, str, str]  # (model_id, namespace, accelerator)
MAX_BATCH = 256  # upstream reports a fixed maxBatch in currentAlloc


@dataclass(frozen=True, slots=True)
class Decision:
    variant: str
    namespace: str
    accelerator: str
    current: int
    previous: int
    target: int
    reason: str
    decided: bool  # False: no fresh decision this cycle, the last one is held

    @property
    def direction(self) -> str:
        if self.target > self.previous_or_current:
            return "up"
        if self.target < self.previous_or_current:
            return "down"
        return "none"

    @property
    def previous_or_current(self) -> int:
        return self.previous if self.previous > 0 else self.current


@dataclass
class CycleReport:
    started_at: float
    duration: float = 0.0
    groups: int = 0
    decisions: dict[tuple[str, str], Decision] = field(default_factory=dict)
    group_errors: dict[GroupKey, str] = field(default_factory=dict)
    invalid: dict[tuple[str, str], str] = field(default_factory=dict)
    kube_calls: int = 0
    reused: int = 0  # groups that kept last cycle's quiet decision: their inputs did not change


@dataclass(frozen=True, slots=True)
class _GroupMetrics:
    availability: MetricsValidationResult
    optimizer: OptimizerMetrics | None
    replicas: list[ReplicaMetrics] | None
    error: str | None
    source: str | None = None  # which metrics source served the group (collectors that can fail over)


@dataclass(slots=True)
class _Kept:
    """A group's last quiet decision, what it was decided from, and what applying it produced."""

    config: SaturationScalingConfig
    inputs: Hashable
    decision: GroupDecision
    applied: Hashable = None  # the members and metrics the decision was last applied with, all writes landed
    decisions: dict[tuple[str, str], Decision] | None = None


EventSink = Callable[[VariantRecord, str, str, str], Awaitable[None]]


GC_PAUSE_LIMIT = 5.0  # seconds of a cycle without automatic garbage collection, at most

STRETCH_AT = 0.8  # a cycle longer than this share of the interval spaces the next one out
MAX_STRETCH = 4.0  # ... by at most this factor of the interval


def effective_interval(interval: float, last_cycle: float) -> float:
    """The time from one cycle's start to the next: ``interval``, or, when the last cycle took more than
    ``STRETCH_AT`` of it, ``last_cycle / STRETCH_AT`` (bounded by ``MAX_STRETCH`` intervals), so that
    a Prometheus that needs the whole tick is not given cycles back to back."""
    if interval <= 0 or last_cycle <= STRETCH_AT * interval:
        return interval
    return min(interval * MAX_STRETCH, last_cycle / STRETCH_AT)


class SaturationEngine:
    """Runs cycles on demand (``run_cycle``) or on its interval (``start``/``stop``)."""

    def __init__(
        self,
        inventory: Inventory,
        collector: MetricsCollector,
        config_store: SaturationConfigStore,
        status_writer: StatusWriter,
        emitter: MetricsEmitter,
        kube: KubeClient,
        *,
        interval: float = 30.0,
        direct_actuation: bool = False,
        max_concurrent_groups: int = 16,
        group_by_accelerator: bool = True,
        decisions: DecisionStore | None = None,
        drain: DrainAwareScaler | None = None,
        reuse_decisions: bool = True,
        pause_gc: bool = True,
    ) -> None:
        self.inventory = inventory
        self.collector = collector
        self.config_store = config_store
        self.status_writer = status_writer
        self.emitter = emitter
        self.kube = kube
        self.interval = interval
        self.direct_actuation = direct_actuation
        self.group_by_accelerator = group_by_accelerator
        self.decisions = decisions if decisions is not None else DecisionStore()
        self.drain = drain  # direct scale-downs first mark the least-loaded pods (pod-deletion-cost)
        self.activity: RequestActivity | None = None  # scale-to-zero's request counters (Prometheus)
        self._woken: dict[tuple[str, str], float] = {}  # (namespace, model) -> when requests queued at zero
        self._stuck: set[tuple[str, str]] = set()  # VAs whose pending replicas are stuck (Event once per episode)
        # one owner of stabilisation: wva's window by default only when wva scales the Deployment itself
        self.default_stabilization_window = DEFAULT_STABILIZATION_WINDOW if direct_actuation else 0.0
        self._histories: dict[GroupKey, GroupHistory] = {}
        # a group's quiet decision stands while its inputs are unchanged (wva.saturation.reuse)
        self.reuse_decisions = reuse_decisions
        self._kept: dict[GroupKey, _Kept] = {}
        self._cache_seen = (0, 0)  # the collector's cache (hits, misses) already published
        self.pause_gc = pause_gc  # no automatic garbage collection during a cycle (wva.gctuning.paused)
        self.gc_pause_limit = GC_PAUSE_LIMIT
        self._max_groups = max_concurrent_groups
        self._task: asyncio.Task[None] | None = None
        self._cycle_lock = asyncio.Lock()
        self._reported_problems: dict[tuple[str, str], str] = {}
        self.before_cycle: Callable[[], Awaitable[None]] | None = None  # e.g. re-read the thresholds ConfigMap
        self._sources: dict[tuple[str, str], str] = {}
        self._source_series: set[tuple[str, str, str]] = set()
        self.last_report: CycleReport | None = None
        self.cycles = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="wva-saturation-engine")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        log.info("Saturation engine started interval=%.1fs", self.interval)
        ops = self.emitter.operator
        ops.interval.set(self.interval)
        stretched = False
        while True:
            started = time.monotonic()
            try:
                await self.run_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Engine cycle failed")
                ops.cycles.labels("error").inc()
            took = time.monotonic() - started
            # a fixed cadence: the next cycle starts one interval after this one started, unless the
            # cycles (mostly Prometheus) need nearly the whole interval: then they are spaced out
            effective = effective_interval(self.interval, took)
            ops.effective_interval.set(effective)
            if effective > self.interval and not stretched:
                log.warning(
                    "Engine interval stretched interval=%.1fs effective=%.1fs last_cycle=%.1fs: cycles take "
                    "more than %d%% of the interval (see wva_prometheus_response_series)",
                    self.interval, effective, took, STRETCH_AT * 100,
                )
            elif effective == self.interval and stretched:
                log.info("Engine interval back to normal interval=%.1fs last_cycle=%.1fs", self.interval, took)
            stretched = effective > self.interval
            await asyncio.sleep(max(0.0, effective - took))

    # --- one cycle ------------------------------------------------------------------------------
    async def run_cycle(self) -> CycleReport:
        """Run one cycle now; never overlaps a running one."""
        async with self._cycle_lock:
            if not self.pause_gc:
                return await self._run_cycle()
            with gctuning.paused() as resume:  # see wva.gctuning: the cycle's batch is walked by no collection
                # a long cycle (an outage, per-model fallbacks) gets automatic collection back
                handle = asyncio.get_running_loop().call_later(self.gc_pause_limit, resume)
                try:
                    return await self._run_cycle()
                finally:
                    handle.cancel()

    async def _run_cycle(self) -> CycleReport:
        calls_before = sum(self.kube.calls.values())
        report = CycleReport(started_at=time.time())
        t0 = time.perf_counter()
        if self.before_cycle is not None:
            try:
                await self.before_cycle()
            except Exception:
                log.exception("Refreshing configuration before the cycle failed; using the current one")
        known = {record.key for record in self.inventory.variants()}
        groups, side_writes = self._active_groups(report)
        report.groups = len(groups)
        begin_cycle = getattr(self.collector, "begin_cycle", None)
        if begin_cycle is not None and groups:
            # lets a collector fetch once per namespace for every model instead of once per model
            try:
                await begin_cycle(sorted({(model, ns) for model, ns, _acc in groups}))
            except Exception:
                log.exception("Collector begin_cycle failed; falling back to per-model queries")
        try:
            await self._gather(
                [self._process_group(key, members, report) for key, members in groups.items()] + side_writes
            )
        finally:
            end_cycle = getattr(self.collector, "end_cycle", None)
            if end_cycle is not None:  # the cycle's batch is served until here, however long it took
                try:
                    await end_cycle()
                except Exception:
                    log.exception("Collector end_cycle failed")
        self._forget_deleted_meanwhile(known)
        self._prune_sources({(model, ns) for model, ns, _acc in groups})
        for per_group in (self._histories, self._kept):  # groups no longer scaled leave no state behind
            for gone in [k for k in per_group if k not in groups]:
                del per_group[gone]
        report.duration = time.perf_counter() - t0
        report.kube_calls = sum(self.kube.calls.values()) - calls_before
        self.emitter.operator.cycle_duration.observe(report.duration)
        self.emitter.operator.cycles.labels("ok" if not report.group_errors else "partial").inc()
        self.emitter.operator.groups.labels("decided").inc(report.groups - report.reused)
        self.emitter.operator.groups.labels("kept").inc(report.reused)
        self._publish_cache_lookups()
        self.cycles += 1
        self.last_report = report
        log.info(
            "Engine cycle done groups=%d decisions=%d errors=%d duration=%.3fs",
            report.groups, len(report.decisions), len(report.group_errors), report.duration,
        )
        return report

    def _publish_cache_lookups(self) -> None:
        """``wva_metrics_cache_requests_total``: the collector's result-cache hits and misses since the last cycle."""
        lookups = getattr(self.collector, "cache_lookups", None)
        if lookups is None:
            return
        try:
            hits, misses = lookups()
        except Exception:  # a metric must never fail the cycle
            log.debug("Reading the collector's cache lookups failed", exc_info=True)
            return
        seen_hits, seen_misses = self._cache_seen
        counter = self.emitter.operator.cache_requests
        if hits >= seen_hits and misses >= seen_misses:  # a collector swapped for a new one starts at 0
            counter.labels("hit").inc(hits - seen_hits)
            counter.labels("miss").inc(misses - seen_misses)
        self._cache_seen = (hits, misses)

    async def _gather(self, tasks: list[Awaitable[None]]) -> None:
        """Run ``tasks`` with at most ``max_concurrent_groups`` in flight (a fixed pool of workers)."""
        if not tasks:
            return
        if not self._max_groups or len(tasks) <= self._max_groups:
            await asyncio.gather(*tasks)
            return
        pending = iter(tasks)

        async def worker() -> None:
            for coro in pending:  # the iterator is shared: each task is taken by exactly one worker
                await coro

        try:
            await asyncio.gather(*(worker() for _ in range(self._max_groups)))
        finally:
            # cancelled (the lease was lost, or the operator stops): close what no worker started, or each
            # would be reported as a coroutine never awaited
            for coro in pending:
                close = getattr(coro, "close", None)
                if close is not None:
                    close()

    def _active_groups(
        self, report: CycleReport
    ) -> tuple[dict[GroupKey, list[tuple[VariantRecord, DeploymentRecord]]], list[Awaitable[None]]]:
        """Group scalable VAs; VAs that can't be scaled get their condition written (in the background)."""
        candidates: dict[GroupKey, list[tuple[VariantRecord, DeploymentRecord]]] = defaultdict(list)
        side_writes: list[Awaitable[None]] = []
        for record in sorted(self.inventory.variants(), key=lambda r: r.key):
            deployment = self.inventory.deployment(record.namespace, record.deployment_name)
            if record.problem is not None:
                report.invalid[record.key] = record.problem
                side_writes.append(self._report_invalid(record, deployment))
                continue
            self._reported_problems.pop(record.key, None)
            if deployment is None or deployment.deleting:
                side_writes.append(self.resolve_target(record))
                continue
            accelerator = record.accelerator if self.group_by_accelerator else ""
            candidates[(record.model_id, record.namespace, accelerator)].append((record, deployment))
        groups: dict[GroupKey, list[tuple[VariantRecord, DeploymentRecord]]] = {}
        for key, members in candidates.items():
            if any(dep.spec_replicas <= 0 for _rec, dep in members) \
                    and not self.group_config(key[0], key[1], [rec for rec, _dep in members]).scale_to_zero:
                # scaled to zero by someone else: not ours to touch (upstream: "inactive")
                members = [(rec, dep) for rec, dep in members if dep.spec_replicas > 0]
            if members:
                groups[key] = members
        self.emitter.operator.config_errors.labels("variant").set(len(report.invalid))
        return groups, side_writes

    def group_config(self, model_id: str, namespace: str, records: Iterable[VariantRecord]) -> SaturationScalingConfig:
        """The model's configuration in force: the ConfigMap's, with its variants' ``spec.scaleToZero`` over it."""
        return with_variant_overrides(self.config_store.get(model_id, namespace), (r.scale_to_zero for r in records))

    async def _report_invalid(self, record: VariantRecord, deployment: DeploymentRecord | None) -> None:
        problem = record.problem or "invalid configuration"
        conditions = [
            ConditionUpdate(CONDITION_OPTIMIZATION_READY, False, REASON_INVALID_CONFIGURATION, problem),
            _target_condition(record, deployment),
        ]
        await self.status_writer.write(record, StatusUpdate(conditions=tuple(conditions)))
        if self._reported_problems.get(record.key) != problem:
            self._reported_problems[record.key] = problem
            await self._event(record, "Warning", "InvalidConfiguration", problem)

    async def resolve_target(self, record: VariantRecord) -> None:
        """Write TargetResolved for one VA from the inventory (also called by the VA/Deployment handlers)."""
        deployment = self.inventory.deployment(record.namespace, record.deployment_name)
        await self.status_writer.write(record, StatusUpdate(conditions=(_target_condition(record, deployment),)))

    async def _collect(self, model_id: str, namespace: str, members: Sequence[VariantRecord]) -> _GroupMetrics:
        try:
            availability = await self.collector.validate_metrics_availability(model_id, namespace)
        except Exception as exc:  # a collector bug or outage must not take the cycle down
            availability = MetricsValidationResult(
                False, AvailabilityReason.PROMETHEUS_ERROR, f"Failed to query Prometheus: {exc}"
            )
        if availability.reason == AvailabilityReason.PROMETHEUS_ERROR:
            return _GroupMetrics(availability, None, None, availability.message)
        optimizer: OptimizerMetrics | None = None
        if availability.available:
            try:
                optimizer = await self.collector.collect_optimizer_metrics(model_id, namespace, members[0].name)
            except Exception as exc:
                log.warning("Optimizer metrics failed model=%s namespace=%s error=%s", model_id, namespace, exc)
        try:
            replicas = await self.collector.collect_replica_metrics(model_id, namespace, [m.ref() for m in members])
        except Exception as exc:
            return _GroupMetrics(availability, optimizer, None, f"Failed to collect replica metrics: {exc}")
        return _GroupMetrics(availability, optimizer, replicas, None)

    async def _process_group(
        self, key: GroupKey, members: list[tuple[VariantRecord, DeploymentRecord]], report: CycleReport
    ) -> None:
        model_id, namespace, _accelerator = key
        try:
            records = [m[0] for m in members]
            config = self.group_config(model_id, namespace, records)
            at_zero = all(dep.spec_replicas <= 0 for _rec, dep in members)
            if config.scale_to_zero and at_zero:
                collected = _GroupMetrics(
                    MetricsValidationResult(False, AvailabilityReason.METRICS_MISSING, "scaled to zero: no pods"),
                    None, None, None,
                )
            else:
                collected = await self._collect(model_id, namespace, records)
            collected = await self._note_source(model_id, namespace, records, collected)
            if collected.error is not None:
                report.group_errors[key] = collected.error
                self.emitter.operator.errors.labels("collector", "group").inc()
            woken = at_zero and (namespace, model_id) in self._woken
            if not at_zero:
                self._woken.pop((namespace, model_id), None)  # it has replicas again: the wake is done
            idle = None
            if config.scale_to_zero and not at_zero and self.activity is not None:
                idle = await self.activity.idle(model_id, namespace, config.scale_to_zero_retention)
            variants = self._variant_inputs(namespace, members)
            reuse = self.reuse_decisions
            inputs = decision_inputs(variants, collected.replicas, collected.availability, collected.error,
                                     collected.source, idle, woken) if reuse else None
            kept = self._kept.get(key) if reuse else None
            applied = (tuple(members), collected.availability, collected.optimizer) if reuse else None
            if kept is not None and kept.inputs == inputs and same_config(kept.config, config):
                # nothing the decision reads changed since a quiet decision: it stands (see wva.saturation.reuse)
                decision = kept.decision
                report.reused += 1
                if kept.decisions is not None and kept.applied == applied \
                        and all(self.status_writer.current(rec) for rec, _dep in members):
                    report.decisions.update(kept.decisions)  # status, gauges and conditions are as written
                    return
            else:
                decision = self._decide(model_id, namespace, variants, collected, config, self._histories.get(key),
                                        idle, woken)
                self._histories[key] = next_history(self._histories.get(key), decision.record)
                self.decisions.add(decision.record, (record.key for record in records))
                kept = _Kept(config, inputs, decision) if reuse and is_quiet(decision, config) else None
                if kept is not None:
                    self._kept[key] = kept
                else:
                    self._kept.pop(key, None)
            reporting = _reporting_counts(decision)
            # one variant after the other, not a task each: applying rarely waits (unchanged status is
            # not written), and a task per VA was a tenth of a large fleet's cycle
            failure: Exception | None = None
            written = True
            for rec, dep in members:
                try:
                    written = await self._apply(rec, dep, collected, decision, report, reporting.get(rec.name, 0)) \
                        and written
                except Exception as exc:  # the group's other variants still get their decision
                    failure = failure or exc
            if failure is not None:
                raise failure
            if kept is not None and written:
                kept.applied = applied
                kept.decisions = {rec.key: report.decisions[rec.key] for rec, _dep in members}
            elif kept is not None:
                kept.decisions = None  # a write did not land: apply again next cycle
        except Exception as exc:
            report.group_errors[key] = f"{type(exc).__name__}: {exc}"
            self.emitter.operator.errors.labels("engine", "group").inc()
            log.exception("Model group failed model=%s namespace=%s", model_id, namespace)

    async def _note_source(
        self, model_id: str, namespace: str, records: list[VariantRecord], collected: _GroupMetrics
    ) -> _GroupMetrics:
        """Record which source served this model; a change is logged, counted and posted as an Event."""
        source_for = getattr(self.collector, "source_for", None)
        if source_for is None:
            return collected
        source = str(source_for(model_id, namespace))
        previous = self._sources.get((model_id, namespace))
        self._sources[(model_id, namespace)] = source
        gauge = self.emitter.operator.metrics_source
        if previous is not None and previous != source:
            if (namespace, model_id, previous) in self._source_series:
                self._source_series.discard((namespace, model_id, previous))
                gauge.remove(namespace, model_id, previous)
            log.warning(
                "Metrics source changed model=%s namespace=%s from=%s to=%s", model_id, namespace, previous, source
            )
            await asyncio.gather(
                *(
                    self._event(r, "Warning" if source != "prometheus" else "Normal", "MetricsSourceChanged",
                                f"metrics for model {model_id} now come from {source} (was {previous})")
                    for r in records
                )
            )
        gauge.labels(namespace, model_id, source).set(1)
        self._source_series.add((namespace, model_id, source))
        return dataclasses.replace(collected, source=source)

    def _prune_sources(self, active: set[tuple[str, str]]) -> None:
        """Forget the source of models no longer scaled (deleted VAs), with their gauge series."""
        for model_id, namespace in [k for k in self._sources if k not in active]:
            source = self._sources.pop((model_id, namespace))
            if (namespace, model_id, source) in self._source_series:
                self._source_series.discard((namespace, model_id, source))
                self.emitter.operator.metrics_source.remove(namespace, model_id, source)

    def _variant_inputs(
        self, namespace: str, members: list[tuple[VariantRecord, DeploymentRecord]]
    ) -> list[VariantInput]:
        return [
            VariantInput(
                name=record.name,
                accelerator=record.accelerator,
                cost=record.cost,
                current_replicas=deployment.current_replicas,
                previous_desired=record.previous_desired,
                min_replicas=record.min_replicas,
                max_replicas=record.max_replicas,
                pods=tuple(p.name for p in self.inventory.ready_pods(namespace, deployment.name)),
                ready_replicas=deployment.ready_replicas,
                cold_start=self.inventory.cold_starts.median(namespace, deployment.name),
            )
            for record, deployment in members
        ]

    def _decide(
        self,
        model_id: str,
        namespace: str,
        variants: list[VariantInput],
        collected: _GroupMetrics,
        config: SaturationScalingConfig,
        history: GroupHistory | None = None,
        idle: bool | None = None,
        woken: bool = False,
    ) -> GroupDecision:
        unavailable = collected.error
        if unavailable is None and not collected.availability.available:
            unavailable = collected.availability.message
        return decide_group(
            model_id, namespace, variants, collected.replicas, config,
            now=time.time(), unavailable=unavailable, source=collected.source, history=history,
            default_stabilization_window=self.default_stabilization_window, idle=idle, woken=woken,
        )

    async def _apply(
        self,
        record: VariantRecord,
        deployment: DeploymentRecord,
        collected: _GroupMetrics,
        group: GroupDecision,
        report: CycleReport,
        reporting: int = 0,
    ) -> bool:
        """Write, publish and (direct mode) scale one variant's decision; False when its status write failed."""
        previous = record.previous_desired
        current = deployment.current_replicas
        outcome = group.outcome(record.name)
        decided = outcome.decided
        target = outcome.target
        if decided:
            action = "scale-up" if target > current else "scale-down" if target < current else "no-change"
            reason = f"saturation-only mode: {action}; {group.analysis_reason}"
        else:
            reason = "No scaling decision (optimization loop)"
        decision = Decision(
            record.name, record.namespace, record.accelerator, current, previous, target, reason, decided
        )
        report.decisions[record.key] = decision

        conditions = [_target_condition(record, deployment), _metrics_condition(collected)]
        if decided:
            conditions.append(
                ConditionUpdate(
                    CONDITION_OPTIMIZATION_READY, True, REASON_SATURATION_ONLY_MODE,
                    f"saturation-only decision: {reason} (target: {target} replicas)",
                )
            )
        elif collected.error is not None or not collected.availability.available:
            conditions.append(
                ConditionUpdate(
                    CONDITION_OPTIMIZATION_READY, False, REASON_METRICS_UNAVAILABLE,
                    f"metrics unavailable, holding the last decision of {target} replicas: "
                    f"{collected.error or collected.availability.message}",
                )
            )
        else:
            conditions.append(
                ConditionUpdate(
                    CONDITION_OPTIMIZATION_READY, True, REASON_OPTIMIZATION_SUCCEEDED,
                    "Optimization loop ran (no scaling change needed)",
                )
            )

        if decided:
            conditions.append(await self._replicas_condition(record, group, outcome.code))
        self.emitter.emit(record.name, record.namespace, record.accelerator, target, deployment.status_replicas,
                          ready=deployment.ready_replicas, reporting=reporting)
        self.emitter.emit_reason(record.name, record.namespace, record.model_id, outcome.code)
        given = next((v for v in group.record.variants if v.name == record.name), None)
        self.emitter.emit_cold_start(record.name, record.namespace, record.accelerator,
                                     given.cold_start if given is not None else None)
        shadow = group.record.shadow
        shadow_outcome = next((o for o in shadow.outcomes if o.variant == record.name), None) if shadow else None
        self.emitter.emit_shadow(record.name, record.namespace, record.accelerator,
                                 shadow_outcome.target if shadow_outcome is not None else None)
        applied = True
        if self.direct_actuation and target != deployment.spec_replicas:
            applied = await self._scale(record, deployment, target, collected.replicas)
        written = await self.status_writer.write(
            record,
            StatusUpdate(
                conditions=tuple(conditions),
                desired=(target, record.accelerator),
                current_alloc=_allocation(record, deployment, collected.optimizer),
                actuation_applied=applied,
                decision=DecisionSummary(
                    outcome.code, group.record.config_hash, outcome.message, group.record.record_id
                ),
            ),
        )
        if target != decision.previous_or_current and decided:
            invalidate = getattr(self.collector, "invalidate_variant", None)
            if invalidate is not None:  # collector v1 caches per model; a change makes the cache stale
                invalidate(record.model_id, record.namespace, record.name)
            direction = "up" if target > decision.previous_or_current else "down"
            self.emitter.operator.decisions.labels(record.namespace, record.name, direction).inc()
            log.info(
                "Scaling decision namespace=%s va=%s model=%s from=%d to=%d code=%s record=%s reason=%s",
                record.namespace, record.name, record.model_id, decision.previous_or_current, target,
                outcome.code, group.record.record_id, reason,
            )
            await self._event(
                record, "Normal", "ScaledUp" if direction == "up" else "ScaledDown",
                f"{outcome.code}: {outcome.message}",
            )
        return written

    async def _replicas_condition(self, record: VariantRecord, group: GroupDecision, code: str) -> ConditionUpdate:
        """ReplicasReady: all up, starting, or stuck (then a Warning Event, once per episode)."""
        pending = pending_replicas(group.record, record.name)
        stuck = code == ReasonCode.PENDING_REPLICAS_STUCK
        if stuck and record.key not in self._stuck:
            self._stuck.add(record.key)
            await self._event(record, "Warning", ReplicasReadyReason.PENDING_REPLICAS_STUCK,
                              f"{pending} replica(s) pending longer than pendingStuckAfter; the next variant by "
                              "cost takes the model's scale-up steps")
        elif not stuck:
            self._stuck.discard(record.key)
        if stuck:
            return ConditionUpdate(CONDITION_REPLICAS_READY, False, ReplicasReadyReason.PENDING_REPLICAS_STUCK,
                                   f"{pending} replica(s) pending longer than pendingStuckAfter")
        if pending:
            return ConditionUpdate(CONDITION_REPLICAS_READY, False, ReplicasReadyReason.REPLICAS_STARTING,
                                   f"{pending} replica(s) starting; no further scale-up until they are ready")
        cold = next((v.cold_start for v in group.record.variants if v.name == record.name), None)
        learnt = f"; cold start {cold:.0f}s (median creation-to-Ready)" if cold is not None else ""
        return ConditionUpdate(CONDITION_REPLICAS_READY, True, ReplicasReadyReason.ALL_REPLICAS_READY,
                               f"all replicas ready{learnt}")

    async def _scale(
        self,
        record: VariantRecord,
        deployment: DeploymentRecord,
        target: int,
        replicas: Sequence[ReplicaMetrics] | None,
    ) -> bool:
        if self.drain is not None and target < deployment.spec_replicas:
            loads = {m.pod_name: (m.kv_cache_usage if m.kv_known else None, None)
                     for m in replicas or () if m.variant_name == record.name}
            await self.drain.prepare_scale_down(
                record.namespace, record.deployment_name, deployment.spec_replicas, target, loads
            )
        try:
            await self.kube.patch_deployment_scale(record.namespace, record.deployment_name, target)
            return True
        except KubeError as exc:
            self.emitter.operator.errors.labels("actuator", "scale").inc()
            log.warning(
                "Direct scale failed namespace=%s deployment=%s replicas=%d error=%s",
                record.namespace, record.deployment_name, target, exc,
            )
            return False

    async def _event(self, record: VariantRecord, event_type: str, reason: str, message: str) -> None:
        try:
            await self.kube.create_event(record.involved_object(), reason, message, event_type)
        except KubeError as exc:
            self.emitter.operator.errors.labels("events", "post").inc()
            log.warning("Event post failed namespace=%s va=%s reason=%s error=%s",
                        record.namespace, record.name, reason, exc)

    def wake(self, namespace: str, model_id: str) -> None:
        """Requests are queued for a model at zero: its cheapest variant's decision becomes 1 until it has
        replicas again (so no cycle pushes it back to 0 while the Deployment catches up)."""
        self._woken[(namespace, model_id)] = time.time()

    def zero_groups(self) -> list[tuple[str, str, str]]:
        """(namespace, model, cheapest variant's Deployment) of every model with scale-to-zero on whose
        variants are all at 0: what the scale-from-zero poller watches (every poll, so it returns at once
        when no configuration turns scale-to-zero on)."""
        if not (self.config_store.any_scale_to_zero or self.inventory.any_scale_to_zero_opt_in):
            return []
        by_model: dict[tuple[str, str], list[tuple[VariantRecord, DeploymentRecord | None]]] = defaultdict(list)
        for record in self.inventory.variants():
            if record.problem is None:
                deployment = self.inventory.deployment(record.namespace, record.deployment_name)
                by_model[(record.namespace, record.model_id)].append((record, deployment))
        out: list[tuple[str, str, str]] = []
        for (namespace, model_id), members in sorted(by_model.items()):
            if not self.group_config(model_id, namespace, (r for r, _d in members)).scale_to_zero:
                continue
            if all(dep is not None and not dep.deleting and dep.spec_replicas <= 0 for _r, dep in members):
                cheapest = min(members, key=lambda m: (m[0].cost, m[0].name))[0]
                out.append((namespace, model_id, cheapest.deployment_name))
        return out

    def _forget_deleted_meanwhile(self, known_at_start: set[tuple[str, str]]) -> None:
        """Forget again every VA the inventory no longer has but the cycle's outputs still hold.

        A VA's DELETED event can arrive while its group is being collected (or while a status write for
        it is in flight); the event forgets the VA, and then the cycle, deciding for the record it read
        before, publishes its gauges, keeps its decision record and writes its status, which would bring
        that state back for good. No await separates this check from ``forget``, so no event can come
        between them.
        """
        held = known_at_start | set(self.emitter.series()) | set(self.decisions.keys()) | self.status_writer.tracked()
        for namespace, name in held:
            if self.inventory.variant(namespace, name) is None:
                self.forget(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """A VA was deleted: drop its series and per-VA state."""
        self.decisions.forget(namespace, name)
        self.emitter.remove(name, namespace)
        self.status_writer.forget(namespace, name)
        self._reported_problems.pop((namespace, name), None)
        self._stuck.discard((namespace, name))


def _target_condition(record: VariantRecord, deployment: DeploymentRecord | None) -> ConditionUpdate:
    name = record.deployment_name
    if deployment is None or deployment.deleting:
        return ConditionUpdate(
            CONDITION_TARGET_RESOLVED, False, REASON_TARGET_NOT_FOUND, f"Scale target Deployment {name} not found"
        )
    return ConditionUpdate(
        CONDITION_TARGET_RESOLVED, True, REASON_TARGET_FOUND, f"Scale target Deployment {name} found"
    )


def _metrics_condition(collected: _GroupMetrics) -> ConditionUpdate:
    availability = collected.availability
    suffix = f" (source: {collected.source})" if collected.source else ""
    if collected.error is not None and availability.reason != AvailabilityReason.PROMETHEUS_ERROR:
        return ConditionUpdate(CONDITION_METRICS_AVAILABLE, False, REASON_PROMETHEUS_ERROR, collected.error + suffix)
    return ConditionUpdate(
        CONDITION_METRICS_AVAILABLE, availability.available, availability.reason.value, availability.message + suffix
    )


def _allocation(
    record: VariantRecord, deployment: DeploymentRecord, optimizer: OptimizerMetrics | None
) -> Allocation | None:
    if optimizer is None or not record.accelerator:
        return None
    return Allocation(
        accelerator=record.accelerator,
        num_replicas=deployment.spec_replicas,
        max_batch=MAX_BATCH,
        itl_average=_decimal(optimizer.itl_seconds * 1000.0),
        ttft_average=_decimal(optimizer.ttft_seconds * 1000.0),
        load=LoadProfile(
            arrival_rate=_decimal(optimizer.arrival_rate),
            avg_input_tokens=_decimal(optimizer.avg_input_tokens),
            avg_output_tokens=_decimal(optimizer.avg_output_tokens),
        ),
    )


def _decimal(value: float) -> str:
    """Two decimals, never negative or non-finite (the CRD pattern is an unsigned decimal)."""
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        value = 0.0
    return f"{value:.2f}"


def _reporting_counts(decision: GroupDecision) -> dict[str, int]:
    """Per variant, the replicas whose KV-cache usage and queue length both reached this decision."""
    inputs = decision.record.inputs
    counts: dict[str, int] = {}
    for variant, kv, queue in zip(inputs.variants, inputs.kv, inputs.queue, strict=True):
        if kv == kv and queue == queue:  # NaN marks an unknown signal
            counts[variant] = counts.get(variant, 0) + 1
    return counts
