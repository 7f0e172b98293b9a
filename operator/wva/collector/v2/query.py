"""Named PromQL query templates and their safe rendering.

A template holds ``{{.name}}`` placeholders (spaces inside the braces are allowed). Rendering is a
single pass over the *template*: every placeholder is replaced by its escaped value, and text that
came from a value is never scanned again, so a hostile value such as ``{{.namespace}}`` or ``"}``
can neither fill another placeholder nor close the label matcher it sits in.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from wva.collector.promql import escape_promql_value

__all__ = ["QueryList", "QueryTemplate", "QueryType", "escape_promql_value", "placeholders"]

# Anything between "{{" and "}}" is a placeholder candidate; only ``.identifier`` forms are valid.
_CANDIDATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PLACEHOLDER_BODY = re.compile(r"\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*")


class QueryType(StrEnum):
    """What a template's text means to its source."""

    METRIC_NAME = "metric"
    PROMQL = "promql"


@dataclass(frozen=True, slots=True)
class QueryTemplate:
    """A named query: ``params`` lists the parameters that must be given (and be non-empty)."""

    name: str
    type: QueryType
    template: str
    params: Sequence[str] = ()
    description: str = ""

    def __post_init__(self) -> None:
        # Lists are natural at call sites; store an immutable tuple and a real QueryType.
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "type", QueryType(self.type))


def placeholders(template: str) -> list[str]:
    """Names of the well-formed placeholders in ``template``, in order of appearance."""
    names = []
    for match in _CANDIDATE.finditer(template):
        body = _PLACEHOLDER_BODY.fullmatch(match.group(1))
        if body is not None:
            names.append(body.group(1))
    return names


class QueryList:
    """A thread-safe registry of query templates, keyed by name."""

    def __init__(self, templates: Iterable[QueryTemplate] = ()) -> None:
        self._lock = threading.Lock()
        self._templates: dict[str, QueryTemplate] = {}
        for template in templates:
            self.register(template)

    def register(self, template: QueryTemplate) -> None:
        """Add a template. ValueError for an empty name or template text, or a name already taken."""
        if not template.name:
            raise ValueError("query name is required")
        if not template.template:
            raise ValueError(f"query template is required for {template.name!r}")
        with self._lock:
            if template.name in self._templates:
                raise ValueError(f"query {template.name!r} already registered")
            self._templates[template.name] = template

    def get(self, name: str) -> QueryTemplate | None:
        with self._lock:
            return self._templates.get(name)

    def names(self) -> list[str]:
        """Registered query names, sorted."""
        with self._lock:
            return sorted(self._templates)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._templates

    def build(self, name: str, params: Mapping[str, str] | None = None) -> str:
        """Render query ``name`` with ``params``, every value escaped for a double-quoted PromQL string.

        LookupError for an unknown query; ValueError for a required parameter that is missing or
        empty, and for any placeholder of the template left without a value (or malformed), so an
        unrendered template never reaches Prometheus.
        """
        template = self.get(name)
        if template is None:
            raise LookupError(f"query {name!r} not found")
        values = dict(params or {})
        for required in template.params:
            if required not in values:
                raise ValueError(f"missing required parameter {required!r} for query {name!r}")
            if values[required] == "":
                raise ValueError(f"empty required parameter {required!r} for query {name!r}")

        def substitute(match: re.Match[str]) -> str:
            body = _PLACEHOLDER_BODY.fullmatch(match.group(1))
            if body is None:
                raise ValueError(f"malformed placeholder {match.group(0)!r} in query {name!r}")
            key = body.group(1)
            if key not in values:
                raise ValueError(f"unfilled placeholder {match.group(0)!r} in query {name!r}")
            return escape_promql_value(str(values[key]))

        return _CANDIDATE.sub(substitute, template.template)
