"""Fuzzed VariantAutoscaling objects: the pydantic model (``wva.api.v1alpha1``) and the inventory's
``parse_variant`` / ``Inventory.apply_variant``, which turn a watched VA into a record or a problem.

Properties: the model rejects only with pydantic's ValidationError, whose ``loc`` starts with the JSON
name of a field; ``parse_variant`` never raises, whatever the body, and a VA it cannot use carries a
``problem`` that names the field at fault (it becomes the ``InvalidConfiguration`` condition); applying
any body touches only that VA's entry in the inventory and its pod→VA mapping, and a body the
inventory cannot key (no name or namespace) changes nothing at all.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

import crd_tools
from fuzzing import DELETE, deep_documents, fuzz, huge_integers, json_values, mutate, scalars
from wva.api.v1alpha1 import VariantAutoscaling, variant_cost
from wva.inventory import Inventory, parse_variant

BASE: dict[str, Any] = {
    "apiVersion": "llmd.ai/v1alpha1",
    "kind": "VariantAutoscaling",
    "metadata": {"name": "v", "namespace": "ns", "generation": 3, "uid": "u-1", "resourceVersion": "7",
                 "labels": {"inference.optimization/acceleratorName": "L4"}, "annotations": {"a": "b"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
        "modelID": "meta/llama",
        "variantCost": "12.5",
        "minReplicas": 1,
        "maxReplicas": 4,
        "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": 4}]},
        "scaleToZero": {"enabled": True, "retention": "10m"},
    },
    "status": crd_tools.typical_status(applied=True),
}

#: Fields of the spec and the JSON name a rejection must carry.
SPEC_PATHS: dict[tuple[str | int, ...], str] = {
    ("spec",): "spec", ("spec", "scaleTargetRef"): "scaleTargetRef", ("spec", "scaleTargetRef", "kind"): "kind",
    ("spec", "scaleTargetRef", "name"): "name", ("spec", "scaleTargetRef", "apiVersion"): "apiVersion",
    ("spec", "modelID"): "modelID", ("spec", "variantCost"): "variantCost", ("spec", "minReplicas"): "minReplicas",
    ("spec", "maxReplicas"): "maxReplicas", ("spec", "modelProfile"): "modelProfile",
    ("spec", "modelProfile", "accelerators"): "accelerators",
    ("spec", "modelProfile", "accelerators", 0): "accelerators",
    ("spec", "modelProfile", "accelerators", 0, "acc"): "acc",
    ("spec", "modelProfile", "accelerators", 0, "accCount"): "accCount",
    ("spec", "modelProfile", "accelerators", 0, "maxBatchSize"): "maxBatchSize",
    ("spec", "scaleToZero"): "scaleToZero", ("spec", "scaleToZero", "enabled"): "enabled",
    ("spec", "scaleToZero", "retention"): "retention",
    ("metadata", "labels"): "labels", ("metadata", "labels", "inference.optimization/acceleratorName"): "accelerator",
    ("metadata", "annotations"): "annotations", ("metadata", "generation"): "generation",
    ("status", "desiredOptimizedAlloc", "numReplicas"): "numReplicas", ("status", "conditions"): "conditions",
    ("status", "conditions", 0, "lastTransitionTime"): "lastTransitionTime",
}

values = st.one_of(
    scalars(),
    json_values(max_leaves=6),
    st.sampled_from(["", "0", "-1", "1.5", "10", "9" * 400, "5m", "0s", "1e3", "Deployment", "A100", "१०"]),
    st.just(DELETE),
)
bodies = st.one_of(
    json_values(max_leaves=20),
    st.fixed_dictionaries({}, optional={"metadata": json_values(), "spec": json_values(), "status": json_values()}),
    deep_documents(),
)


def _check_record_types(record: Any) -> None:
    for text in (record.name, record.namespace, record.model_id, record.deployment_name, record.accelerator):
        assert type(text) is str
    assert all(type(k) is str and type(v) is str for k, v in record.labels.items())
    assert all(type(k) is str and type(v) is str for k, v in record.annotations.items())
    assert record.uid is None or type(record.uid) is str
    assert record.resource_version is None or type(record.resource_version) is str
    assert isinstance(record.cost, float) and math.isfinite(record.cost)
    assert record.problem is None or (type(record.problem) is str and len(record.problem) <= 2000)


def test_the_base_object_is_a_usable_va() -> None:
    record = parse_variant(BASE)
    assert record.problem is None and record.accelerator == "A100" and record.deployment_name == "d"
    assert record.cost == 12.5 and record.scale_to_zero.enabled is True


@fuzz(150)
@given(bodies)
@example({"metadata": "x"})  # was AttributeError: 'str' object has no attribute 'get'
@example({"metadata": {"name": "a", "namespace": "b"}, "spec": {"modelID": 10**5000}})  # was ValueError (str)
@example({"metadata": {"name": "a", "namespace": "b", "annotations": {"k": 10**5000}}, "spec": {}})
@example({"metadata": {"name": "a", "namespace": "b", "resourceVersion": 10**5000}, "spec": {}})
@example({"metadata": {"name": "a", "namespace": "b"}, "spec": {"minReplicas": 10**5000}})  # repr in the problem
def test_any_body_gives_a_record_and_never_raises(body: Any) -> None:
    try:
        VariantAutoscaling.model_validate(body)
    except ValidationError as exc:
        assert all(error["loc"] or error["type"] == "model_type" for error in exc.errors())
    if not hasattr(body, "get"):
        return  # kopf hands every handler a mapping
    record = parse_variant(body)
    _check_record_types(record)


@fuzz(200)
@given(path=st.sampled_from(sorted(SPEC_PATHS, key=repr)), value=values)
@example(path=("spec", "minReplicas"), value=9)  # above maxReplicas: the object-level rule names both
@example(path=("spec", "minReplicas"), value=10**4301)  # the rule's message could not print it (ValueError)
@example(path=("spec", "variantCost"), value="9" * 400)  # a decimal string too large for a float
@example(path=("spec", "scaleToZero", "retention"), value="9" * 30 + "h")
@example(path=("metadata", "labels", "inference.optimization/acceleratorName"), value="")
def test_a_va_that_cannot_be_used_names_the_field(path: tuple[str | int, ...], value: Any) -> None:
    body = mutate(BASE, path, value)
    if path[:4] == ("spec", "modelProfile", "accelerators", 0) or path[:2] == ("spec", "modelProfile"):
        body["metadata"]["labels"].pop("inference.optimization/acceleratorName", None)  # the profile decides
    record = parse_variant(body)
    _check_record_types(record)
    assert (record.namespace, record.name) == ("ns", "v")
    if record.problem is not None:
        assert SPEC_PATHS[path] in record.problem, (path, record.problem)
    else:
        va = VariantAutoscaling.model_validate(body)
        assert record.model_id == va.spec.model_id and record.deployment_name == va.spec.scale_target_ref.name
        assert record.min_replicas == va.spec.min_replicas and record.max_replicas == va.spec.max_replicas
        assert record.cost == variant_cost(va) and record.accelerator


def _state(inv: Inventory) -> tuple[dict[Any, Any], dict[str, int], dict[Any, Any]]:
    mapping = {key: inv.mapper.deployment_for_va(key[1], key[0]) for key in (("ns", n) for n in "abc")}
    return inv.snapshot("variants"), inv.sizes(), mapping


def _named(name: str, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body["metadata"]["name"] = name
    return body


operations = st.lists(
    st.tuples(
        st.sampled_from("abc"),
        st.one_of(
            st.builds(lambda p, v: mutate(BASE, p, v), st.sampled_from(sorted(SPEC_PATHS, key=repr)), values),
            st.just(BASE),
            bodies.filter(lambda body: isinstance(body, dict)),  # kopf hands the handler a mapping
            st.builds(lambda v: mutate(BASE, ("metadata", "name"), v), st.one_of(scalars(), huge_integers())),
            st.builds(lambda v: mutate(BASE, ("metadata",), v), json_values()),
        ),
    ),
    max_size=8,
)


@fuzz(100)
@given(operations, st.sampled_from(["", "team-a"]))
def test_applying_any_body_touches_only_that_va(ops: list[tuple[str, Any]], instance: str) -> None:
    inv = Inventory(controller_instance=instance)
    for name, template in ops:
        body = _named(name, copy.deepcopy(template))
        key = _key_of(body)
        before, sizes, mapping = _state(inv)
        record = inv.apply_variant(body)
        after, sizes_after, mapping_after = _state(inv)
        others = [k for k in set(before) | set(after) if k != key]
        assert all(after.get(k) is before.get(k) for k in others)  # no other VA touched
        assert all(mapping_after[k] == mapping[k] for k in mapping if k != key)
        if key is None:  # the inventory cannot key it: nothing at all changes
            assert record is None and after == before and sizes_after == sizes
            continue
        if record is None:  # labelled for another controller instance: forgotten
            assert key not in after and (key not in mapping or mapping_after[key] is None)
            continue
        _check_record_types(record)
        assert record.key == key and after[key] is record
        if key in mapping:
            assert mapping_after[key] == (record.deployment_name or None)


def _key_of(body: Any) -> tuple[str, str] | None:
    meta = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace")
    if type(name) is str and type(namespace) is str and name and namespace:
        return (namespace, name)
    return None
