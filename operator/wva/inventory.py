"""The in-memory view of VariantAutoscalings, Deployments and Pods that kopf's watch handlers keep current.

The engine reads only this view (no API call to find what to scale or which pod serves which VA).
All mutations happen on the operator's event loop; reads return immutable records.
"""

from __future__ import annotations

import datetime
import logging
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from wva.api.v1alpha1 import (
    CONTROLLER_INSTANCE_LABEL,
    VariantAutoscaling,
    VariantAutoscalingStatus,
    accelerator_name,
    variant_cost,
)
from wva.coldstart import ColdStartTracker
from wva.collector.types import DEFAULT_VARIANT_COST, VariantRef
from wva.collector.v2 import PodVAMapper
from wva.durations import parse_go_duration
from wva.saturation.config import ScaleToZeroOverride
from wva.sharding import ShardAssignment

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class VariantRecord:
    """One VariantAutoscaling as the engine needs it. ``problem`` is set when it cannot be scaled."""

    name: str
    namespace: str
    model_id: str = ""
    deployment_name: str = ""
    accelerator: str = ""
    cost: float = DEFAULT_VARIANT_COST
    min_replicas: int = 1
    max_replicas: int | None = None
    generation: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    problem: str | None = None
    status: VariantAutoscalingStatus = field(default_factory=VariantAutoscalingStatus)
    scale_to_zero: ScaleToZeroOverride = field(default_factory=ScaleToZeroOverride)  # spec.scaleToZero

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def previous_desired(self) -> int:
        alloc = self.status.desired_optimized_alloc
        return alloc.num_replicas if alloc is not None else 0

    def ref(self) -> VariantRef:
        return VariantRef(
            name=self.name,
            namespace=self.namespace,
            deployment_name=self.deployment_name,
            accelerator_name=self.accelerator,
            cost=self.cost,
        )

    def involved_object(self) -> dict[str, str]:
        ref = {"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling", "name": self.name,
               "namespace": self.namespace}
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    name: str
    namespace: str
    spec_replicas: int = 1
    status_replicas: int = 0
    ready_replicas: int = 0
    deleting: bool = False

    @property
    def current_replicas(self) -> int:
        """Upstream's notion of "current": status.replicas, or spec.replicas while status says 0."""
        return self.status_replicas if self.status_replicas > 0 else self.spec_replicas


@dataclass(frozen=True, slots=True)
class PodRecord:
    name: str
    namespace: str
    deployment: str | None
    ip: str | None = None
    ready: bool = False
    deleting: bool = False
    created: float | None = None  # metadata.creationTimestamp, seconds since the epoch
    ready_since: float | None = None  # the Ready condition's lastTransitionTime, when it is True


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel = 3


def _shown(value: object) -> str:
    """A short repr of a rejected value: bounded however large or deep it is."""
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an int of more than 4300 digits has no decimal repr
        return f"<{type(value).__name__}>"


def describe_validation_error(exc: ValidationError) -> str:
    """``spec.variantCost: String should match pattern ...`` — the path of each bad field first."""
    parts = []
    for error in exc.errors()[:5]:
        path = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{path}: {error.get('msg', 'invalid')} (got {_shown(error.get('input'))})"[:300])
    return "; ".join(parts)


def _text(value: object) -> str:
    """A string field of the object as text; anything else (the API server never sends it) is empty."""
    return value if isinstance(value, str) else ""


def _texts(value: object) -> dict[str, str]:
    """A string map (labels, annotations); entries that are not text are left out."""
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def parse_variant(body: Mapping[str, Any]) -> VariantRecord:
    """Turn a VA object into a record; invalid content becomes ``problem`` instead of an exception.

    Never raises, whatever ``body`` holds; a VA without a string name and namespace gets empty ones
    (:meth:`Inventory.apply_variant` does not store it).
    """
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    target = spec.get("scaleTargetRef") if isinstance(spec.get("scaleTargetRef"), Mapping) else {}
    assert isinstance(target, Mapping)
    generation = meta.get("generation")
    base: dict[str, Any] = {
        "name": _text(meta.get("name")),
        "namespace": _text(meta.get("namespace")),
        "model_id": _text(spec.get("modelID")),
        "deployment_name": _text(target.get("name")),
        "labels": _texts(meta.get("labels")),
        "annotations": _texts(meta.get("annotations")),
        "uid": _text(meta.get("uid")) or None,
        "resource_version": _text(meta.get("resourceVersion")) or None,
        "generation": generation if isinstance(generation, int) and not isinstance(generation, bool) else None,
    }
    try:
        va = VariantAutoscaling.model_validate(dict(body))
    except ValidationError as exc:
        status = _lenient_status(body.get("status"))
        return VariantRecord(**base, status=status, problem=f"invalid spec: {describe_validation_error(exc)}")
    accelerator = accelerator_name(va)
    problem = None
    if not accelerator:
        problem = (
            "no accelerator: set spec.modelProfile.accelerators[0].acc or the label "
            "inference.optimization/acceleratorName"
        )
    elif not va.spec.scale_target_ref.name:
        problem = "spec.scaleTargetRef.name is empty"
    try:
        cost = variant_cost(va)
    except ValueError as exc:
        cost, problem = DEFAULT_VARIANT_COST, str(exc)
    return VariantRecord(
        **base,
        accelerator=accelerator,
        cost=cost,
        min_replicas=va.spec.min_replicas,
        max_replicas=va.spec.max_replicas,
        status=va.status,
        problem=problem,
        scale_to_zero=_scale_to_zero_override(va),
    )


def _scale_to_zero_override(va: VariantAutoscaling) -> ScaleToZeroOverride:
    spec = va.spec.scale_to_zero
    if spec is None:
        return ScaleToZeroOverride()
    retention = parse_go_duration(spec.retention) if spec.retention is not None else None
    return ScaleToZeroOverride(enabled=spec.enabled, retention=retention)


def _lenient_status(raw: Any) -> VariantAutoscalingStatus:
    try:
        return VariantAutoscalingStatus.model_validate(raw or {})
    except ValidationError:
        return VariantAutoscalingStatus()


def parse_deployment(body: Mapping[str, Any]) -> DeploymentRecord:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    replicas = spec.get("replicas")
    return DeploymentRecord(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        spec_replicas=int(replicas) if isinstance(replicas, int) else 1,
        status_replicas=_int(status.get("replicas")),
        ready_replicas=_int(status.get("readyReplicas")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def pod_owner_deployment(body: Mapping[str, Any]) -> str | None:
    """The Deployment owning a pod, derived from its ReplicaSet owner and pod-template-hash label."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    template_hash = labels.get("pod-template-hash")
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "ReplicaSet" and owner.get("controller", True):
            rs_name = str(owner.get("name", ""))
            if template_hash and rs_name.endswith(f"-{template_hash}"):
                return rs_name[: -len(template_hash) - 1]
            head, _, _tail = rs_name.rpartition("-")
            return head or None
    return None


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_pod(body: Mapping[str, Any]) -> PodRecord:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    ready_condition = next(
        (c for c in status.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == "Ready"), None
    )
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    return PodRecord(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        deployment=pod_owner_deployment(body),
        ip=status.get("podIP"),
        ready=ready and status.get("phase", "Running") == "Running",
        deleting=bool(meta.get("deletionTimestamp")),
        created=_timestamp(meta.get("creationTimestamp")),
        ready_since=_timestamp(ready_condition.get("lastTransitionTime")) if ready and ready_condition else None,
    )


class Inventory:
    """Watched state plus the pod→VA mapper it feeds.

    Only the VAs this process manages are kept: with ``CONTROLLER_INSTANCE``, those carrying its label;
    with sharding, those whose model group (namespace, model) belongs to this process' shard. Every
    reader (the engine's group selection, the status writer, the scale-from-zero poller, the handlers)
    therefore sees only its own VAs, and a foreign VA costs one hash per watch event and no memory.
    """

    def __init__(
        self, mapper: PodVAMapper | None = None, controller_instance: str = "", shard: ShardAssignment | None = None
    ) -> None:
        self.mapper = mapper if mapper is not None else PodVAMapper()
        self.controller_instance = controller_instance
        self.shard = shard if shard is not None else ShardAssignment()
        self._variants: dict[Key, VariantRecord] = {}
        self._models: dict[tuple[str, str], int] = {}  # (namespace, model) -> VAs held (this shard's groups)
        self._deployments: dict[Key, DeploymentRecord] = {}
        self._pods: dict[Key, PodRecord] = {}
        self._pods_by_deployment: dict[Key, set[str]] = {}
        self._opted_in_to_zero: set[Key] = set()  # VAs whose spec.scaleToZero.enabled is true
        self.cold_starts = ColdStartTracker()

    # --- VariantAutoscalings ---------------------------------------------------------------------
    def manages(self, labels: Mapping[str, str]) -> bool:
        """With CONTROLLER_INSTANCE set, only VAs carrying that instance label are ours."""
        return not self.controller_instance or labels.get(CONTROLLER_INSTANCE_LABEL) == self.controller_instance

    def owns(self, namespace: str, model_id: str) -> bool:
        """Whether the model group (namespace, model) belongs to this process' shard."""
        return self.shard.owns(namespace, model_id)

    def apply_variant(self, body: Mapping[str, Any]) -> VariantRecord | None:
        """Store the VA; None (and the VA forgotten) when it is not ours: another controller instance's,
        another shard's, or without a name."""
        if self.shard.sharded and not self._owns_body(body):
            return None  # another shard's: not even parsed (the watch delivers every VA to every shard)
        record = parse_variant(body)
        if not record.name or not record.namespace:
            return None
        if not self.manages(record.labels) or not self.owns(record.namespace, record.model_id):
            self.delete_variant(record.namespace, record.name)
            return None
        previous = self._variants.get(record.key)
        self._variants[record.key] = record
        self._count_model(previous, record)
        if record.scale_to_zero.enabled:
            self._opted_in_to_zero.add(record.key)
        else:
            self._opted_in_to_zero.discard(record.key)
        if record.deployment_name:
            self.mapper.register(record.name, record.namespace, record.deployment_name)
        elif previous is not None:
            self.mapper.unregister(record.name, record.namespace)
        return record

    def update_variant_status(
        self, namespace: str, name: str, status: VariantAutoscalingStatus, resource_version: str | None = None
    ) -> None:
        """Remember what we wrote (and the resourceVersion the server gave it), so the next cycle sees it
        before the watch event arrives."""
        record = self._variants.get((namespace, name))
        if record is not None:
            self._variants[(namespace, name)] = _replace_status(record, status, resource_version)

    def delete_variant(self, namespace: str, name: str) -> VariantRecord | None:
        record = self._variants.pop((namespace, name), None)
        self._opted_in_to_zero.discard((namespace, name))
        if record is not None:
            self.mapper.unregister(name, namespace)
            self._count_model(record, None)
        return record

    def _owns_body(self, body: Mapping[str, Any]) -> bool:
        """Whether the raw VA belongs to this shard (read as :func:`parse_variant` reads it); a foreign one
        held from before (its model changed) is forgotten."""
        meta = body.get("metadata")
        spec = body.get("spec")
        meta = meta if isinstance(meta, Mapping) else {}
        model = _text(spec.get("modelID")) if isinstance(spec, Mapping) else ""
        namespace, name = _text(meta.get("namespace")), _text(meta.get("name"))
        if self.owns(namespace, model):
            return True
        if name and namespace:
            self.delete_variant(namespace, name)
        return False

    def _count_model(self, old: VariantRecord | None, new: VariantRecord | None) -> None:
        if old is not None and new is not None and old.model_id == new.model_id:
            return
        if old is not None:
            key = (old.namespace, old.model_id)
            left = self._models.get(key, 0) - 1
            if left > 0:
                self._models[key] = left
            else:
                self._models.pop(key, None)
        if new is not None:
            key = (new.namespace, new.model_id)
            self._models[key] = self._models.get(key, 0) + 1

    @property
    def model_groups(self) -> int:
        """How many model groups (namespace, model) the VAs held here form: this shard's share of the fleet."""
        return len(self._models)

    @property
    def any_scale_to_zero_opt_in(self) -> bool:
        """Whether any VA turns scale-to-zero on in its own spec (the scale-from-zero poller's early exit)."""
        return bool(self._opted_in_to_zero)

    def variant(self, namespace: str, name: str) -> VariantRecord | None:
        return self._variants.get((namespace, name))

    def variants(self) -> list[VariantRecord]:
        return list(self._variants.values())

    def variants_for_deployment(self, namespace: str, deployment: str) -> list[VariantRecord]:
        return [v for v in self._variants.values() if v.namespace == namespace and v.deployment_name == deployment]

    # --- Deployments -----------------------------------------------------------------------------
    def apply_deployment(self, body: Mapping[str, Any]) -> DeploymentRecord:
        record = parse_deployment(body)
        self._deployments[(record.namespace, record.name)] = record
        return record

    def delete_deployment(self, namespace: str, name: str) -> DeploymentRecord | None:
        return self._deployments.pop((namespace, name), None)

    def deployment(self, namespace: str, name: str) -> DeploymentRecord | None:
        return self._deployments.get((namespace, name))

    # --- Pods ------------------------------------------------------------------------------------
    def apply_pod(self, body: Mapping[str, Any]) -> PodRecord:
        record = parse_pod(body)
        key = (record.namespace, record.name)
        previous = self._pods.get(key)
        if previous is not None and previous.deployment != record.deployment and previous.deployment:
            self._pods_by_deployment.get((record.namespace, previous.deployment), set()).discard(record.name)
        self._pods[key] = record
        if record.deployment:
            self._pods_by_deployment.setdefault((record.namespace, record.deployment), set()).add(record.name)
            if record.ready and not record.deleting:
                self.cold_starts.observe(record.namespace, record.deployment, record.name, record.created,
                                         record.ready_since)
        self.mapper.observe_pod(record.name, record.namespace, record.deployment)
        return record

    def delete_pod(self, namespace: str, name: str) -> None:
        record = self._pods.pop((namespace, name), None)
        if record is not None and record.deployment:
            pods = self._pods_by_deployment.get((namespace, record.deployment))
            if pods is not None:
                pods.discard(name)
                if not pods:
                    del self._pods_by_deployment[(namespace, record.deployment)]
        self.cold_starts.forget_pod(namespace, name)
        self.mapper.forget_pod(name, namespace)

    def ready_pods(self, namespace: str, deployment: str) -> list[PodRecord]:
        names = self._pods_by_deployment.get((namespace, deployment), set())
        pods = (self._pods.get((namespace, n)) for n in sorted(names))
        return [p for p in pods if p is not None and p.ready and not p.deleting and p.ip]

    # --- resync ----------------------------------------------------------------------------------
    def _table(self, kind: str) -> dict[Key, Any]:
        tables: dict[str, dict[Key, Any]] = {
            "variants": self._variants, "deployments": self._deployments, "pods": self._pods
        }
        return tables[kind]

    def snapshot(self, kind: str) -> dict[Key, object]:
        """The records of ``kind`` now, by key (compared by identity in :meth:`prune`)."""
        return dict(self._table(kind))

    def prune(self, kind: str, before: dict[Key, object], present: set[Key]) -> list[Key]:
        """Forget what the server no longer has: entries of ``before`` missing from ``present`` and not
        touched by a watch event since the snapshot (a newer event means the watch knows better)."""
        table = self._table(kind)
        gone = [key for key, record in before.items() if key not in present and table.get(key) is record]
        for namespace, name in gone:
            if kind == "variants":
                self.delete_variant(namespace, name)
            elif kind == "deployments":
                self.delete_deployment(namespace, name)
            else:
                self.delete_pod(namespace, name)
        return gone

    # --- sizes (leak checks and self-metrics) ----------------------------------------------------
    def sizes(self) -> dict[str, int]:
        return {
            "variants": len(self._variants),
            "deployments": len(self._deployments),
            "pods": len(self._pods),
            "pod_index": sum(len(v) for v in self._pods_by_deployment.values()),
            "mapper": len(self.mapper),
            "model_groups": len(self._models),
        }


def _replace_status(
    record: VariantRecord, status: VariantAutoscalingStatus, resource_version: str | None = None
) -> VariantRecord:
    return replace(record, status=status, resource_version=resource_version or record.resource_version)
