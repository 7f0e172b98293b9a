"""The ``llmd.ai/v1alpha1`` VariantAutoscaling resource as pydantic models, plus pure helpers.

The models mirror ``crds/llmd.ai_variantautoscalings.yaml`` field for field (a unit test walks
both schemas), so ``VariantAutoscaling.model_validate(obj)`` rejects what the API server would
reject, with the offending field in the error's ``loc`` (JSON names, e.g. ``("spec", "modelID")``).

Python code uses snake_case attribute names; ``dump()`` produces the camelCase JSON shape the
API server expects, without ``None`` fields. Unknown fields are ignored, as the API server
prunes them; ``metadata`` keeps every field it is given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

# The resource's identity lives in wva.api.constants (importable without pydantic); re-exported here.
from wva.api.constants import API_VERSION as API_VERSION
from wva.api.constants import GROUP as GROUP
from wva.api.constants import KIND as KIND
from wva.api.constants import PLURAL as PLURAL
from wva.api.constants import SHORT_NAME as SHORT_NAME
from wva.api.constants import SINGULAR as SINGULAR
from wva.api.constants import VERSION as VERSION

LIST_KIND = f"{KIND}List"
CRD_NAME = f"{PLURAL}.{GROUP}"

ACCELERATOR_LABEL = "inference.optimization/acceleratorName"
CONTROLLER_INSTANCE_LABEL = "wva.llmd.ai/controller-instance"

DEFAULT_VARIANT_COST_STR = "10.0"
DEFAULT_MIN_REPLICAS = 1

#: Decimal strings as the CRD accepts them (variantCost, itlAverage, ttftAverage).
DECIMAL_PATTERN = r"^\d+(\.\d+)?$"
#: metav1.Condition's reason and type patterns.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
DECISION_REASON_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)

# The API server evaluates patterns with Go's RE2, where \d is ASCII-only and $ is end of text.
_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class ConditionType(StrEnum):
    TARGET_RESOLVED = "TargetResolved"
    METRICS_AVAILABLE = "MetricsAvailable"
    OPTIMIZATION_READY = "OptimizationReady"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class TargetResolvedReason(StrEnum):
    TARGET_FOUND = "TargetFound"
    TARGET_NOT_FOUND = "TargetNotFound"


class MetricsAvailableReason(StrEnum):
    """Same values as ``wva.collector.types.AvailabilityReason``."""

    METRICS_FOUND = "MetricsFound"
    METRICS_MISSING = "MetricsMissing"
    METRICS_STALE = "MetricsStale"
    PROMETHEUS_ERROR = "PrometheusError"


class OptimizationReadyReason(StrEnum):
    OPTIMIZATION_SUCCEEDED = "OptimizationSucceeded"
    OPTIMIZATION_FAILED = "OptimizationFailed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    INVALID_CONFIGURATION = "InvalidConfiguration"
    SKIPPED_PROCESSING = "SkippedProcessing"
    SATURATION_SAFETY_OVERRIDE = "SaturationSafetyOverride"
    SATURATION_ONLY_MODE = "SaturationOnlyMode"


# wva's own condition (not upstream's): whether the variant's replicas are up, starting, or stuck.
CONDITION_REPLICAS_READY = "ReplicasReady"


class ReplicasReadyReason(StrEnum):
    ALL_REPLICAS_READY = "AllReplicasReady"
    REPLICAS_STARTING = "ReplicasStarting"
    PENDING_REPLICAS_STUCK = "PendingReplicasStuck"


# Flat aliases, for call sites that prefer module constants.
CONDITION_TARGET_RESOLVED = ConditionType.TARGET_RESOLVED
CONDITION_METRICS_AVAILABLE = ConditionType.METRICS_AVAILABLE
CONDITION_OPTIMIZATION_READY = ConditionType.OPTIMIZATION_READY
REASON_TARGET_FOUND = TargetResolvedReason.TARGET_FOUND
REASON_TARGET_NOT_FOUND = TargetResolvedReason.TARGET_NOT_FOUND
REASON_METRICS_FOUND = MetricsAvailableReason.METRICS_FOUND
REASON_METRICS_MISSING = MetricsAvailableReason.METRICS_MISSING
REASON_METRICS_STALE = MetricsAvailableReason.METRICS_STALE
REASON_PROMETHEUS_ERROR = MetricsAvailableReason.PROMETHEUS_ERROR
REASON_OPTIMIZATION_SUCCEEDED = OptimizationReadyReason.OPTIMIZATION_SUCCEEDED
REASON_OPTIMIZATION_FAILED = OptimizationReadyReason.OPTIMIZATION_FAILED
REASON_METRICS_UNAVAILABLE = OptimizationReadyReason.METRICS_UNAVAILABLE
REASON_INVALID_CONFIGURATION = OptimizationReadyReason.INVALID_CONFIGURATION
REASON_SKIPPED_PROCESSING = OptimizationReadyReason.SKIPPED_PROCESSING
REASON_SATURATION_SAFETY_OVERRIDE = OptimizationReadyReason.SATURATION_SAFETY_OVERRIDE
REASON_SATURATION_ONLY_MODE = OptimizationReadyReason.SATURATION_ONLY_MODE


def parse_time(value: object) -> datetime:
    """A ``metav1.Time`` from an RFC 3339 string (or a datetime): aware, UTC, whole seconds.

    Stricter than pydantic's datetime parsing on purpose: no Unix timestamps, no date-only or
    zone-less strings, as the API server's ``date-time`` format rejects them.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _RFC3339_RE.fullmatch(value):
        parsed = datetime.fromisoformat(value.upper())
    else:
        raise ValueError(f"expected an RFC 3339 date-time such as 2026-01-08T19:40:00Z, got {value!r}")
    # Second precision, like metav1.Time: what is held equals what a dump/re-read round trip gives.
    return _as_utc(parsed).replace(microsecond=0)


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and second precision, like ``metav1.Time``."""
    return _as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


#: A ``metav1.Time``: parsed from RFC 3339, held as an aware UTC datetime in whole seconds,
#: dumped as ``...Z``.
Time = Annotated[
    datetime,
    BeforeValidator(parse_time),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]

# Integers and booleans are strict: the API server rejects "3" for an integer and "true" for a bool.
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]


def _ascii_decimal(value: str) -> str:
    if not _DECIMAL_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a decimal string of ASCII digits such as '10.0'")
    return value


#: A non-negative decimal as a string ("10", "10.25"), as the CRD's pattern accepts it.
DecimalStr = Annotated[str, Field(pattern=DECIMAL_PATTERN), AfterValidator(_ascii_decimal)]


class _Model(BaseModel):
    """Common configuration: JSON names as aliases, Python names accepted, unknown fields pruned."""

    model_config = ConfigDict(
        validate_by_name=True,  # "populate_by_name": snake_case works in Python code
        validate_by_alias=True,
        extra="ignore",
    )

    def dump(self) -> dict[str, Any]:
        """The camelCase JSON form (times as RFC 3339 strings), without ``None`` fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_dict(self) -> dict[str, Any]:
        """Same as :meth:`dump`."""
        return self.dump()


class ObjectMeta(_Model):
    """The subset of ``metav1.ObjectMeta`` wva reads; every other field is kept as an extra."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: Int | None = None
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: Time | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: Time | None = Field(default=None, alias="deletionTimestamp")


class CrossVersionObjectReference(_Model):
    """The target of a VariantAutoscaling (a Deployment in the same namespace)."""

    kind: str
    name: str
    api_version: str | None = Field(default=None, alias="apiVersion")


class AcceleratorProfile(_Model):
    acc: str = Field(min_length=1)
    acc_count: Int = Field(alias="accCount", ge=1)
    max_batch_size: Int = Field(alias="maxBatchSize", ge=1)


class ModelProfile(_Model):
    accelerators: list[AcceleratorProfile] = Field(min_length=1)


#: Go durations as the CRD accepts them for spec.scaleToZero.retention ("10m", "1h30m", "90s").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def _positive_duration(value: str) -> str:
    from wva.durations import parse_go_duration

    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration such as '10m' or '90s'")
    if parse_go_duration(value) <= 0:
        raise ValueError(f"must be longer than 0s, got {value!r}")
    return value


class ScaleToZeroSpec(_Model):
    """This variant's word on its model's scale-to-zero; it overrides the ConfigMap (docs/configuration.md)."""

    enabled: Bool | None = None
    retention: Annotated[
        str, Field(max_length=32, pattern=DURATION_PATTERN), AfterValidator(_positive_duration)
    ] | None = None


class VariantAutoscalingSpec(_Model):
    scale_target_ref: CrossVersionObjectReference = Field(alias="scaleTargetRef")
    model_id: str = Field(alias="modelID", min_length=1)
    model_profile: ModelProfile | None = Field(default=None, alias="modelProfile")
    variant_cost: DecimalStr = Field(default=DEFAULT_VARIANT_COST_STR, alias="variantCost")
    min_replicas: Int = Field(default=DEFAULT_MIN_REPLICAS, alias="minReplicas", ge=0)
    max_replicas: Int | None = Field(default=None, alias="maxReplicas", ge=1)
    scale_to_zero: ScaleToZeroSpec | None = Field(default=None, alias="scaleToZero")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        # Mirrors the CRD's x-kubernetes-validations rule on spec.
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas must be less than or equal to maxReplicas "
                f"(minReplicas={_count(self.min_replicas)}, maxReplicas={_count(self.max_replicas)})"
            )
        return self


def _count(value: int) -> str:
    """An integer for a message; one of more than 4300 digits has no decimal text (str() raises)."""
    try:
        return str(value)
    except ValueError:
        return f"a number of {value.bit_length()} bits"


class LoadProfile(_Model):
    """Observed load; values are decimal strings (arrival rate in requests per minute)."""

    arrival_rate: str = Field(alias="arrivalRate")
    avg_input_tokens: str = Field(alias="avgInputTokens")
    avg_output_tokens: str = Field(alias="avgOutputTokens")


class Allocation(_Model):
    """``status.currentAlloc``: what the variant runs now. Latencies in milliseconds, as strings."""

    accelerator: str = Field(min_length=1)
    num_replicas: Int = Field(alias="numReplicas", ge=0)
    max_batch: Int = Field(alias="maxBatch", ge=0)
    itl_average: DecimalStr = Field(alias="itlAverage")
    ttft_average: DecimalStr = Field(alias="ttftAverage")
    load: LoadProfile


class OptimizedAlloc(_Model):
    """``status.desiredOptimizedAlloc``: the latest replica decision."""

    accelerator: str = Field(min_length=2)
    num_replicas: Int = Field(alias="numReplicas", ge=0)
    last_run_time: Time | None = Field(default=None, alias="lastRunTime")


class ActuationStatus(_Model):
    applied: Bool


class LastDecision(_Model):
    """``status.lastDecision``: what decided this variant's replicas (see wva.decisions.codes)."""

    reason: str = Field(max_length=64, pattern=DECISION_REASON_PATTERN)
    message: str = Field(max_length=1024)
    record_id: str | None = Field(default=None, alias="recordID", max_length=64)
    config_hash: str | None = Field(default=None, alias="configHash", max_length=64)
    time: Time | None = None


class Condition(_Model):
    """A ``metav1.Condition``."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(max_length=32768)
    last_transition_time: Time = Field(alias="lastTransitionTime")
    observed_generation: Int | None = Field(default=None, alias="observedGeneration", ge=0)


class VariantAutoscalingStatus(_Model):
    current_alloc: Allocation | None = Field(default=None, alias="currentAlloc")
    desired_optimized_alloc: OptimizedAlloc | None = Field(default=None, alias="desiredOptimizedAlloc")
    last_decision: LastDecision | None = Field(default=None, alias="lastDecision")
    actuation: ActuationStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)

    @field_validator("conditions")
    @classmethod
    def _unique_types(cls, value: list[Condition]) -> list[Condition]:
        # The CRD declares conditions a list-map keyed by type: the API server rejects duplicates.
        seen: set[str] = set()
        for index, condition in enumerate(value):
            if condition.type in seen:
                raise ValueError(f"conditions[{index}]: duplicate condition type {condition.type!r}")
            seen.add(condition.type)
        return value


class VariantAutoscaling(_Model):
    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: VariantAutoscalingSpec
    status: VariantAutoscalingStatus = Field(default_factory=VariantAutoscalingStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


# ----------------------------------------------------------------------------------------------
# Pure helpers


def accelerator_name(va: VariantAutoscaling) -> str:
    """The variant's accelerator: ``spec.modelProfile.accelerators[0].acc``, else the
    ``inference.optimization/acceleratorName`` label, else ``""`` (an invalid configuration)."""
    profile = va.spec.model_profile
    if profile is not None and profile.accelerators and profile.accelerators[0].acc:
        return profile.accelerators[0].acc
    return va.metadata.labels.get(ACCELERATOR_LABEL, "")


def variant_cost(va: VariantAutoscaling) -> float:
    """``spec.variantCost`` as a finite float; ValueError naming the value when it is not a decimal string.

    The model already enforces the pattern on validation; this also guards objects built with
    ``model_construct`` or mutated after validation.
    """
    raw = va.spec.variant_cost
    if not isinstance(raw, str) or not _DECIMAL_RE.fullmatch(raw):
        raise ValueError(f"invalid variantCost {raw!r}: expected a decimal string such as '10.0'")
    cost = float(raw)
    if not math.isfinite(cost):  # a decimal of more than 308 digits
        shown = raw if len(raw) <= 40 else f"{raw[:20]}...({len(raw)} digits)"
        raise ValueError(f"invalid variantCost {shown!r}: too large for a number")
    return cost


def get_condition(conditions: Iterable[Condition], type: str) -> Condition | None:
    """The condition of that type, or None."""
    for condition in conditions:
        if condition.type == type:
            return condition
    return None


def _normalize_status(status: ConditionStatus | str | bool) -> ConditionStatus:
    if isinstance(status, bool):
        return ConditionStatus.TRUE if status else ConditionStatus.FALSE
    return ConditionStatus(status)


def set_condition(
    conditions: Iterable[Condition],
    type: str,
    status: ConditionStatus | str | bool,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return a new condition list with ``type`` set, in ``meta.SetStatusCondition`` style.

    An existing condition of that type keeps its place and its ``lastTransitionTime`` unless the
    status flips; reason, message and observedGeneration are always updated. A new condition is
    appended with ``lastTransitionTime=now``. Other conditions are returned unchanged, in order.
    The input is not modified. Invalid values (e.g. a reason with spaces) raise ValidationError.
    """
    new_status = _normalize_status(status)
    result: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.type != type:
            result.append(existing)
            continue
        found = True
        transition = now if existing.status != new_status else existing.last_transition_time
        result.append(_build_condition(type, new_status, reason, message, observed_generation, transition))
    if not found:
        result.append(_build_condition(type, new_status, reason, message, observed_generation, now))
    return result


def _build_condition(
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int | None,
    transition: datetime,
) -> Condition:
    # Validate through the aliases so a bad value fails exactly as it would from the API.
    payload: Mapping[str, Any] = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": observed_generation,
    }
    return Condition.model_validate(payload)
