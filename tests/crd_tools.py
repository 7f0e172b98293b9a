"""Validate custom resources against wva's CRD without a cluster.

API (kept small; chart and kustomize tests reuse it):

- ``load_crd(path=None) -> dict``: the CRD manifest (default: ``crds/llmd.ai_variantautoscalings.yaml``).
- ``crd_schema(crd=None) -> dict``: the served version's ``openAPIV3Schema``, strictified for jsonschema.
- ``validate_cr(obj, schema=None) -> list[str]``: every schema violation as ``"<dotted.path>: <message>"``,
  sorted; empty when the object is valid.

Why "strictify": jsonschema reads an OpenAPI v3 structural schema almost as the API server does,
but (1) it accepts unknown fields, which the API server prunes (silently losing a typo'd field),
(2) it does not know ``nullable``, and (3) it never checks ``metadata``, which the API server
validates itself. The strict copy forbids unknown fields wherever ``properties`` are declared
(unless ``x-kubernetes-preserve-unknown-fields``), turns ``nullable: true`` into a ``null`` type,
and gives ``metadata`` the small schema of names, labels and annotations.

The validator also behaves like the API server where plain jsonschema does not: ``pattern`` is
matched as Go's RE2 would (``\\d`` ASCII-only, ``$`` only at the end of the text), ``date-time``
is checked as RFC 3339, and ``x-kubernetes-list-type: map``/``set`` reject duplicate keys/items.
CEL rules (``x-kubernetes-validations``) and defaults are not applied.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = REPO_ROOT / "crds" / "llmd.ai_variantautoscalings.yaml"

ROOT_PATH = "(root)"

# What the API server checks in metadata of any object, as far as manifests in this repo need it.
_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value.upper())  # out-of-range fields raise ValueError
    return True


_FORMAT_CHECKER.checks("date-time", raises=ValueError)(_is_date_time)


@lru_cache(maxsize=256)
def _go_regex(pattern: str) -> re.Pattern[str]:
    # Outside a character class, an unescaped "$" of RE2 (without the m flag) is Python's "\Z".
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            out.append(char)
            escaped = True
        elif char == "[":
            in_class = True
            out.append(char)
        elif char == "]":
            in_class = False
            out.append(char)
        elif char == "$" and not in_class:
            out.append(r"\Z")
        else:
            out.append(char)
    return re.compile("".join(out), re.ASCII)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and not _go_regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _list_type(
    validator: Any, list_type: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        items = [repr([item.get(key) for key in keys]) if isinstance(item, dict) else None for item in instance]
    elif list_type == "set":
        items = [repr(item) for item in instance]
    else:
        return
    seen: set[str | None] = set()
    for index, item in enumerate(items):
        if item is not None and item in seen:
            yield jsonschema.ValidationError(f"Duplicate value: {instance[index]!r}", path=[index])
        seen.add(item)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    {"pattern": _pattern, "x-kubernetes-list-type": _list_type},
)


def load_crd(path: str | Path | None = None) -> dict[str, Any]:
    """The CRD manifest at ``path`` (default: the VariantAutoscaling CRD), as a dict."""
    with open(path or CRD_PATH, encoding="utf-8") as fh:
        crd = yaml.safe_load(fh)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path or CRD_PATH} is not a CustomResourceDefinition manifest")
    return crd


def served_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The unmodified ``openAPIV3Schema`` of the storage version."""
    for version in crd["spec"]["versions"]:
        if version.get("storage"):
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise ValueError("CRD has no storage version")


def strictify(schema: dict[str, Any]) -> dict[str, Any]:
    """A strict copy of an OpenAPI v3 structural schema (see the module docstring)."""
    strict = _strictify_node(copy.deepcopy(schema))
    props = strict.get("properties", {})
    if "metadata" in props:
        props["metadata"] = copy.deepcopy(_METADATA_SCHEMA)
    # Only forbid unknown root fields when apiVersion/kind/metadata are declared.
    if not {"apiVersion", "kind", "metadata"} <= set(props):
        strict.pop("additionalProperties", None)
    return strict


def _strictify_node(node: dict[str, Any]) -> dict[str, Any]:
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    for key in ("properties", "patternProperties"):
        for child in node.get(key, {}).values():
            _strictify_node(child)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _strictify_node(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for child in node.get(key, []):
            _strictify_node(child)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


@lru_cache(maxsize=8)
def _cached_schema(path: str) -> dict[str, Any]:
    return strictify(served_schema(load_crd(path)))


def crd_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    """The strictified schema of ``crd`` (default: the VariantAutoscaling CRD). Returns a copy."""
    if crd is None:
        return copy.deepcopy(_cached_schema(str(CRD_PATH)))
    return strictify(served_schema(crd))


def dotted_path(parts: Iterable[str | int]) -> str:
    """``["spec", "a", 0, "b"]`` -> ``"spec.a[0].b"``; the empty path is ``(root)``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or ROOT_PATH


def _messages(error: jsonschema.ValidationError) -> list[str]:
    base = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return [f"{dotted_path([*base, name])}: Required value" for name in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(name for name in error.instance if name not in known)
        return [f"{dotted_path([*base, name])}: unknown field" for name in extra]
    return [f"{dotted_path(base)}: {error.message}"]


def _as_json(value: Any) -> Any:
    """YAML timestamps become strings, as kubectl sends them."""
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value


def validate_cr(obj: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Schema violations of ``obj`` as ``"<dotted.path>: <message>"``, sorted; [] when valid.

    ``schema`` defaults to the strictified VariantAutoscaling schema. YAML timestamps in ``obj``
    are checked as the RFC 3339 strings kubectl would send.
    """
    validator = _Validator(
        schema if schema is not None else _cached_schema(str(CRD_PATH)),
        format_checker=_FORMAT_CHECKER,
    )
    messages: set[str] = set()
    for error in validator.iter_errors(_as_json(obj)):
        messages.update(_messages(error))
    return sorted(messages)


def typical_status(applied: bool = True) -> dict[str, Any]:
    """A VA status with every field set, shaped as the operator writes it after a few cycles."""
    return {
        "currentAlloc": {
            "accelerator": "A100",
            "numReplicas": 2,
            "maxBatch": 256,
            "itlAverage": "10.12",
            "ttftAverage": "151.30",
            "load": {"arrivalRate": "240.00", "avgInputTokens": "128.00", "avgOutputTokens": "128.00"},
        },
        "desiredOptimizedAlloc": {"accelerator": "A100", "numReplicas": 3, "lastRunTime": "2026-01-08T19:40:00Z"},
        "actuation": {"applied": applied},
        "conditions": [
            {
                "type": "TargetResolved",
                "status": "True",
                "reason": "TargetFound",
                "message": "Scale target Deployment d found",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-01-08T19:35:30Z",
            }
        ],
    }
