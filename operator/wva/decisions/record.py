"""Decision records: what one cycle saw, computed and chose for one model group.

A record is immutable and holds references to the cycle's own objects (the collector's
``ReplicaMetrics``, the analyzer's results), so keeping one costs a few small tuples, not a copy
of the inputs. Its JSON form (:meth:`DecisionRecord.to_dict`) is built only when someone asks:
``/debug/decisions``, ``wva explain``, ``wva backtest --output json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wva.collector.types import ReplicaMetrics
from wva.saturation.analyzer import ModelSaturationAnalysis, TargetPlan
from wva.saturation.config import SaturationScalingConfig

RECORD_SCHEMA = "wva.decision/v1"


@dataclass(frozen=True, slots=True)
class VariantInput:
    """One variant as the engine sees it when deciding: Kubernetes state, bounds and cost."""

    name: str
    accelerator: str = ""
    cost: float = 10.0
    current_replicas: int = 0
    previous_desired: int = 0  # wva's last decision (0: none yet)
    min_replicas: int = 1
    max_replicas: int | None = None
    pods: tuple[str, ...] = ()  # the pods Kubernetes says serve it (ready), when known
    ready_replicas: int | None = None  # the Deployment's ready replicas (None: unknown, taken as all ready)
    cold_start: float | None = None  # median creation-to-Ready seconds of its pods (None: not learnt yet)


@dataclass(frozen=True, slots=True)
class PodInputs:
    """The per-pod signals of one record, packed: the collector's per-pod objects are not kept alive.

    Pod and variant names are shared with the inventory's strings where it knows the pod; values
    live in typed arrays (NaN marks an unknown signal), so a record costs about a hundred bytes per
    pod instead of a ``ReplicaMetrics`` each.
    """

    pods: tuple[str, ...]
    variants: tuple[str, ...]
    kv: array[float]
    queue: array[float]
    sample_time: array[float]
    sources: tuple[str, ...]  # one per pod; the same interned string for all pods of one source

    @classmethod
    def pack(cls, rows: Sequence[ReplicaMetrics], variants: Sequence[VariantInput]) -> PodInputs:
        known = {pod: pod for v in variants for pod in v.pods}
        names = {v.name: v.name for v in variants}
        nan = float("nan")
        return cls(
            pods=tuple(known.get(r.pod_name, r.pod_name) for r in rows),
            variants=tuple(names.get(r.variant_name, r.variant_name) for r in rows),
            kv=array("d", (r.kv_cache_usage if r.kv_known else nan for r in rows)),
            queue=array("d", (float(r.queue_length) if r.queue_known else nan for r in rows)),
            sample_time=array("d", (r.sample_time or (r.metadata.collected_at if r.metadata else 0.0)
                                    for r in rows)),
            sources=tuple(r.metadata.source if r.metadata is not None else "" for r in rows),
        )

    def __len__(self) -> int:
        return len(self.pods)


NO_INPUTS = PodInputs((), (), array("d"), array("d"), array("d"), ())


@dataclass(frozen=True, slots=True)
class Guard:
    """A rule outside the two saturation rules that changed (or fixed) a variant's outcome."""

    name: str  # unknown-signal-hold, pending-decision, replicas-not-reporting, max-bound, min-bound, clamp
    variant: str
    detail: str


@dataclass(frozen=True, slots=True)
class VariantOutcome:
    variant: str
    current: int
    previous_desired: int
    target: int
    decided: bool  # False: no fresh decision (metrics missing); the last one holds
    code: str
    message: str
    recommended: int = -1  # the rules' target before stabilisation (-1: same as target)

    def __post_init__(self) -> None:
        if self.recommended < 0:
            object.__setattr__(self, "recommended", self.target)


@dataclass(frozen=True, slots=True)
class ShadowDecision:
    """What the candidate configuration would have decided in the same cycle (never acted on)."""

    config: SaturationScalingConfig
    config_hash: str
    rule: str
    outcomes: tuple[VariantOutcome, ...]
    analysis: ModelSaturationAnalysis | None = None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    record_id: str
    time: float
    model_id: str
    namespace: str
    engine_version: str
    analyzer_version: str
    config: SaturationScalingConfig
    config_hash: str
    variants: tuple[VariantInput, ...]
    inputs: PodInputs
    unavailable: str | None  # why there was no usable data, when there was none
    source: str | None
    analysis: ModelSaturationAnalysis | None
    plan: TargetPlan | None
    rule: str  # scale-up, scale-down, steady, no-metrics
    guards: tuple[Guard, ...]
    outcomes: tuple[VariantOutcome, ...]
    shadow: ShadowDecision | None = field(default=None)
    load: tuple[float, float] | None = None  # total KV usage and queue of the reporting pods (None: no values)

    def outcome(self, variant: str) -> VariantOutcome | None:
        return next((o for o in self.outcomes if o.variant == variant), None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "id": self.record_id,
            "time": self.time,
            "model": self.model_id,
            "namespace": self.namespace,
            "engineVersion": self.engine_version,
            "analyzerVersion": self.analyzer_version,
            "config": {
                "hash": self.config_hash,
                "thresholds": self.config.thresholds(),
                "rules": self.config.rules(),
                "variants": [_variant_config(v) for v in self.variants],
            },
            "inputs": {
                "variants": [_variant_state(v) for v in self.variants],
                "source": self.source,
                "unavailable": self.unavailable,
                "pods": _pod_inputs(self.time, self.variants, self.inputs),
            },
            "analysis": _analysis_dict(self.analysis),
            "rule": self.rule,
            "guards": [{"guard": g.name, "variant": g.variant, "detail": g.detail} for g in self.guards],
            "choice": _choice_dict(self.plan, self.variants),
            "results": [_outcome_dict(o) for o in self.outcomes],
        }
        if self.shadow is not None:
            data["shadow"] = {
                "config": {"hash": self.shadow.config_hash, "thresholds": self.shadow.config.thresholds()},
                "rule": self.shadow.rule,
                "analysis": _analysis_dict(self.shadow.analysis),
                "results": [_outcome_dict(o) for o in self.shadow.outcomes],
            }
        return data


def config_hash(config: SaturationScalingConfig, variants: Sequence[VariantInput]) -> str:
    """A short, stable digest of everything configured that the decision depends on."""
    return _config_digest(config, tuple(sorted(_variant_key(v) for v in variants)))


@functools.lru_cache(maxsize=16384)
def _config_digest(config: SaturationScalingConfig, variants: tuple[_VariantKey, ...]) -> str:
    # the same configuration comes back every cycle for every model: digest it once (configs are frozen)
    canonical = {
        "thresholds": config.thresholds(),
        "rules": config.rules(),
        "variants": [_variant_dict(key) for key in variants],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _variant_state(variant: VariantInput) -> dict[str, Any]:
    return {"name": variant.name, "current": variant.current_replicas, "ready": variant.ready_replicas,
            "previousDesired": variant.previous_desired, "coldStartSeconds": variant.cold_start}


def signal_state(value: float | None) -> str:
    """A signal is a value, a confirmed zero (the series exists and says 0) or unknown (no series)."""
    if value is None:
        return "unknown"
    return "zero" if value == 0 else "value"


def _pod_inputs(now: float, variants: Sequence[VariantInput], inputs: PodInputs) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reported: dict[str, set[str]] = {}
    for i, pod in enumerate(inputs.pods):
        variant_name = inputs.variants[i]
        reported.setdefault(variant_name, set()).add(pod)
        kv, queue, stamp = inputs.kv[i], inputs.queue[i], inputs.sample_time[i]
        kv_value = None if kv != kv else kv  # NaN: no series
        queue_value = None if queue != queue else int(queue)
        rows.append({
            "pod": pod,
            "variant": variant_name,
            "kvCacheUsage": kv_value,
            "kvState": signal_state(kv_value),
            "queueLength": queue_value,
            "queueState": signal_state(queue_value),
            "sampleTime": stamp or None,
            "age": round(max(0.0, now - stamp), 3) if stamp else None,
            "source": inputs.sources[i] or None,
        })
    for variant in variants:
        for pod in variant.pods:
            if pod not in reported.get(variant.name, set()):
                rows.append({
                    "pod": pod, "variant": variant.name, "kvCacheUsage": None, "kvState": "unknown",
                    "queueLength": None, "queueState": "unknown", "sampleTime": None, "age": None, "source": None,
                })
    rows.sort(key=lambda row: (row["variant"], row["pod"]))
    return rows


def _analysis_dict(analysis: ModelSaturationAnalysis | None) -> dict[str, Any] | None:
    if analysis is None:
        return None
    check = analysis.scale_down_check
    return {
        "totalReplicas": analysis.total_replicas,
        "nonSaturated": analysis.non_saturated_count,
        "spareKV": analysis.avg_spare_kv_capacity,
        "spareQueue": analysis.avg_spare_queue_length,
        "scaleUp": analysis.should_scale_up,
        "scaleUpReason": analysis.scale_up_reason,
        "scaleDownSafe": analysis.scale_down_safe,
        "scaleDownCheck": None if check is None else {
            "nonSaturated": check.non_saturated,
            "kvAfter": check.kv_after,
            "queueAfter": check.queue_after,
            "spareKVAfter": check.kv_spare_after,
            "spareQueueAfter": check.queue_spare_after,
            "safe": check.safe,
        },
        "variants": [
            {
                "variant": v.variant_name,
                "cost": v.cost,
                "replicas": v.replica_count,
                "nonSaturated": v.non_saturated_count,
                "saturatedPods": list(v.saturated_replicas),
                "spareKV": v.avg_spare_kv_capacity,
                "spareQueue": v.avg_spare_queue_length,
                "maxKV": v.max_kv_cache_usage,
                "maxQueue": v.max_queue_length,
            }
            for v in analysis.variant_analyses
        ],
    }


def _choice_dict(plan: TargetPlan | None, variants: Sequence[VariantInput]) -> dict[str, Any] | None:
    if plan is None:
        return None
    costs: Mapping[str, float] = {v.name: v.cost for v in variants}
    order = "cheapest first" if plan.direction == "up" else "most expensive first" if plan.direction == "down" else ""
    candidates = list(plan.candidates) if plan.direction != "down" else list(reversed(plan.candidates))
    return {
        "direction": plan.direction,
        "order": order,
        "candidates": [{"variant": n, "cost": costs.get(n)} for n in candidates],
        "excludedAtBound": list(plan.at_bound),
        "heldPending": sorted(plan.preserved),
        "heldNotReporting": sorted(plan.not_reporting),
        "waitingOnPending": plan.waiting_on,
        "skippedStuck": list(plan.skipped),
        "chosen": plan.chosen,
        "step": plan.step,
    }


def _outcome_dict(outcome: VariantOutcome) -> dict[str, Any]:
    return {
        "variant": outcome.variant,
        "current": outcome.current,
        "previousDesired": outcome.previous_desired,
        "target": outcome.target,
        "recommended": outcome.recommended,
        "decided": outcome.decided,
        "code": outcome.code,
        "message": outcome.message,
    }


_VariantKey = tuple[str, str, float, int, int | None]


def _variant_key(variant: VariantInput) -> _VariantKey:
    return variant.name, variant.accelerator, variant.cost, variant.min_replicas, variant.max_replicas


def _variant_dict(key: _VariantKey) -> dict[str, Any]:
    name, accelerator, cost, low, high = key
    return {"name": name, "accelerator": accelerator, "cost": cost, "minReplicas": low, "maxReplicas": high}


def _variant_config(variant: VariantInput) -> dict[str, Any]:
    return _variant_dict(_variant_key(variant))
