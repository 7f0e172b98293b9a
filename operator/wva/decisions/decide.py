"""One model group's decision, as a pure function: the engine, ``wva explain`` and ``wva backtest`` share it.

``decide_group`` runs the analyzer and the target rules, then wva's guards, and returns every
variant's target with a reason code and a one-line message about that variant, together with the
:class:`~wva.decisions.record.DecisionRecord` that explains it. No I/O, no clock: ``now`` is given.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

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

__all__ = ["GroupDecision", "decide_group", "record_id_for"]


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
) -> GroupDecision:
    """Decide one model group. ``replicas`` None or empty means no usable data (``unavailable`` says why)."""
    ordered = tuple(sorted(variants, key=lambda v: v.name))
    rows = tuple(replicas or ())
    analysis, plan, guards, outcomes, rule, reason = _evaluate(model_id, namespace, ordered, rows, config, now,
                                                               unavailable)
    shadow: ShadowDecision | None = None
    if config.shadow is not None:
        s_analysis, _plan, _guards, s_outcomes, s_rule, _reason = _evaluate(
            model_id, namespace, ordered, rows, config.shadow, now, unavailable
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
) -> tuple[
    ModelSaturationAnalysis | None, TargetPlan | None, tuple[Guard, ...], tuple[VariantOutcome, ...], str, str
]:
    if not rows:
        why = unavailable or "no replica reported metrics"
        hold = ReasonCode.HOLD_METRICS_UNAVAILABLE
        return None, None, (), tuple(_held(v, hold, f"metrics unavailable ({why})") for v in variants), "no-metrics", ""

    analysis = analyze_model_saturation(model_id, namespace, rows, config, now=now)
    guards: list[Guard] = []
    reporting = {v.variant_name: v.replica_count for v in analysis.variant_analyses}
    unknown_hold = False
    if analysis.scale_down_safe:
        for v in variants:
            got = reporting.get(v.name, 0)
            if got < v.current_replicas:
                guards.append(Guard(
                    "unknown-signal-hold", v.name,
                    f"{got} of {v.current_replicas} replicas report metrics: the others' load is unknown, "
                    "so no scale-down",
                ))
                unknown_hold = True
        if unknown_hold:
            analysis = replace(analysis, scale_down_safe=False)

    states = [VariantReplicaState(v.name, v.current_replicas, v.previous_desired) for v in variants]
    bounds = {v.name: (v.min_replicas, v.max_replicas) for v in variants}
    plan = plan_saturation_targets(analysis, states, bounds)
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
        code, message = _explain_variant(v, raw, target, plan, analysis, config, unknown_hold, reporting, variants)
        outcomes.append(VariantOutcome(v.name, v.current_replicas, v.previous_desired, target, True, code.value,
                                       message))
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
) -> tuple[ReasonCode, str]:
    kv, queue = analysis.avg_spare_kv_capacity, analysis.avg_spare_queue_length
    kv_low = kv < config.kv_spare_trigger
    queue_low = queue < config.queue_spare_trigger
    spare = _spare_text(kv, queue, config, low_only=True)
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
    if plan.chosen == v.name and plan.direction == "up":
        if analysis.non_saturated_count == 0:
            why = f"all {analysis.total_replicas} reporting replicas are saturated (no spare capacity)"
        else:
            why = f"{spare} over {analysis.non_saturated_count} non-saturated replicas"
        return scale_up_code(kv_low, queue_low), f"{base}→{target}: {why}; cheapest variant below its maximum"
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
        if v.name in plan.at_bound:
            floor = max(1, v.min_replicas)
            where = f"the step was taken from {plan.chosen}" if plan.chosen else "no variant could shed one"
            return (ReasonCode.AT_MIN_REPLICAS,
                    f"holding {target}: at its minimum of {floor} while the model could shed a replica; {where}")
        if plan.chosen is not None:
            return (ReasonCode.HOLD_COSTLIER_VARIANT_SCALED,
                    f"holding {target}: the model's -1 was taken from costlier variant {plan.chosen} "
                    f"(cost {costs.get(plan.chosen, 0):g} vs {v.cost:g})")
    if unknown_hold:
        missing = sum(max(0, x.current_replicas - reporting.get(x.name, 0)) for x in variants)
        return (ReasonCode.HOLD_UNKNOWN_SIGNAL,
                f"holding {target}: a scale-down would be safe, but {missing} replica(s) report no metrics "
                "(unknown load, not zero)")
    if v.name in plan.not_reporting:
        return (ReasonCode.HOLD_REPLICAS_NOT_REPORTING,
                f"holding {target}: {reporting.get(v.name, 0)} of {v.current_replicas} replicas report metrics")
    return ReasonCode.HOLD_STEADY, f"holding {target}: {_steady_text(analysis, config)}"


def _spare_text(kv: float, queue: float, config: SaturationScalingConfig, *, low_only: bool) -> str:
    parts = []
    if not low_only or kv < config.kv_spare_trigger:
        sign = "<" if kv < config.kv_spare_trigger else "≥"
        parts.append(f"spare KV {kv:.3f} {sign} {config.kv_spare_trigger:.3f}")
    if not low_only or queue < config.queue_spare_trigger:
        sign = "<" if queue < config.queue_spare_trigger else "≥"
        parts.append(f"spare queue {queue:.1f} {sign} {config.queue_spare_trigger:.1f}")
    return " and ".join(parts)


def _steady_text(analysis: ModelSaturationAnalysis, config: SaturationScalingConfig) -> str:
    up = _spare_text(analysis.avg_spare_kv_capacity, analysis.avg_spare_queue_length, config, low_only=False)
    check = analysis.scale_down_check
    if check is None or check.non_saturated < 2:
        n = check.non_saturated if check is not None else 0
        down = f"{n} non-saturated replica(s), a scale-down needs 2"
    else:
        down = (f"one replica fewer would leave spare KV {check.kv_spare_after:.3f} and spare queue "
                f"{check.queue_spare_after:.1f} (triggers {config.kv_spare_trigger:.3f} / "
                f"{config.queue_spare_trigger:.1f})")
    return f"{up} (no scale-up); {down} (no scale-down)"
