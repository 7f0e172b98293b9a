"""Pure helpers of collector v1: query rendering with escaped values, result parsing, cache keys.

Nothing here does I/O. Query text comes from :mod:`wva.collector.promql` (upstream's templates); every
value substituted into it is escaped (upstream escaped only the saturation queries).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wva.collector import promql as catalogue
from wva.collector.promql import escape_promql_value

# --- query rendering ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def render(query_name: str, **params: str) -> str:
    """Fill a template of :data:`wva.collector.promql.QUERY_TEMPLATES` with escaped ``params``.

    Raises KeyError for an unknown query name and ValueError for a missing parameter.
    """
    template = catalogue.QUERY_TEMPLATES[query_name][0]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise ValueError(f"missing required parameter {name!r} for query {query_name!r}")
        return escape_promql_value(params[name])

    return _PLACEHOLDER.sub(substitute, template)


def render_model_query(query_name: str, model_id: str, namespace: str) -> str:
    return render(query_name, **{catalogue.PARAM_MODEL_ID: model_id, catalogue.PARAM_NAMESPACE: namespace})


_RE2_META = frozenset("\\.+*?()|[]{}^$")


def escape_regex(text: str) -> str:
    """Escape RE2 metacharacters so ``text`` matches literally inside a PromQL ``=~`` matcher."""
    return "".join("\\" + ch if ch in _RE2_META else ch for ch in text)


def pod_existence_query(namespace: str, deployment_names: Iterable[str]) -> str:
    """``kube_pod_info`` restricted to pods named ``<deployment>-...`` (all pods if no deployments).

    Names are regex-escaped (a ``.`` is literal) and then quote-escaped; alternatives are sorted so
    the text is deterministic.
    """
    ns = escape_promql_value(namespace)
    names = sorted(set(deployment_names))
    if not names:
        return f'{catalogue.KUBE_POD_INFO}{{namespace="{ns}"}}'
    pattern = "|".join(f"{escape_regex(name)}-.*" for name in names)
    return f'{catalogue.KUBE_POD_INFO}{{namespace="{ns}",pod=~"{escape_promql_value(pattern)}"}}'


# --- result parsing -------------------------------------------------------------------------------


def fix_value(value: float) -> float:
    """NaN, +Inf and -Inf become 0; every other number passes through."""
    return 0.0 if math.isnan(value) or math.isinf(value) else value


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant-vector result."""

    labels: Mapping[str, str]
    timestamp: float
    value: float


def is_vector(result: Any) -> bool:
    """True for an instant-vector payload (a list of ``{"metric": ..., "value": [ts, "v"]}``).

    ``custom_query`` hides the result type: a scalar arrives as ``[ts, "v"]``, a matrix as dicts with
    ``values``. Both count as "not a vector" (upstream treats those as no data).
    """
    if not isinstance(result, list):
        return False
    return all(isinstance(item, Mapping) and "value" in item for item in result)


def text_labels(labels: object) -> dict[str, str] | None:
    """A sample's labels with keys and values as text; None unless it is a mapping of strings or scalars.

    Prometheus sends strings only; a list, a mapping or a number too long for ``str`` (over 4300
    digits) as a label value makes the sample unattributable instead of raising.
    """
    if not isinstance(labels, Mapping):
        return None
    result: dict[str, str] = {}
    try:
        for key, value in labels.items():
            if type(value) is not str:
                if value is not None and not isinstance(value, bool | int | float):
                    return None
                value = str(value)
            result[key if type(key) is str else str(key)] = value
    except ValueError:
        return None
    return result


def samples(result: Any) -> Iterator[Sample]:
    """The well-formed samples of a vector payload, values with NaN/Inf turned into 0.

    Anything else in the payload (a malformed pair, a number beyond the float range, labels that are
    not text) is skipped, never raised.
    """
    if not is_vector(result):
        return
    for item in result:
        raw = item.get("value")
        labels = text_labels(item.get("metric") or {})
        if not isinstance(raw, (list, tuple)) or len(raw) != 2 or labels is None:
            continue
        try:
            timestamp = float(raw[0])
            value = float(raw[1])
        except (TypeError, ValueError, OverflowError):
            continue
        yield Sample(labels, timestamp, fix_value(value))


def first_value(result: Any) -> float:
    """Value of the first sample of a vector; 0 for an empty or non-vector result (upstream)."""
    for sample in samples(result):
        return sample.value
    return 0.0


def pod_of(labels: Mapping[str, str]) -> str:
    """The pod a sample belongs to: label ``pod``, else ``pod_name``, else ""."""
    return labels.get(catalogue.LABEL_POD) or labels.get(catalogue.LABEL_POD_FALLBACK) or ""


# --- cache keys -----------------------------------------------------------------------------------


def _key_part(text: str) -> str:
    # Model IDs usually contain "/" (org/model); encoding it keeps prefix invalidation unambiguous.
    # IDs without "%" or "/" are unchanged, so keys look exactly like upstream's.
    return text.replace("%", "%25").replace("/", "%2F")


def allocation_key(model_id: str, namespace: str, va_name: str) -> str:
    return f"{_key_part(model_id)}/{_key_part(namespace)}/{_key_part(va_name)}/allocation-metrics"


def replica_key(model_id: str, namespace: str) -> str:
    return f"{_key_part(model_id)}/{_key_part(namespace)}/all/replica-metrics"


def variant_prefix(model_id: str, namespace: str, va_name: str) -> str:
    return f"{_key_part(model_id)}/{_key_part(namespace)}/{_key_part(va_name)}/"


def model_prefix(model_id: str, namespace: str) -> str:
    return f"{_key_part(model_id)}/{_key_part(namespace)}/"
