"""One model group's decision, as a pure function: the engine, ``wva explain`` and ``wva backtest`` share it.

``decide_group`` runs the analyzer and the target rules, then wva's guards, and returns every
variant's target with a reason code and a one-line message about that variant, together with the
:class:`~wva.decisions.record.DecisionRecord` that explains it. No I/O, no clock: ``now`` is given.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from wva import __version__
from wva.collector.types import ReplicaMetrics
from wva.decisions.codes import ReasonCode, scale_up_code
from wva.decisions.record import (
    NO_INPUTS,
    DecisionRecord,
    Guard,
    PodInputs,
    ShadowDecision,
    VariantInput,
    VariantOutcome,
    config_hash,
)
from wva.saturation.analyzer import (
    ANALYZER_VERSION,
    ModelSaturationAnalysis,
    TargetPlan,
    VariantReplicaState,
    analyze_model_saturation,
    clamp_target,
    plan_saturation_targets,
)
from wva.saturation.config import SaturationScalingConfig

__all__ = ["Coverage", "GroupDecision", "GroupHistory", "decide_group", "next_history", "pending_replicas",
           "record_id_for", "signal_coverage"]

FALLING_TOLERANCE = 0.01
DEFAULT_STABILIZATION_WINDOW = 300.0  # seconds, with direct actuation (as the HPA's default)


@dataclass(frozen=True, slots=True)
class GroupHistory:
    """What the guards that need a past remember of one model group between cycles.

    ``load``: the previous cycle's total KV usage and total queue over the reporting replicas (the
    falling-load guard: totals follow the traffic, per-replica averages also fall after a scale-up);
    ``lower_since``: since when the model's rules have asked for a scale-down without a break
    (stabilisation: the first -1 waits for the window, the next ones follow cycle by cycle);
    ``pending_since``: per variant, since when it has had replicas that are not ready (stuck detection);
    ``awake_since``: since when the model has had replicas at all (it never goes to zero sooner than
    one retention window after waking up, or after the operator started).
    """

    load: tuple[float, float] | None = None
    lower_since: float | None = None
    awake_since: float | None = None  # since when the model has had replicas (scale-to-zero waits a window)
    scaled_up_at: Mapping[str, float] = field(default_factory=dict)  # per variant, its last +1 (cold-start hold)
    pending_since: Mapping[str, float] = field(default_factory=dict)


def next_history(previous: GroupHistory | None, record: DecisionRecord) -> GroupHistory:
    """The history after ``record``'s cycle (the engine and ``wva backtest`` both keep it this way)."""
    before = previous or GroupHistory()
    awake = (before.awake_since if before.awake_since is not None else record.time) \
        if any(v.current_replicas > 0 for v in record.variants) else None
    if record.analysis is None:
        ups = dict(before.scaled_up_at)
        for o in record.outcomes:  # a wake from zero is a scale-up too
            if o.target > o.current:
                ups[o.variant] = record.time
        return replace(before, awake_since=awake, scaled_up_at=ups)  # nothing else learnt, no clock restarted
    asking_down = record.plan is not None and record.plan.direction == "down" and record.plan.chosen is not None
    lower = (before.lower_since if before.lower_since is not None else record.time) if asking_down else None
    reporting = {v.variant_name: v.replica_count for v in record.analysis.variant_analyses}
    pending: dict[str, float] = {}
    for v in record.variants:
        if _pending_count(v, reporting):
            pending[v.name] = before.pending_since.get(v.name, record.time)
    ups = dict(before.scaled_up_at)
    for o in record.outcomes:
        if o.decided and o.target > (o.previous_desired if o.previous_desired > 0 else o.current):
            ups[o.variant] = record.time
    return GroupHistory(load=record.load, lower_since=lower, pending_since=pending, awake_since=awake,
                        scaled_up_at=ups)


@dataclass(frozen=True, slots=True)
class _Past:
    history: GroupHistory
    default_window: float
    now: float
    idle: bool | None = None
    woken: bool = False
    load: tuple[float, float] | None = None  # this cycle's totals (_rows_load), computed once


def _window(config: SaturationScalingConfig, past: _Past) -> float:
    window = config.scale_down_stabilization_window
    return past.default_window if window is None else window


def _falling_load(analysis: ModelSaturationAnalysis, config: SaturationScalingConfig, past: _Past) -> str | None:
    """Why a spare-capacity scale-up is suppressed, or None when it may go ahead.

    Upstream averages the spare only over non-saturated pods, so pods leaving saturation just under
    the threshold pull the average below the trigger while the load falls. A scale-up then needs a
    saturated pod, a pod within ``nearSaturationMargin`` of a threshold, or a load that is not falling.
    """
    if analysis.non_saturated_count < analysis.total_replicas:
        return None  # a pod is saturated now
    margin = config.near_saturation_margin
    max_kv = max((v.max_kv_cache_usage for v in analysis.variant_analyses), default=0.0)
    max_queue = max((v.max_queue_length for v in analysis.variant_analyses), default=0)
    if max_kv >= config.kv_cache_threshold - margin or max_queue >= config.queue_length_threshold * (1 - margin):
        return None
    previous = past.history.load
    now_load = past.load
    # falling: the total KV usage dropped by more than 1% (noise and rounding are not a trend)
    if previous is None or now_load is None or now_load[0] >= previous[0] * (1 - FALLING_TOLERANCE) \
            or now_load[1] > previous[1]:
        return None
    return (f"the model's total KV usage fell from {previous[0]:.3f} to {now_load[0]:.3f} (queue "
            f"{previous[1]:g} to {now_load[1]:g}) and the busiest pod is at {max_kv:.3f} "
            f"(< {config.kv_cache_threshold - margin:.3f}): no spare-capacity scale-up while the load falls")


def _scale_to_zero(
    variants: Sequence[VariantInput], config: SaturationScalingConfig, past: _Past, rows: Sequence[ReplicaMetrics]
) -> tuple[None, None, tuple[Guard, ...], tuple[VariantOutcome, ...], str, str] | None:
    """The whole group's outcome when scale-to-zero decides it (at zero, or idle for the window); else None.

    Idle counts only with full coverage: a replica that reports no metrics may be serving requests the
    counters never saw, so a model with one goes nowhere near zero.
    """
    if all(v.current_replicas == 0 for v in variants):
        first = min(variants, key=lambda v: (v.cost, v.name)).name if past.woken else None
        outcomes = tuple(
            VariantOutcome(v.name, 0, v.previous_desired, 1, True, ReasonCode.SCALE_FROM_ZERO_QUEUED.value,
                           "0→1: requests are queued at the gateway; the cheapest variant comes back first")
            if v.name == first else
            VariantOutcome(v.name, 0, v.previous_desired, 0, True, ReasonCode.HOLD_AT_ZERO.value,
                           "holding 0: scaled to zero; requests queued at the gateway bring it back")
            for v in variants
        )
        if first is not None:
            return None, None, (), outcomes, "from-zero", "requests queued: scale from zero"
        return None, None, (), outcomes, "at-zero", "scaled to zero"
    retention = config.scale_to_zero_retention
    awake = past.history.awake_since if past.history.awake_since is not None else past.now
    if past.idle is not True or past.now - awake < retention:
        return None
    reporting = {r.pod_name for r in rows if r.kv_known and r.queue_known}
    if len(reporting) < sum(v.current_replicas for v in variants):
        return None
    guard = Guard("scale-to-zero", "*", f"no request served in the last {retention:.0f}s")
    outcomes = tuple(
        VariantOutcome(v.name, v.current_replicas, v.previous_desired, 0, True, ReasonCode.SCALE_TO_ZERO_IDLE.value,
                       f"{v.previous_desired or v.current_replicas}→0: no request served in the last "
                       f"{retention:.0f}s (request counters)")
        for v in variants
    )
    return None, None, (guard,), outcomes, "scale-to-zero", f"idle for {retention:.0f}s: scale to zero"


def _up_step(
    analysis: ModelSaturationAnalysis, config: SaturationScalingConfig, load: tuple[float, float] | None,
    rows: Sequence[ReplicaMetrics],
) -> tuple[int, str]:
    """How many replicas a scale-up adds at once: 1, or up to ``scaleUpMaxStep`` when the load needs more.

    ``load`` is the cycle's total KV usage and total queue (:func:`_rows_load`). The estimate spreads
    them over the replicas needed to bring every one back to the trigger's spare (KV at most
    kvCacheThreshold - kvSpareTrigger, queue at most queueLengthThreshold - queueSpareTrigger). KV usage
    does not grow exactly linearly with load, so the estimate is capped by ``scaleUpMaxStep``; the next
    cycle corrects it either way.
    """
    if config.scale_up_max_step <= 1 or not analysis.should_scale_up or load is None:
        return 1, ""
    kv, queue = load
    reporting = len({r.pod_name for r in rows if r.kv_known or r.queue_known})
    needed = reporting + 1
    kv_room = config.kv_cache_threshold - config.kv_spare_trigger
    queue_room = config.queue_length_threshold - config.queue_spare_trigger
    if kv_room > 0:
        needed = max(needed, math.ceil(kv / kv_room - 1e-9))
    if queue_room > 0:
        needed = max(needed, math.ceil(queue / queue_room - 1e-9))
    step = min(config.scale_up_max_step, needed - reporting)
    return step, (f"total KV {kv:.3f} and queue {queue:g} need about {needed} replicas, "
                  f"{reporting} report: +{step} at once (scaleUpMaxStep {config.scale_up_max_step})")


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many of the replicas that serve report both signals (pending, not-ready replicas serve nothing)."""

    covered: int
    serving: int

    @property
    def ratio(self) -> float:
        return self.covered / self.serving if self.serving else 1.0

    def describe(self) -> str:
        return (f"signal coverage {self.ratio:.2f} ({self.covered} of {self.serving} serving replicas report "
                "both KV-cache and queue)")


def signal_coverage(variants: Sequence[VariantInput], rows: Sequence[ReplicaMetrics]) -> Coverage:
    """Replicas reporting both signals over the replicas that serve: ready or reporting, at most existing."""
    seen: dict[str, int] = {}
    full: dict[str, int] = {}
    for r in rows:
        seen[r.variant_name] = seen.get(r.variant_name, 0) + 1
        if r.kv_known and r.queue_known:
            full[r.variant_name] = full.get(r.variant_name, 0) + 1
    serving = covered = 0
    for v in variants:
        ready = v.current_replicas if v.ready_replicas is None else v.ready_replicas
        serving += min(v.current_replicas, max(ready, seen.get(v.name, 0)))
        covered += min(v.current_replicas, full.get(v.name, 0))
    return Coverage(covered, serving)


def _rows_load(rows: Sequence[ReplicaMetrics]) -> tuple[float, float] | None:
    kv = [r.kv_cache_usage for r in rows if r.kv_known]
    queue = [float(r.queue_length) for r in rows if r.queue_known]
    return (sum(kv), sum(queue)) if kv or queue else None


def pending_replicas(record: DecisionRecord, variant: str) -> int:
    """Replicas of ``variant`` that exist but are neither ready nor reporting, in ``record``'s cycle."""
    v = next((x for x in record.variants if x.name == variant), None)
    if v is None:
        return 0
    reporting = {a.variant_name: a.replica_count for a in record.analysis.variant_analyses} if record.analysis else {}
    return _pending_count(v, reporting)


def _pending_count(v: VariantInput, reporting: Mapping[str, int]) -> int:
    """Replicas that exist but neither are ready nor report metrics (a reporting pod serves, whatever
    the Deployment's status says yet)."""
    ready = v.current_replicas if v.ready_replicas is None else v.ready_replicas
    return max(0, v.current_replicas - max(ready, reporting.get(v.name, 0)))


def _pending(
    variants: Sequence[VariantInput], reporting: Mapping[str, int], config: SaturationScalingConfig, past: _Past
) -> tuple[frozenset[str], frozenset[str]]:
    """(variants waiting for pending replicas, variants whose pending replicas are stuck)."""
    waiting: set[str] = set()
    stuck: set[str] = set()
    for v in variants:
        if _pending_count(v, reporting) == 0:
            continue
        since = past.history.pending_since.get(v.name, past.now)
        (stuck if past.now - since >= config.pending_stuck_after else waiting).add(v.name)
    return frozenset(waiting), frozenset(stuck)


@dataclass(frozen=True, slots=True)
class GroupDecision:
    record: DecisionRecord
    analysis_reason: str  # the rule's text, as the OptimizationReady condition shows it

    def outcome(self, variant: str) -> VariantOutcome:
        found = self.record.outcome(variant)
        assert found is not None, variant
        return found

    @property
    def targets(self) -> dict[str, int]:
        """Targets of the variants that got a fresh decision."""
        return {o.variant: o.target for o in self.record.outcomes if o.decided}


def record_id_for(model_id: str, namespace: str, now: float) -> str:
    """Unique per group and millisecond; deterministic, so a recomputation names the same record."""
    tag = zlib.crc32(f"{namespace}/{model_id}".encode()) & 0xFFFFFF
    return f"{int(now * 1000)}-{tag:06x}"


def decide_group(
    model_id: str,
    namespace: str,
    variants: Sequence[VariantInput],
    replicas: Sequence[ReplicaMetrics] | None,
    config: SaturationScalingConfig,
    *,
    now: float,
    unavailable: str | None = None,
    source: str | None = None,
    record_id: str | None = None,
    history: GroupHistory | None = None,
    default_stabilization_window: float = 0.0,
    idle: bool | None = None,
    woken: bool = False,
) -> GroupDecision:
    """Decide one model group. ``replicas`` None or empty means no usable data (``unavailable`` says why).

    ``history`` is what :func:`next_history` kept from the previous cycle (None: a first cycle);
    ``default_stabilization_window`` applies when the model's config leaves the window unset
    (the engine passes 300 s with direct actuation, 0 on the HPA/KEDA path). ``idle`` says whether
    the model served no request during its scale-to-zero retention window (None: unknown, or not
    asked because scale-to-zero is off). ``woken``: the scale-from-zero poller saw requests queued
    for this model while it was at zero.
    """
    ordered = tuple(sorted(variants, key=lambda v: v.name))
    rows = tuple(replicas or ())
    load = _rows_load(rows)
    past = _Past(history or GroupHistory(), default_stabilization_window, now, idle, woken, load)
    analysis, plan, guards, outcomes, rule, reason = _evaluate(model_id, namespace, ordered, rows, config, now,
                                                               unavailable, past)
    shadow: ShadowDecision | None = None
    if config.shadow is not None:
        s_analysis, _plan, _guards, s_outcomes, s_rule, _reason = _evaluate(
            model_id, namespace, ordered, rows, config.shadow, now, unavailable, past
        )
        shadow = ShadowDecision(
            config=config.shadow, config_hash=config_hash(config.shadow, ordered), rule=s_rule,
            outcomes=s_outcomes, analysis=s_analysis,
        )
    record = DecisionRecord(
        record_id=record_id or record_id_for(model_id, namespace, now),
        time=now,
        model_id=model_id,
        namespace=namespace,
        engine_version=__version__,
        analyzer_version=ANALYZER_VERSION,
        config=config,
        config_hash=config_hash(config, ordered),
        variants=ordered,
        inputs=PodInputs.pack(rows, ordered) if rows else NO_INPUTS,
        unavailable=None if rows else (unavailable or "no replica reported metrics"),
        source=source or _rows_source(rows),
        analysis=analysis,
        plan=plan,
        rule=rule,
        guards=guards,
        outcomes=outcomes,
        shadow=shadow,
        load=load,
    )
    return GroupDecision(record=record, analysis_reason=reason)


def _rows_source(rows: Sequence[ReplicaMetrics]) -> str | None:
    sources = sorted({r.metadata.source for r in rows if r.metadata is not None})
    return ",".join(sources) or None


def _evaluate(
    model_id: str,
    namespace: str,
    variants: tuple[VariantInput, ...],
    rows: tuple[ReplicaMetrics, ...],
    config: SaturationScalingConfig,
    now: float,
    unavailable: str | None,
    past: _Past,
) -> tuple[
    ModelSaturationAnalysis | None, TargetPlan | None, tuple[Guard, ...], tuple[VariantOutcome, ...], str, str
]:
    if config.scale_to_zero:
        zero = _scale_to_zero(variants, config, past, rows)
        if zero is not None:
            return zero
    if not rows:
        why = unavailable or "no replica reported metrics"
        hold = ReasonCode.HOLD_METRICS_UNAVAILABLE
        return None, None, (), tuple(_held(v, hold, f"metrics unavailable ({why})") for v in variants), "no-metrics", ""

    analysis = analyze_model_saturation(model_id, namespace, rows, config, now=now,
                                        tri_state=not config.strict_upstream)
    guards: list[Guard] = []
    reporting = {v.variant_name: v.replica_count for v in analysis.variant_analyses}
    unknown_hold = False
    low_coverage: Coverage | None = None
    if analysis.scale_down_safe:
        # upstream: a replica without metrics blocks a scale-down; wva: a replica on the way (pending) does,
        # and replicas that serve without reporting count against the coverage below
        for v in variants:
            got = reporting.get(v.name, 0)
            if got < v.current_replicas and (config.strict_upstream or _pending_count(v, reporting)):
                guards.append(Guard(
                    "unknown-signal-hold", v.name,
                    f"{got} of {v.current_replicas} replicas report metrics: the others' load is unknown, "
                    "so no scale-down",
                ))
                unknown_hold = True
    if not config.strict_upstream:
        coverage = signal_coverage(variants, rows)
        if coverage.ratio < config.min_signal_coverage:
            low_coverage = coverage
            unknown_hold = True
            guards.append(Guard("unknown-signal-hold", "*", f"{coverage.describe()} is below minSignalCoverage "
                                                            f"{config.min_signal_coverage:.2f}: no scale-down"))
    if unknown_hold:
        analysis = replace(analysis, scale_down_safe=False)

    if analysis.should_scale_up and not config.strict_upstream:
        falling = _falling_load(analysis, config, past)
        if falling is not None:
            guards.append(Guard("falling-load", "*", falling))
            analysis = replace(analysis, should_scale_up=False)

    states = [VariantReplicaState(v.name, v.current_replicas, v.previous_desired) for v in variants]
    bounds = {v.name: (v.min_replicas, v.max_replicas) for v in variants}
    no_one: frozenset[str] = frozenset()
    waiting, stuck = (no_one, no_one) if config.strict_upstream else _pending(variants, reporting, config, past)
    cold = no_one if config.strict_upstream else frozenset(
        v.name for v in variants
        if v.cold_start is not None and v.name in past.history.scaled_up_at
        and now - past.history.scaled_up_at[v.name] < v.cold_start
    )
    step, step_why = (1, "") if config.strict_upstream else _up_step(analysis, config, past.load, rows)
    plan = plan_saturation_targets(analysis, states, bounds, waiting=waiting, skip=stuck, hold_down=cold,
                                   up_step=step)
    if plan.step > 1:
        guards.append(Guard("scale-up-step", plan.chosen or "*", step_why))
    for name in plan.cold:
        v = next(x for x in variants if x.name == name)
        age = now - past.history.scaled_up_at[name]
        guards.append(Guard("cold-start-hold", name, f"scaled up {age:.0f}s ago, within its cold-start time of "
                                                     f"{v.cold_start:.0f}s: gives no replica back yet"))
    if plan.waiting_on is not None:
        v = next(x for x in variants if x.name == plan.waiting_on)
        guards.append(Guard("pending-replicas", v.name,
                            f"{_pending_count(v, reporting)} replica(s) on the way: the model waits for them"))
    for name in plan.skipped:
        since = past.history.pending_since.get(name, now)
        guards.append(Guard("pending-stuck", name, f"replicas pending for {now - since:.0f}s "
                                                   f"(limit {config.pending_stuck_after:.0f}s): passed over"))
    for name in sorted(plan.preserved):
        guards.append(Guard("pending-decision", name, "the previous decision is still rolling out: held"))
    for name in sorted(plan.not_reporting):
        guards.append(Guard(
            "replicas-not-reporting", name,
            f"{reporting.get(name, 0)} replicas report, "
            f"{next(v.current_replicas for v in variants if v.name == name)} exist: held at the current count",
        ))
    bound_name = "max-bound" if plan.direction == "up" else "min-bound"
    for name in plan.at_bound:
        guards.append(Guard(bound_name, name, f"at its {'maximum' if plan.direction == 'up' else 'minimum'}: "
                                              "not eligible for this cycle's step"))

    rule = {"up": "scale-up", "down": "scale-down"}.get(plan.direction, "steady")
    reason = analysis.scale_up_reason or ("scale-down safe" if analysis.scale_down_safe else "steady")
    outcomes: list[VariantOutcome] = []
    for v in variants:
        if v.name not in plan.targets:
            outcomes.append(_held(v, ReasonCode.HOLD_UNKNOWN_SIGNAL,
                                  "no replica of this variant reported metrics (unknown, not zero)"))
            continue
        raw = plan.targets[v.name]
        target = clamp_target(raw, v.min_replicas, v.max_replicas)
        if target != raw:
            guards.append(Guard("clamp", v.name, f"the rules gave {raw}, the bounds allow {target}"))
        recommended = target
        code, message = _explain_variant(v, raw, target, plan, analysis, config, unknown_hold, reporting, variants,
                                         falling_hold=any(g.name == "falling-load" for g in guards),
                                         low_coverage=low_coverage)
        base = v.previous_desired if v.previous_desired > 0 else v.current_replicas
        window = _window(config, past)
        if target < base and target == raw and window > 0 and not config.strict_upstream:
            since = past.history.lower_since if past.history.lower_since is not None else now
            if now - since < window:
                left = window - (now - since)
                guards.append(Guard("stabilization", v.name, f"fewer replicas asked for {now - since:.0f}s of the "
                                                             f"{window:.0f}s window"))
                code = ReasonCode.HOLD_SCALE_DOWN_STABILIZING
                message = (f"holding {base}: a scale-down to {target} waits until it has been asked for during "
                           f"{window:.0f}s ({left:.0f}s to go); {message.split(': ', 1)[-1]}")
                target = base
        outcomes.append(VariantOutcome(v.name, v.current_replicas, v.previous_desired, target, True, code.value,
                                       message, recommended))
    return analysis, plan, tuple(guards), tuple(outcomes), rule, reason


def _held(v: VariantInput, code: ReasonCode, why: str) -> VariantOutcome:
    held = clamp_target(v.previous_desired if v.previous_desired > 0 else v.current_replicas,
                        v.min_replicas, v.max_replicas)
    return VariantOutcome(v.name, v.current_replicas, v.previous_desired, held, False, code.value,
                          f"holding {held}: {why}")


def _explain_variant(
    v: VariantInput,
    raw: int,
    target: int,
    plan: TargetPlan,
    analysis: ModelSaturationAnalysis,
    config: SaturationScalingConfig,
    unknown_hold: bool,
    reporting: dict[str, int],
    variants: Sequence[VariantInput],
    *,
    falling_hold: bool = False,
    low_coverage: Coverage | None = None,
) -> tuple[ReasonCode, str]:
    kv, queue = analysis.avg_spare_kv_capacity, analysis.avg_spare_queue_length
    kv_known, queue_known = _spares_known(analysis)
    kv_low = kv_known and kv < config.kv_spare_trigger
    queue_low = queue_known and queue < config.queue_spare_trigger
    spare = _spare_text(analysis, config, low_only=True)
    base = v.previous_desired if v.previous_desired > 0 else v.current_replicas
    costs = {x.name: x.cost for x in variants}
    if target != raw:
        code = ReasonCode.CLAMPED_TO_MIN_REPLICAS if target > raw else ReasonCode.CLAMPED_TO_MAX_REPLICAS
        bound = v.min_replicas if target > raw else v.max_replicas
        word = "minReplicas" if target > raw else "maxReplicas"
        return code, f"{base}→{target}: the rules gave {raw}; {word} is {bound}"
    if v.name in plan.preserved:
        return (ReasonCode.HOLD_PENDING_DECISION,
                f"holding {target}: the previous decision of {v.previous_desired} is still rolling out "
                f"({v.current_replicas} running)")
    if falling_hold and plan.direction == "none":
        return (ReasonCode.HOLD_FALLING_LOAD,
                f"holding {target}: {spare} would ask for a replica, but the load is falling and no pod is within "
                f"{config.near_saturation_margin:.2f} of saturation")
    if plan.direction == "up" and v.name in plan.skipped:
        return (ReasonCode.PENDING_REPLICAS_STUCK,
                f"holding {target}: {_pending_count(v, reporting)} replica(s) pending longer than "
                f"{config.pending_stuck_after:.0f}s; the step went to {plan.chosen or 'no other variant'}")
    if plan.direction == "up" and plan.waiting_on is not None:
        return (ReasonCode.HOLD_PENDING_REPLICAS,
                f"holding {target}: the model needs capacity ({spare}) and {plan.waiting_on} has replicas on the "
                "way; waiting for them")
    if plan.chosen == v.name and plan.direction == "up":
        if analysis.non_saturated_count == 0:
            why = f"all {analysis.total_replicas} reporting replicas are saturated (no spare capacity)"
        else:
            why = f"{spare} over {analysis.non_saturated_count} non-saturated replicas"
        at_once = f"; +{plan.step} at once, as the load needs" if plan.step > 1 else ""
        return (scale_up_code(kv_low, queue_low),
                f"{base}→{target}: {why}; cheapest variant below its maximum{at_once}")
    if plan.chosen == v.name and plan.direction == "down":
        check = analysis.scale_down_check
        after = ""
        if check is not None:
            after = (f" (spare KV {check.kv_spare_after:.3f} ≥ {config.kv_spare_trigger:.3f}, "
                     f"spare queue {check.queue_spare_after:.1f} ≥ {config.queue_spare_trigger:.1f})")
        return (ReasonCode.SCALE_DOWN_REDISTRIBUTABLE,
                f"{base}→{target}: the load of {analysis.non_saturated_count} non-saturated replicas fits on "
                f"{analysis.non_saturated_count - 1}{after}; most expensive variant above its minimum")
    if plan.direction == "up":
        if v.name in plan.at_bound:
            where = f"the step went to {plan.chosen}" if plan.chosen else "no variant could take the step"
            return (ReasonCode.AT_MAX_REPLICAS,
                    f"holding {target}: at maxReplicas {v.max_replicas} while the model needs capacity "
                    f"({spare}); {where}")
        if plan.chosen is not None:
            return (ReasonCode.HOLD_CHEAPER_VARIANT_SCALED,
                    f"holding {target}: the model's +1 went to cheaper variant {plan.chosen} "
                    f"(cost {costs.get(plan.chosen, 0):g} vs {v.cost:g}); {spare}")
    if plan.direction == "down":
        if v.name in plan.cold:
            return (ReasonCode.HOLD_COLD_START,
                    f"holding {target}: it scaled up less than its cold-start time ({v.cold_start:.0f}s) ago; "
                    f"the model's -1 {'went to ' + plan.chosen if plan.chosen else 'waits'}")
        if v.name in plan.at_bound:
            floor = max(1, v.min_replicas)
            where = f"the step was taken from {plan.chosen}" if plan.chosen else "no variant could shed one"
            return (ReasonCode.AT_MIN_REPLICAS,
                    f"holding {target}: at its minimum of {floor} while the model could shed a replica; {where}")
        if plan.chosen is not None:
            return (ReasonCode.HOLD_COSTLIER_VARIANT_SCALED,
                    f"holding {target}: the model's -1 was taken from costlier variant {plan.chosen} "
                    f"(cost {costs.get(plan.chosen, 0):g} vs {v.cost:g})")
    if low_coverage is not None:
        return (ReasonCode.HOLD_UNKNOWN_SIGNAL,
                f"holding {target}: {low_coverage.describe()}, below minSignalCoverage "
                f"{config.min_signal_coverage:.2f}: unknown load is not zero, so no scale-down")
    if unknown_hold:
        missing = sum(max(0, x.current_replicas - reporting.get(x.name, 0)) for x in variants)
        return (ReasonCode.HOLD_UNKNOWN_SIGNAL,
                f"holding {target}: a scale-down would be safe, but {missing} replica(s) report no metrics "
                "(unknown load, not zero)")
    if v.name in plan.not_reporting:
        return (ReasonCode.HOLD_REPLICAS_NOT_REPORTING,
                f"holding {target}: {reporting.get(v.name, 0)} of {v.current_replicas} replicas report metrics")
    return ReasonCode.HOLD_STEADY, f"holding {target}: {_steady_text(analysis, config)}"


def _spares_known(analysis: ModelSaturationAnalysis) -> tuple[bool, bool]:
    """Whether any non-saturated replica knows its KV / queue (with none non-saturated, both spares are 0)."""
    if analysis.non_saturated_count == 0:
        return True, True
    return (any(v.kv_known_count for v in analysis.variant_analyses),
            any(v.queue_known_count for v in analysis.variant_analyses))


def _spare_text(analysis: ModelSaturationAnalysis, config: SaturationScalingConfig, *, low_only: bool) -> str:
    kv, queue = analysis.avg_spare_kv_capacity, analysis.avg_spare_queue_length
    kv_known, queue_known = _spares_known(analysis)
    parts = []
    if not kv_known:
        if not low_only:
            parts.append("spare KV unknown (no non-saturated replica reports it)")
    elif not low_only or kv < config.kv_spare_trigger:
        sign = "<" if kv < config.kv_spare_trigger else "≥"
        parts.append(f"spare KV {kv:.3f} {sign} {config.kv_spare_trigger:.3f}")
    if not queue_known:
        if not low_only:
            parts.append("spare queue unknown (no non-saturated replica reports it)")
    elif not low_only or queue < config.queue_spare_trigger:
        sign = "<" if queue < config.queue_spare_trigger else "≥"
        parts.append(f"spare queue {queue:.1f} {sign} {config.queue_spare_trigger:.1f}")
    return " and ".join(parts)


def _steady_text(analysis: ModelSaturationAnalysis, config: SaturationScalingConfig) -> str:
    up = _spare_text(analysis, config, low_only=False)
    check = analysis.scale_down_check
    if check is None or check.non_saturated < 2:
        n = check.non_saturated if check is not None else 0
        down = f"{n} non-saturated replica(s), a scale-down needs 2"
    else:
        down = (f"one replica fewer would leave spare KV {check.kv_spare_after:.3f} and spare queue "
                f"{check.queue_spare_after:.1f} (triggers {config.kv_spare_trigger:.3f} / "
                f"{config.queue_spare_trigger:.1f})")
    return f"{up} (no scale-up); {down} (no scale-down)"
