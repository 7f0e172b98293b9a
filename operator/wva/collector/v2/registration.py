"""Registration of the queries the engine needs, from the shared PromQL catalogue.

Registration is idempotent: registering the catalogue twice on the same list is harmless, while a
different template already registered under one of the names is a ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable

from wva.collector import promql
from wva.collector.v2.query import QueryList, QueryTemplate, QueryType

__all__ = [
    "AVAILABILITY_QUERIES",
    "catalogue_template",
    "register_availability_queries",
    "register_default_queries",
    "register_optimizer_queries",
    "register_saturation_queries",
]

AVAILABILITY_QUERIES: tuple[str, ...] = (
    promql.Q_METRICS_AVAILABILITY,
    promql.Q_METRICS_AVAILABILITY_ANY_NAMESPACE,
)


def catalogue_template(name: str) -> QueryTemplate:
    """The ``QueryTemplate`` for catalogue entry ``name`` (KeyError if the catalogue lacks it)."""
    text, params, description = promql.QUERY_TEMPLATES[name]
    return QueryTemplate(
        name=name, type=QueryType.PROMQL, template=text, params=params, description=description
    )


def _register_all(query_list: QueryList, names: Iterable[str]) -> None:
    for name in names:
        template = catalogue_template(name)
        existing = query_list.get(name)
        if existing is None:
            try:
                query_list.register(template)
                continue
            except ValueError:  # registered concurrently; compare below
                existing = query_list.get(name)
        if existing != template:
            raise ValueError(f"query {name!r} already registered with a different template")


def register_saturation_queries(query_list: QueryList) -> None:
    """``kv_cache_usage`` and ``queue_length``."""
    _register_all(query_list, promql.SATURATION_QUERIES)


def register_optimizer_queries(query_list: QueryList) -> None:
    """Arrival rate, average input/output tokens, TTFT and ITL."""
    _register_all(query_list, promql.OPTIMIZER_QUERIES)


def register_availability_queries(query_list: QueryList) -> None:
    """The metrics-availability check and its fallback without a namespace matcher."""
    _register_all(query_list, AVAILABILITY_QUERIES)


def register_default_queries(query_list: QueryList) -> None:
    """Every query the engine uses: saturation, optimizer and availability."""
    register_saturation_queries(query_list)
    register_optimizer_queries(query_list)
    register_availability_queries(query_list)
