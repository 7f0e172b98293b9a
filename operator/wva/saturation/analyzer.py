"""The saturation analyzer: pure functions from per-replica metrics to replica targets.

Faithful to upstream WVA's percentage-based analyzer, including its floating-point behaviour
(IEEE doubles, the same summation order) and its inclusive/strict comparisons:

- a replica is saturated iff ``kv >= kvCacheThreshold`` or ``queue >= queueLengthThreshold``;
- scale up iff the average spare KV (over non-saturated replicas) is ``< kvSpareTrigger`` or the
  average spare queue is ``< queueSpareTrigger``;
- scale down is safe iff, with the load of the non-saturated replicas spread over one replica
  fewer, both spares stay ``>=`` their triggers (and at least two replicas are non-saturated);
- at most one replica is added or removed per model group per call: cheapest variant up, most
  expensive variant down, never below 1, never touching a variant whose previous decision is
  still pending.

Nothing here does I/O; ``now`` can be injected for deterministic timestamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wva.collector.types import DEFAULT_VARIANT_COST, ReplicaMetrics
from wva.saturation.config import SaturationScalingConfig

__all__ = [
    "ANALYZER_VERSION",
    "MIN_NON_SATURATED_REPLICAS_FOR_SCALE_DOWN",
    "ModelSaturationAnalysis",
    "ScaleDownCheck",
    "TargetPlan",
    "VariantReplicaState",
    "VariantSaturationAnalysis",
    "analyze_model_saturation",
    "calculate_saturation_targets",
    "clamp_target",
    "plan_saturation_targets",
]

logger = logging.getLogger(__name__)

MIN_NON_SATURATED_REPLICAS_FOR_SCALE_DOWN = 2
ANALYZER_VERSION = "saturation/2"  # 2: tri-state signals (a missing one is unknown, not 0)
"""Names the rules below; decision records carry it, so a record says which rules made it."""


@dataclass(frozen=True, slots=True)
class VariantReplicaState:
    """What Kubernetes says about a variant: replicas now, and wva's last decision (0 = none)."""

    variant_name: str
    current_replicas: int
    desired_replicas: int = 0


@dataclass(frozen=True, slots=True)
class VariantSaturationAnalysis:
    """Saturation of the reporting replicas of one variant."""

    variant_name: str
    accelerator_name: str = ""
    cost: float = DEFAULT_VARIANT_COST
    replica_count: int = 0
    non_saturated_count: int = 0
    saturated_replicas: list[str] = field(default_factory=list)
    avg_spare_kv_capacity: float = 0.0
    avg_spare_queue_length: float = 0.0
    max_kv_cache_usage: float = 0.0
    max_queue_length: int = 0
    # non-saturated replicas whose KV / queue is known (the spares' denominators; upstream: all of them)
    kv_known_count: int = 0
    queue_known_count: int = 0


@dataclass(frozen=True, slots=True)
class ScaleDownCheck:
    """The N-1 redistribution check: the non-saturated replicas' load spread over one replica fewer."""

    non_saturated: int = 0
    kv_after: float = 0.0  # average KV usage per replica after removing one
    queue_after: float = 0.0
    kv_spare_after: float = 0.0
    queue_spare_after: float = 0.0
    safe: bool = False


@dataclass(frozen=True, slots=True)
class ModelSaturationAnalysis:
    """Saturation of one model group and the two scaling signals derived from it."""

    model_id: str
    namespace: str
    analyzed_at: float = 0.0
    total_replicas: int = 0
    non_saturated_count: int = 0
    avg_spare_kv_capacity: float = 0.0
    avg_spare_queue_length: float = 0.0
    should_scale_up: bool = False
    scale_down_safe: bool = False
    scale_up_reason: str = ""
    variant_analyses: list[VariantSaturationAnalysis] = field(default_factory=list)
    scale_down_check: ScaleDownCheck | None = None


def _is_saturated(replica: ReplicaMetrics, config: SaturationScalingConfig, tri_state: bool = False) -> bool:
    """Upstream reads a missing signal as 0; with ``tri_state`` only a known signal can saturate a pod."""
    if tri_state:
        return (replica.kv_known and replica.kv_cache_usage >= config.kv_cache_threshold) or (
            replica.queue_known and replica.queue_length >= config.queue_length_threshold
        )
    return (
        replica.kv_cache_usage >= config.kv_cache_threshold
        or replica.queue_length >= config.queue_length_threshold
    )


def _analyze_variant(
    name: str, replicas: Sequence[ReplicaMetrics], config: SaturationScalingConfig, tri_state: bool = False
) -> VariantSaturationAnalysis:
    saturated: list[str] = []
    non_saturated = 0
    kv_known = queue_known = 0
    spare_kv_sum = 0.0
    spare_queue_sum = 0.0
    for replica in replicas:
        if _is_saturated(replica, config, tri_state):
            saturated.append(replica.pod_name)
            continue
        non_saturated += 1
        if not tri_state or replica.kv_known:
            kv_known += 1
            spare_kv_sum += config.kv_cache_threshold - replica.kv_cache_usage
        if not tri_state or replica.queue_known:
            queue_known += 1
            spare_queue_sum += config.queue_length_threshold - float(replica.queue_length)
    first = replicas[0]
    known_kv = [r.kv_cache_usage for r in replicas if not tri_state or r.kv_known]
    known_queue = [r.queue_length for r in replicas if not tri_state or r.queue_known]
    return VariantSaturationAnalysis(
        variant_name=name,
        accelerator_name=first.accelerator_name,
        cost=first.cost,
        replica_count=len(replicas),
        non_saturated_count=non_saturated,
        saturated_replicas=saturated,
        avg_spare_kv_capacity=spare_kv_sum / kv_known if kv_known else 0.0,
        avg_spare_queue_length=spare_queue_sum / queue_known if queue_known else 0.0,
        max_kv_cache_usage=max(known_kv, default=0.0),
        max_queue_length=max(known_queue, default=0),
        kv_known_count=kv_known,
        queue_known_count=queue_known,
    )


def _scale_up_reason(
    kv_spare: float, queue_spare: float, config: SaturationScalingConfig, *, kv_known: bool = True,
    queue_known: bool = True,
) -> str:
    """Which trigger fired; a spare no non-saturated replica knows fires nothing (tri-state)."""
    kv_trigger = kv_known and kv_spare < config.kv_spare_trigger
    queue_trigger = queue_known and queue_spare < config.queue_spare_trigger
    kv_text = f"{kv_spare:.3f} < {config.kv_spare_trigger:.3f}"
    queue_text = f"{queue_spare:.1f} < {config.queue_spare_trigger:.1f}"
    if kv_trigger and queue_trigger:
        return f"both KV spare ({kv_text}) and queue spare ({queue_text})"
    if kv_trigger:
        return f"KV spare Saturation low ({kv_text})"
    if queue_trigger:
        return f"queue spare Saturation low ({queue_text})"
    return ""


def _scale_down_check(
    replicas: Sequence[ReplicaMetrics], config: SaturationScalingConfig, tri_state: bool = False
) -> ScaleDownCheck:
    """Would the non-saturated replicas' load, spread over one replica fewer, keep both spares?

    With ``tri_state`` only replicas that know both signals take part (the coverage guard decides
    whether the others' unknown load allows a scale-down at all)."""
    kv_total = 0.0
    queue_total = 0
    count = 0
    for replica in replicas:
        if _is_saturated(replica, config, tri_state) or (tri_state and not (replica.kv_known and replica.queue_known)):
            continue
        kv_total += replica.kv_cache_usage
        queue_total += replica.queue_length
        count += 1
    if count < MIN_NON_SATURATED_REPLICAS_FOR_SCALE_DOWN:
        return ScaleDownCheck(non_saturated=count)
    remaining = float(count - 1)
    kv_after = kv_total / remaining
    queue_after = float(queue_total) / remaining
    kv_spare = config.kv_cache_threshold - kv_after
    queue_spare = config.queue_length_threshold - queue_after
    return ScaleDownCheck(
        non_saturated=count,
        kv_after=kv_after,
        queue_after=queue_after,
        kv_spare_after=kv_spare,
        queue_spare_after=queue_spare,
        safe=kv_spare >= config.kv_spare_trigger and queue_spare >= config.queue_spare_trigger,
    )


def analyze_model_saturation(
    model_id: str,
    namespace: str,
    replicas: Sequence[ReplicaMetrics],
    config: SaturationScalingConfig,
    now: float | None = None,
    *,
    tri_state: bool = False,
) -> ModelSaturationAnalysis:
    """Classify every replica of one model group and derive the scale-up / scale-down signals.

    Variants are analysed in name order (upstream iterates a Go map, i.e. in random order), which
    also fixes the floating-point summation order of the model averages. ``tri_state`` (wva's
    default, off with strictUpstream): a signal a replica does not report is unknown, not 0 — it
    cannot saturate the replica and is left out of that signal's average; with every signal known
    the result is upstream's to the bit.
    """
    analyzed_at = time.time() if now is None else now
    if not replicas:
        return ModelSaturationAnalysis(model_id=model_id, namespace=namespace, analyzed_at=analyzed_at)

    by_variant: dict[str, list[ReplicaMetrics]] = {}
    for replica in replicas:
        by_variant.setdefault(replica.variant_name, []).append(replica)
    variants = [_analyze_variant(name, by_variant[name], config, tri_state) for name in sorted(by_variant)]

    non_saturated = 0
    kv_count = queue_count = 0
    weighted_kv = 0.0
    weighted_queue = 0.0
    for variant in variants:
        non_saturated += variant.non_saturated_count
        kv_count += variant.kv_known_count
        queue_count += variant.queue_known_count
        weighted_kv += variant.avg_spare_kv_capacity * variant.kv_known_count
        weighted_queue += variant.avg_spare_queue_length * variant.queue_known_count
    avg_kv = weighted_kv / kv_count if kv_count else 0.0
    avg_queue = weighted_queue / queue_count if queue_count else 0.0

    # all saturated: both spares are 0 and fire; some non-saturated but none knows a signal: that one can't fire
    reason = _scale_up_reason(avg_kv, avg_queue, config, kv_known=kv_count > 0 or non_saturated == 0,
                              queue_known=queue_count > 0 or non_saturated == 0)
    check = _scale_down_check(replicas, config, tri_state)
    analysis = ModelSaturationAnalysis(
        model_id=model_id,
        namespace=namespace,
        analyzed_at=analyzed_at,
        total_replicas=len(replicas),
        non_saturated_count=non_saturated,
        avg_spare_kv_capacity=avg_kv,
        avg_spare_queue_length=avg_queue,
        should_scale_up=bool(reason),
        scale_down_safe=check.safe,
        scale_up_reason=reason,
        variant_analyses=variants,
        scale_down_check=check,
    )
    logger.debug(
        "saturation analysed model=%s namespace=%s replicas=%d non_saturated=%d spare_kv=%.3f "
        "spare_queue=%.1f scale_up=%s scale_down_safe=%s",
        model_id, namespace, analysis.total_replicas, non_saturated, avg_kv, avg_queue,
        analysis.should_scale_up, analysis.scale_down_safe,
    )
    return analysis


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """Replica targets and how they came about, for decision records.

    ``preserved``: variants whose previous decision is still rolling out (held at it);
    ``not_reporting``: variants held at their current count because not all replicas reported;
    ``direction``: the step the model asked for ("up", "down" or "none");
    ``candidates``: the variants eligible for that step; ``at_bound``: those a bound kept out of it;
    ``chosen``: the variant that took the step, if any; ``waiting_on`` and ``skipped``: see
    :func:`plan_saturation_targets`.
    """

    targets: dict[str, int]
    preserved: frozenset[str] = frozenset()
    not_reporting: frozenset[str] = frozenset()
    direction: str = "none"
    candidates: tuple[str, ...] = ()
    at_bound: tuple[str, ...] = ()
    chosen: str | None = None
    waiting_on: str | None = None  # the step waits for this variant's pending replicas
    skipped: tuple[str, ...] = ()  # passed over: their pending replicas are stuck
    cold: tuple[str, ...] = ()  # kept out of a scale-down: they scaled up within their cold-start time
    step: int = 0  # replicas the chosen variant gained (+) or gave back (-)


def calculate_saturation_targets(
    analysis: ModelSaturationAnalysis | None,
    states: Sequence[VariantReplicaState],
    bounds: Mapping[str, tuple[int, int | None]] | None = None,
) -> dict[str, int]:
    """Replica targets for the variants of one model group: at most one ±1 step per call.

    Without an analysis (or with no variant analysed) every state keeps its current replicas.
    Otherwise targets cover exactly the analysed variants (those with at least one reporting
    replica); a variant with no state is treated as having 0 current and 0 desired replicas.

    ``bounds`` (variant -> (minReplicas, maxReplicas or None)) is wva's addition: a variant already
    at its maximum is not chosen for the scale-up step, nor one at max(1, minimum) for scale-down,
    so the step goes to the next variant by cost. Without bounds the rule is upstream's exactly.
    """
    return plan_saturation_targets(analysis, states, bounds).targets


def plan_saturation_targets(
    analysis: ModelSaturationAnalysis | None,
    states: Sequence[VariantReplicaState],
    bounds: Mapping[str, tuple[int, int | None]] | None = None,
    *,
    waiting: frozenset[str] = frozenset(),
    skip: frozenset[str] = frozenset(),
    hold_down: frozenset[str] = frozenset(),
    up_step: int = 1,
) -> TargetPlan:
    """:func:`calculate_saturation_targets` with the reasons kept.

    wva's pending-replica guard: when the cheapest variant that could take a +1 is in ``waiting``
    (it has replicas on the way), the model waits for them instead of adding more; a variant in
    ``skip`` (its pending replicas are stuck) is passed over, so the next one by cost takes the step;
    a variant in ``hold_down`` (it scaled up less than its cold-start time ago) gives no replica back;
    ``up_step`` replicas are added at once (never past the variant's maximum; upstream: 1).
    """
    if analysis is None or not analysis.variant_analyses:
        return TargetPlan({state.variant_name: state.current_replicas for state in states})

    state_by_name = {state.variant_name: state for state in states}
    targets: dict[str, int] = {}
    costs: dict[str, float] = {}
    preserved: set[str] = set()
    not_reporting: set[str] = set()
    for variant in analysis.variant_analyses:
        name = variant.variant_name
        state = state_by_name.get(name) or VariantReplicaState(name, 0, 0)
        current, desired = state.current_replicas, state.desired_replicas
        stable = desired == 0 or desired == current
        all_reporting = variant.replica_count == current
        targets[name] = variant.replica_count if stable and all_reporting else current
        if not all_reporting:
            not_reporting.add(name)
        if desired not in (0, current):
            # wva's previous decision is still rolling out: hold it, and act elsewhere.
            targets[name] = desired
            preserved.add(name)
        costs[name] = variant.cost

    movable = [name for name in targets if name not in preserved]
    # wva's own bounds (spec.minReplicas/maxReplicas): a variant at its bound cannot take this
    # cycle's step, so the step goes to the next candidate instead of being clamped away
    limits = bounds or {}
    direction = "up" if analysis.should_scale_up else "down" if analysis.scale_down_safe else "none"
    candidates: list[str] = []
    at_bound: list[str] = []
    chosen: str | None = None
    waiting_on: str | None = None
    held: list[str] = []
    moved = 0
    if direction == "up":
        candidates = [n for n in movable if _below_max(targets[n], limits.get(n))]
        at_bound = [n for n in movable if n not in candidates]
        candidates = [n for n in candidates if n not in skip]
        if candidates:
            cheapest = min(candidates, key=lambda n: (costs[n], n))
            if cheapest in waiting:
                waiting_on = cheapest
            else:
                chosen = cheapest
                room = limits.get(chosen, (0, None))[1]
                step = max(1, up_step if room is None else min(up_step, room - targets[chosen]))
                targets[chosen] += step
                moved = step
    elif direction == "down":
        candidates = [n for n in movable if targets[n] > max(1, limits.get(n, (1, None))[0])]
        at_bound = [n for n in movable if n not in candidates]
        held = [n for n in candidates if n in hold_down]
        candidates = [n for n in candidates if n not in hold_down]
        if candidates:
            chosen = max(candidates, key=lambda n: (costs[n], n))
            targets[chosen] -= 1
            moved = -1
    return TargetPlan(
        targets=targets,
        preserved=frozenset(preserved) if preserved else _NONE,
        not_reporting=frozenset(not_reporting - preserved) if not_reporting - preserved else _NONE,
        direction=direction,
        candidates=tuple(sorted(candidates, key=lambda n: (costs[n], n))),
        at_bound=tuple(sorted(at_bound)),
        chosen=chosen,
        waiting_on=waiting_on,
        skipped=tuple(sorted(skip & set(movable))) if direction == "up" else (),
        cold=tuple(sorted(held)) if direction == "down" else (),
        step=moved,
    )


_NONE: frozenset[str] = frozenset()


def _below_max(target: int, bound: tuple[int, int | None] | None) -> bool:
    return bound is None or bound[1] is None or target < bound[1]


def clamp_target(target: int, min_replicas: int, max_replicas: int | None) -> int:
    """Bound a decision to the VA's ``[minReplicas, maxReplicas]``.

    If the bounds conflict (``max_replicas < min_replicas``), ``max_replicas`` wins: it is the
    budget cap, and the API forbids such a spec anyway.
    """
    bounded = max(target, min_replicas)
    if max_replicas is not None:
        bounded = min(bounded, max_replicas)
    return bounded
