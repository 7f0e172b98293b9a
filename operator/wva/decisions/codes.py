"""Stable reason codes of per-variant decisions: status, Events, records and ``wva explain`` use them.

A code names what decided one variant's replica count in one cycle. Codes are part of the API:
dashboards, alerts and scripts match on them, so they are only ever added, never renamed.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    SCALE_UP_KV_SPARE_LOW = "ScaleUpKVSpareLow"
    SCALE_UP_QUEUE_SPARE_LOW = "ScaleUpQueueSpareLow"
    SCALE_UP_KV_AND_QUEUE_SPARE_LOW = "ScaleUpKVAndQueueSpareLow"
    SCALE_DOWN_REDISTRIBUTABLE = "ScaleDownRedistributable"
    AT_MAX_REPLICAS = "AtMaxReplicas"
    AT_MIN_REPLICAS = "AtMinReplicas"
    CLAMPED_TO_MIN_REPLICAS = "ClampedToMinReplicas"
    CLAMPED_TO_MAX_REPLICAS = "ClampedToMaxReplicas"
    HOLD_CHEAPER_VARIANT_SCALED = "HoldCheaperVariantScaled"
    HOLD_COSTLIER_VARIANT_SCALED = "HoldCostlierVariantScaled"
    HOLD_PENDING_DECISION = "HoldPendingDecision"
    HOLD_REPLICAS_NOT_REPORTING = "HoldReplicasNotReporting"
    HOLD_UNKNOWN_SIGNAL = "HoldUnknownSignal"
    HOLD_METRICS_UNAVAILABLE = "HoldMetricsUnavailable"
    HOLD_STEADY = "HoldSteady"
    HOLD_FALLING_LOAD = "HoldFallingLoad"
    HOLD_SCALE_DOWN_STABILIZING = "HoldScaleDownStabilizing"
    HOLD_PENDING_REPLICAS = "HoldPendingReplicas"
    PENDING_REPLICAS_STUCK = "PendingReplicasStuck"
    SCALE_TO_ZERO_IDLE = "ScaleToZeroIdle"
    HOLD_AT_ZERO = "HoldAtZero"
    SCALE_FROM_ZERO_QUEUED = "ScaleFromZeroQueued"
    HOLD_COLD_START = "HoldColdStart"


DESCRIPTIONS: dict[ReasonCode, str] = {
    ReasonCode.SCALE_UP_KV_SPARE_LOW: "the model's average spare KV cache fell below kvSpareTrigger; this variant "
    "was the cheapest one below its maximum and took the +1",
    ReasonCode.SCALE_UP_QUEUE_SPARE_LOW: "the model's average spare queue fell below queueSpareTrigger; this "
    "variant was the cheapest one below its maximum and took the +1",
    ReasonCode.SCALE_UP_KV_AND_QUEUE_SPARE_LOW: "both spares fell below their triggers; this variant took the +1",
    ReasonCode.SCALE_DOWN_REDISTRIBUTABLE: "the non-saturated replicas' load fits on one replica fewer with both "
    "spares at or above their triggers; this variant was the most expensive one above its minimum and took the -1",
    ReasonCode.AT_MAX_REPLICAS: "the model needed a replica but this variant is at spec.maxReplicas",
    ReasonCode.AT_MIN_REPLICAS: "the model could shed a replica but this variant is at its minimum",
    ReasonCode.CLAMPED_TO_MIN_REPLICAS: "the rules gave fewer replicas than spec.minReplicas; the minimum applies",
    ReasonCode.CLAMPED_TO_MAX_REPLICAS: "the rules gave more replicas than spec.maxReplicas; the maximum applies",
    ReasonCode.HOLD_CHEAPER_VARIANT_SCALED: "the model's +1 went to a cheaper variant",
    ReasonCode.HOLD_COSTLIER_VARIANT_SCALED: "the model's -1 was taken from a costlier variant",
    ReasonCode.HOLD_PENDING_DECISION: "wva's previous decision for this variant is still rolling out "
    "(cascade guard): it is held, and no further step is taken on this variant",
    ReasonCode.HOLD_REPLICAS_NOT_REPORTING: "not every replica of this variant reports metrics yet (pending or "
    "starting pods): the count is held at the current replicas",
    ReasonCode.HOLD_UNKNOWN_SIGNAL: "some replicas' signals are unknown (no series): a scale-down is never made "
    "on unknown load",
    ReasonCode.HOLD_METRICS_UNAVAILABLE: "no usable metrics for the model this cycle: the last decision holds",
    ReasonCode.HOLD_STEADY: "spares are above the scale-up triggers and one replica fewer would not keep them",
    ReasonCode.HOLD_FALLING_LOAD: "the spare rule asked for a replica, but the load is falling and no pod is near "
    "saturation (wva's falling-load guard; strictUpstream turns it off)",
    ReasonCode.HOLD_SCALE_DOWN_STABILIZING: "a scale-down waits until the lower count has been asked for during the "
    "whole scaleDownStabilizationWindow",
    ReasonCode.HOLD_PENDING_REPLICAS: "the model needs a replica and the variant that would take it has replicas "
    "on the way: it waits for them instead of adding more",
    ReasonCode.PENDING_REPLICAS_STUCK: "this variant's pending replicas have not become ready within "
    "pendingStuckAfter: it is passed over and the next variant by cost takes the step",
    ReasonCode.SCALE_TO_ZERO_IDLE: "scaleToZero: the model served no request during the whole "
    "scaleToZeroRetention window (read from its request counters; unknown is never idle): every variant goes to 0",
    ReasonCode.HOLD_AT_ZERO: "the model is scaled to zero: it stays there until requests queue at the gateway "
    "(the scale-from-zero poller brings the cheapest variant to 1)",
    ReasonCode.SCALE_FROM_ZERO_QUEUED: "requests queued at the gateway for a model at zero: its cheapest variant "
    "goes to 1, then the normal rules take over",
    ReasonCode.HOLD_COLD_START: "the model could shed a replica, but this variant scaled up less than its "
    "cold-start time ago (the median creation-to-Ready time of its pods): it gives none back yet",
}


def scale_up_code(kv_low: bool, queue_low: bool) -> ReasonCode:
    if kv_low and queue_low:
        return ReasonCode.SCALE_UP_KV_AND_QUEUE_SPARE_LOW
    if queue_low:
        return ReasonCode.SCALE_UP_QUEUE_SPARE_LOW
    return ReasonCode.SCALE_UP_KV_SPARE_LOW
