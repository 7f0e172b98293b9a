"""The pydantic models of VariantAutoscaling, their helpers, and their agreement with the CRD."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import crd_tools
from wva.api import v1alpha1 as api
from wva.collector.types import AvailabilityReason

T0 = datetime(2026, 1, 8, 19, 35, 30, tzinfo=UTC)


def _va_obj() -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": "v",
            "namespace": "ns",
            "generation": 3,
            "labels": {"inference.optimization/acceleratorName": "L4"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "modelID": "m",
            "variantCost": "12.5",
            "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": 4}]},
        },
        "status": crd_tools.typical_status(applied=True),
    }


def _va(**spec_changes: Any) -> api.VariantAutoscaling:
    obj = _va_obj()
    obj["spec"].update(spec_changes)
    return api.VariantAutoscaling.model_validate(obj)


def _is_subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _is_subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(map(_is_subset, small, big))
    return bool(small == big)


def _locs(exc: ValidationError) -> list[tuple[int | str, ...]]:
    return [tuple(error["loc"]) for error in exc.errors()]


# --- constants ---------------------------------------------------------------------------------


def test_identity_constants_match_the_crd() -> None:
    crd = crd_tools.load_crd()
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], crd["spec"]["versions"][0]["name"]) == (api.GROUP, api.VERSION)
    assert (
        names["plural"],
        names["singular"],
        names["kind"],
        names["listKind"],
    ) == (api.PLURAL, api.SINGULAR, api.KIND, api.LIST_KIND)
    assert names["shortNames"] == [api.SHORT_NAME]
    assert crd["metadata"]["name"] == api.CRD_NAME
    assert api.API_VERSION == "llmd.ai/v1alpha1"
    assert api.ACCELERATOR_LABEL == "inference.optimization/acceleratorName"
    assert api.CONTROLLER_INSTANCE_LABEL == "wva.llmd.ai/controller-instance"
    assert api.DEFAULT_VARIANT_COST_STR == "10.0"


def test_condition_constants() -> None:
    assert [t.value for t in api.ConditionType] == ["TargetResolved", "MetricsAvailable", "OptimizationReady"]
    assert {r.value for r in api.TargetResolvedReason} == {"TargetFound", "TargetNotFound"}
    assert {r.value for r in api.MetricsAvailableReason} == {r.value for r in AvailabilityReason}
    assert {r.value for r in api.OptimizationReadyReason} == {
        "OptimizationSucceeded",
        "OptimizationFailed",
        "MetricsUnavailable",
        "InvalidConfiguration",
        "SkippedProcessing",
        "SaturationSafetyOverride",
        "SaturationOnlyMode",
    }
    assert api.REASON_INVALID_CONFIGURATION == "InvalidConfiguration"
    assert api.CONDITION_METRICS_AVAILABLE == "MetricsAvailable"


def test_condition_constants_satisfy_the_crd_patterns() -> None:
    crd_conditions = crd_tools.served_schema(crd_tools.load_crd())["properties"]["status"]["properties"]["conditions"][
        "items"
    ]["properties"]
    reasons = [*api.TargetResolvedReason, *api.MetricsAvailableReason, *api.OptimizationReadyReason]
    for reason in reasons:
        api.Condition(type="X", status="True", reason=reason, message="", last_transition_time=T0)
    for ctype in api.ConditionType:
        api.Condition(type=ctype, status="False", reason="R", message="", last_transition_time=T0)
    assert crd_conditions["status"]["enum"] == [s.value for s in api.ConditionStatus]


# --- parsing and dumping -----------------------------------------------------------------------


def test_parse_full_object() -> None:
    va = api.VariantAutoscaling.model_validate(_va_obj())
    assert va.name == "v" and va.namespace == "ns" and va.metadata.generation == 3
    assert va.spec.scale_target_ref.name == "d"
    assert va.spec.model_profile is not None and va.spec.model_profile.accelerators[0].max_batch_size == 4
    assert va.spec.min_replicas == 1 and va.spec.max_replicas is None
    assert va.status.current_alloc is not None and va.status.current_alloc.load.arrival_rate == "240.00"
    assert va.status.desired_optimized_alloc is not None
    assert va.status.desired_optimized_alloc.last_run_time == datetime(2026, 1, 8, 19, 40, tzinfo=UTC)
    assert va.status.actuation == api.ActuationStatus(applied=True)
    assert va.status.conditions[0].status is api.ConditionStatus.TRUE
    assert va.metadata.model_extra == {"managedFields": [{"manager": "kubectl"}]}


def test_dump_round_trips_and_keeps_every_input_field() -> None:
    obj = _va_obj()
    va = api.VariantAutoscaling.model_validate(obj)
    dumped = va.dump()
    assert _is_subset(obj, dumped)
    assert api.VariantAutoscaling.model_validate(dumped) == va
    assert va.to_dict() == dumped
    assert crd_tools.validate_cr({**dumped, "metadata": {"name": "v"}}) == []


def test_dump_is_camel_case_without_none() -> None:
    spec = api.VariantAutoscalingSpec(
        scale_target_ref=api.CrossVersionObjectReference(kind="Deployment", name="d"),
        model_id="m",
    )
    assert spec.dump() == {
        "scaleTargetRef": {"kind": "Deployment", "name": "d"},
        "modelID": "m",
        "variantCost": "10.0",
        "minReplicas": 1,
    }
    va = api.VariantAutoscaling(metadata=api.ObjectMeta(name="x", namespace="y"), spec=spec)
    dumped = va.dump()
    assert dumped["apiVersion"] == "llmd.ai/v1alpha1" and dumped["kind"] == "VariantAutoscaling"
    assert dumped["status"] == {"conditions": []}
    assert "generation" not in dumped["metadata"]


def test_times_serialise_as_rfc3339_utc_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    alloc = api.OptimizedAlloc(
        accelerator="A100", num_replicas=1, last_run_time=datetime(2026, 1, 8, 21, 40, 5, 123456, tzinfo=plus_two)
    )
    assert alloc.dump()["lastRunTime"] == "2026-01-08T19:40:05Z"
    naive = api.OptimizedAlloc(accelerator="A100", num_replicas=1, last_run_time=datetime(2026, 1, 8, 19, 40))
    assert naive.dump()["lastRunTime"] == "2026-01-08T19:40:00Z"
    parsed = api.OptimizedAlloc.model_validate(
        {"accelerator": "A100", "numReplicas": 1, "lastRunTime": "2026-01-08T21:40:00.5+02:00"}
    )
    assert parsed.last_run_time == datetime(2026, 1, 8, 19, 40, 0, tzinfo=UTC)  # whole seconds, like metav1.Time
    assert api.format_time(parsed.last_run_time) == "2026-01-08T19:40:00Z"
    assert api.OptimizedAlloc.model_validate(alloc.dump()) == alloc, "a dump/re-read round trip is lossless"


@pytest.mark.parametrize("bad", ["2026-01-08", "2026-01-08T19:40:00", 1767900000, "20260108T194000Z", "soon"])
def test_times_must_be_rfc3339(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        api.OptimizedAlloc.model_validate({"accelerator": "A100", "numReplicas": 1, "lastRunTime": bad})
    assert _locs(info.value) == [("lastRunTime",)]


# --- validation mirrors the CRD ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda o: o["spec"].update(modelID=""), ("spec", "modelID")),
        (lambda o: o["spec"].pop("modelID"), ("spec", "modelID")),
        (lambda o: o["spec"].update(variantCost=80), ("spec", "variantCost")),
        (lambda o: o["spec"].update(variantCost="8O"), ("spec", "variantCost")),
        (lambda o: o["spec"].update(variantCost="10.0\n"), ("spec", "variantCost")),
        (lambda o: o["spec"].update(variantCost="\u0663"), ("spec", "variantCost")),  # Arabic-Indic 3
        (
            lambda o: o["spec"]["modelProfile"]["accelerators"][0].update(accCount=0),
            ("spec", "modelProfile", "accelerators", 0, "accCount"),
        ),
        (
            lambda o: o["spec"]["modelProfile"]["accelerators"][0].update(maxBatchSize="4"),
            ("spec", "modelProfile", "accelerators", 0, "maxBatchSize"),
        ),
        (lambda o: o["spec"]["modelProfile"].update(accelerators=[]), ("spec", "modelProfile", "accelerators")),
        (lambda o: o["spec"]["scaleTargetRef"].pop("name"), ("spec", "scaleTargetRef", "name")),
        (lambda o: o["spec"].update(minReplicas=-1), ("spec", "minReplicas")),
        (lambda o: o["spec"].update(maxReplicas=0), ("spec", "maxReplicas")),
        (lambda o: o["spec"].update(maxReplicas=True), ("spec", "maxReplicas")),
        (lambda o: o.pop("spec"), ("spec",)),
        (lambda o: o["status"]["currentAlloc"].update(accelerator=""), ("status", "currentAlloc", "accelerator")),
        (lambda o: o["status"]["currentAlloc"].pop("load"), ("status", "currentAlloc", "load")),
        (
            lambda o: o["status"]["desiredOptimizedAlloc"].update(accelerator="A"),
            ("status", "desiredOptimizedAlloc", "accelerator"),
        ),
        (lambda o: o["status"]["actuation"].update(applied="true"), ("status", "actuation", "applied")),
        (lambda o: o["status"]["conditions"][0].update(status="Maybe"), ("status", "conditions", 0, "status")),
        (
            lambda o: o["status"]["conditions"][0].update(reason="Not found"),
            ("status", "conditions", 0, "reason"),
        ),
    ],
)
def test_invalid_object_fails_with_loc_naming_the_field(mutate: Any, loc: tuple[Any, ...]) -> None:
    obj = _va_obj()
    mutate(obj)
    assert crd_tools.validate_cr(obj) != [], "the CRD must reject it too"
    with pytest.raises(ValidationError) as info:
        api.VariantAutoscaling.model_validate(obj)
    assert _locs(info.value) == [loc]


def test_min_greater_than_max_is_rejected() -> None:
    # The CRD enforces this with a CEL rule, which jsonschema does not run; the model enforces it itself.
    with pytest.raises(ValidationError) as info:
        _va(minReplicas=3, maxReplicas=2)
    assert _locs(info.value) == [("spec",)]
    assert "minReplicas must be less than or equal to maxReplicas" in str(info.value)
    assert _va(minReplicas=2, maxReplicas=2).spec.max_replicas == 2
    assert _va(minReplicas=0).spec.min_replicas == 0


def test_duplicate_condition_types_are_rejected() -> None:
    obj = _va_obj()
    obj["status"]["conditions"].append(dict(obj["status"]["conditions"][0], status="False"))
    with pytest.raises(ValidationError) as info:
        api.VariantAutoscaling.model_validate(obj)
    assert _locs(info.value) == [("status", "conditions")]


def test_unknown_fields_are_pruned_like_the_api_server_does() -> None:
    obj = _va_obj()
    obj["spec"]["modelName"] = "legacy"
    va = api.VariantAutoscaling.model_validate(obj)
    assert "modelName" not in va.dump()["spec"]


# --- helpers -----------------------------------------------------------------------------------


def test_accelerator_name_prefers_the_profile_then_the_label() -> None:
    assert api.accelerator_name(_va()) == "A100"
    assert api.accelerator_name(_va(modelProfile=None)) == "L4"
    obj = _va_obj()
    del obj["spec"]["modelProfile"]
    obj["metadata"]["labels"] = {}
    assert api.accelerator_name(api.VariantAutoscaling.model_validate(obj)) == ""


def test_variant_cost() -> None:
    assert api.variant_cost(_va()) == 12.5
    obj = _va_obj()
    del obj["spec"]["variantCost"]
    assert api.variant_cost(api.VariantAutoscaling.model_validate(obj)) == 10.0
    assert api.variant_cost(_va(variantCost="80")) == 80.0


def test_variant_cost_names_a_bad_value() -> None:
    va = _va()
    broken = va.model_copy(update={"spec": va.spec.model_copy(update={"variant_cost": "cheap"})})
    with pytest.raises(ValueError, match="'cheap'"):
        api.variant_cost(broken)


def _cond(ctype: str, status: str, reason: str, when: datetime, generation: int | None = 1) -> api.Condition:
    return api.Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=f"{reason}!",
        last_transition_time=when,
        observed_generation=generation,
    )


def test_set_condition_appends_a_new_condition() -> None:
    existing = [_cond("TargetResolved", "True", "TargetFound", T0)]
    later = T0 + timedelta(minutes=5)
    result = api.set_condition(existing, "MetricsAvailable", False, "PrometheusError", "down", 4, later)
    assert [c.type for c in result] == ["TargetResolved", "MetricsAvailable"]
    added = result[1]
    assert (added.status, added.reason, added.message) == ("False", "PrometheusError", "down")
    assert added.observed_generation == 4 and added.last_transition_time == later
    assert result[0] == existing[0]
    assert len(existing) == 1, "input list must not change"


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    existing = [
        _cond("TargetResolved", "True", "TargetFound", T0),
        _cond("MetricsAvailable", "False", "MetricsMissing", T0),
        _cond("OptimizationReady", "True", "OptimizationSucceeded", T0),
    ]
    later = T0 + timedelta(minutes=1)
    result = api.set_condition(existing, "MetricsAvailable", "False", "MetricsStale", "old data", 7, later)
    assert [c.type for c in result] == ["TargetResolved", "MetricsAvailable", "OptimizationReady"]
    updated = result[1]
    assert updated.last_transition_time == T0
    assert (updated.reason, updated.message, updated.observed_generation) == ("MetricsStale", "old data", 7)
    assert result[0] is existing[0] and result[2] is existing[2]
    assert existing[1].reason == "MetricsMissing", "input conditions must not change"


def test_set_condition_moves_transition_time_when_status_flips() -> None:
    existing = [_cond("TargetResolved", "False", "TargetNotFound", T0)]
    later = T0 + timedelta(seconds=30)
    result = api.set_condition(
        existing, api.CONDITION_TARGET_RESOLVED, api.ConditionStatus.TRUE, api.REASON_TARGET_FOUND, "found", None, later
    )
    assert result[0].status == "True" and result[0].last_transition_time == later
    assert result[0].observed_generation is None


def test_set_condition_rejects_invalid_values() -> None:
    with pytest.raises(ValidationError):
        api.set_condition([], "TargetResolved", "True", "has spaces", "", 1, T0)
    with pytest.raises(ValueError):
        api.set_condition([], "TargetResolved", "Yes", "TargetFound", "", 1, T0)


def test_get_condition() -> None:
    conditions = [_cond("TargetResolved", "True", "TargetFound", T0), _cond("MetricsAvailable", "True", "M", T0)]
    found = api.get_condition(conditions, "MetricsAvailable")
    assert found is conditions[1]
    assert api.get_condition(conditions, "OptimizationReady") is None
    assert api.get_condition([], "TargetResolved") is None


_types = st.sampled_from([t.value for t in api.ConditionType])
_statuses = st.sampled_from(["True", "False", "Unknown"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_types, _statuses, st.integers(0, 5)), max_size=25))
def test_set_condition_sequences(ops: list[tuple[str, str, int]]) -> None:
    """After any sequence: one condition per type, first-set order, transition time = last flip."""
    conditions: list[api.Condition] = []
    expected_order: list[str] = []
    last_status: dict[str, str] = {}
    last_flip: dict[str, datetime] = {}
    for step, (ctype, status, generation) in enumerate(ops):
        now = T0 + timedelta(seconds=step)
        conditions = api.set_condition(conditions, ctype, status, "R", f"step {step}", generation, now)
        if ctype not in expected_order:
            expected_order.append(ctype)
        if last_status.get(ctype) != status:
            last_flip[ctype] = now
        last_status[ctype] = status
        current = api.get_condition(conditions, ctype)
        assert current is not None
        assert (current.message, current.observed_generation) == (f"step {step}", generation)
    assert [c.type for c in conditions] == expected_order
    for condition in conditions:
        assert condition.status == last_status[condition.type]
        assert condition.last_transition_time == last_flip[condition.type]
    api.VariantAutoscalingStatus(conditions=conditions)  # still a valid list-map


# --- the model and the CRD describe the same resource ------------------------------------------

# Keywords that constrain values; both sides must carry the same ones with the same values.
_CONSTRAINTS = ("type", "minLength", "maxLength", "minimum", "maximum", "pattern", "minItems", "maxItems", "enum")
# CRD-only storage hints with no JSON-schema counterpart in pydantic.
_STORAGE_FORMATS = {"int32", "int64"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline $ref and drop the ``null`` branch pydantic adds for optional fields."""
    while True:
        if "$ref" in node:
            merged = dict(defs[node["$ref"].rsplit("/", 1)[1]])
            merged.update({k: v for k, v in node.items() if k != "$ref"})
            node = merged
            continue
        branches = [b for b in node.get("anyOf", []) if b != {"type": "null"}]
        if "anyOf" in node and len(branches) == 1:
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged.update(branches[0])
            node = merged
            continue
        return node


def _compare(crd: dict[str, Any], model: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    model = _resolve(model, defs)
    problems: list[str] = []
    for key in _CONSTRAINTS:
        if crd.get(key) != model.get(key):
            problems.append(f"{path}: {key} differs: CRD {crd.get(key)!r} vs model {model.get(key)!r}")
    crd_format = crd.get("format") if crd.get("format") not in _STORAGE_FORMATS else None
    if crd_format != model.get("format"):
        problems.append(f"{path}: format differs: CRD {crd_format!r} vs model {model.get('format')!r}")
    if "default" in crd and crd["default"] != model.get("default"):
        problems.append(f"{path}: default differs: CRD {crd['default']!r} vs model {model.get('default')!r}")
    if crd.get("type") == "object" and "properties" in crd:
        crd_props, model_props = crd["properties"], model.get("properties", {})
        for name in sorted(set(crd_props) ^ set(model_props)):
            side = "CRD" if name in crd_props else "model"
            problems.append(f"{path}.{name}: only in the {side}")
        crd_required, model_required = set(crd.get("required", [])), set(model.get("required", []))
        if crd_required != model_required:
            problems.append(f"{path}: required differs: CRD {sorted(crd_required)} vs model {sorted(model_required)}")
        for name in sorted(set(crd_props) & set(model_props)):
            problems += _compare(crd_props[name], model_props[name], defs, f"{path}.{name}")
    if crd.get("type") == "array":
        problems += _compare(crd["items"], model.get("items", {}), defs, f"{path}[]")
    return problems


def test_model_and_crd_schema_agree() -> None:
    model_schema = api.VariantAutoscaling.model_json_schema(by_alias=True)
    crd_schema = crd_tools.served_schema(crd_tools.load_crd())
    assert _compare(crd_schema, model_schema, model_schema.get("$defs", {}), "(root)") == []


def test_schema_comparison_detects_drift() -> None:
    # The comparison above can fail: drop a field, loosen a constraint, change a required set.
    model_schema = api.VariantAutoscaling.model_json_schema(by_alias=True)
    crd = copy.deepcopy(crd_tools.served_schema(crd_tools.load_crd()))
    spec = crd["properties"]["spec"]
    del spec["properties"]["maxReplicas"]
    spec["properties"]["modelID"]["minLength"] = 2
    spec["required"].remove("scaleTargetRef")
    crd["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["extra"] = {"type": "string"}
    problems = _compare(crd, model_schema, model_schema.get("$defs", {}), "(root)")
    assert problems == [
        "(root).spec.maxReplicas: only in the model",
        "(root).spec: required differs: CRD ['modelID'] vs model ['modelID', 'scaleTargetRef']",
        "(root).spec.modelID: minLength differs: CRD 2 vs model 1",
        "(root).status.conditions[].extra: only in the CRD",
    ]


def _leaf_paths(node: dict[str, Any], obj: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every scalar field the CRD declares whose parent exists in ``obj`` (first list item only)."""
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    if node.get("type") == "object" and isinstance(obj, dict):
        for name, child in node.get("properties", {}).items():
            child_path = (*path, name)
            if child.get("type") in ("object", "array"):
                out += _leaf_paths(child, obj.get(name), child_path)
            else:
                out.append((child_path, child))
    elif node.get("type") == "array" and isinstance(obj, list) and obj:
        out += _leaf_paths(node["items"], obj[0], (*path, 0))
    return out


_BASE = _va_obj()
_LEAVES = _leaf_paths(crd_tools.served_schema(crd_tools.load_crd()), _BASE, ())

# Values chosen to sit on either side of every constraint the CRD declares.
_EDGE_VALUES: list[Any] = [
    "",
    "A",
    "AB",
    "10",
    "10.0",
    "10.",
    ".5",
    "-1",
    "1e3",
    "10.0\n",
    "\u0663",
    "True",
    "true",
    "Unknown",
    "TargetFound",
    "Not found",
    "a:b",
    "example.com/Ready",
    "2026-01-08T19:40:00Z",
    "2026-01-08T19:40:00.25+02:00",
    "2026-01-08",
    "2026-01-08T19:40:00",
    "2026-13-08T19:40:00Z",
    "x" * 316,
    "x" * 317,
    "y" * 1025,
    "z" * 32769,
    -1,
    0,
    1,
    2,
    2**40,
    True,
    False,
    1.5,
    -0.5,
    [],
    {},
    [1],
    {"a": 1},
    ...,  # delete the field
]


def _mutated(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_BASE)
    node: Any = obj
    for part in path[:-1]:
        node = node[part]
    if value is ...:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return obj


def _model_accepts(obj: dict[str, Any]) -> bool:
    try:
        api.VariantAutoscaling.model_validate(obj)
    except ValidationError:
        return False
    return True


def _disagreements(
    path: tuple[Any, ...], values: list[Any], accepts: Callable[[dict[str, Any]], bool] = _model_accepts
) -> list[str]:
    out = []
    for value in values:
        obj = _mutated(path, value)
        crd_errors = crd_tools.validate_cr(obj)
        if accepts(obj) != (crd_errors == []):
            out.append(f"{'.'.join(map(str, path))} = {value!r}: CRD says {crd_errors or 'valid'}")
    return out


@pytest.mark.parametrize("path", [p for p, _ in _LEAVES], ids=lambda p: ".".join(map(str, p)))
def test_model_and_crd_accept_and_reject_the_same_edge_values(path: tuple[Any, ...]) -> None:
    assert _disagreements(path, _EDGE_VALUES) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([p for p, _ in _LEAVES]),
    st.one_of(
        st.text(max_size=12),
        st.integers(),
        # Whole floats (3.0) are left out: whether the API server takes them as integers depends on encoding.
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    ),
)
def test_model_and_crd_accept_and_reject_the_same_random_values(path: tuple[Any, ...], value: Any) -> None:
    assert _disagreements(path, [value]) == []


def test_agreement_check_can_fail() -> None:
    # A model accepting everything, or nothing, disagrees with the CRD somewhere on the edge values.
    path = ("spec", "modelProfile", "accelerators", 0, "accCount")
    assert _disagreements(path, _EDGE_VALUES, accepts=lambda obj: True) == [
        f"{'.'.join(map(str, path))} = {v!r}: CRD says {crd_tools.validate_cr(_mutated(path, v))}"
        for v in _EDGE_VALUES
        if crd_tools.validate_cr(_mutated(path, v))
    ]
    assert "spec.modelID = 'A': CRD says valid" in _disagreements(("spec", "modelID"), ["A"], accepts=lambda obj: False)


def test_leaf_walk_covers_spec_and_status() -> None:
    paths = {".".join(map(str, p)) for p, _ in _LEAVES}
    assert {
        "spec.modelID",
        "spec.variantCost",
        "spec.modelProfile.accelerators.0.accCount",
        "status.desiredOptimizedAlloc.lastRunTime",
        "status.actuation.applied",
        "status.conditions.0.reason",
        "status.currentAlloc.load.arrivalRate",
    } <= paths
