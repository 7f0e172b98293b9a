"""Has a model served any request lately? The scale-to-zero signal, read from Prometheus.

One query per model that has scale-to-zero on, once per cycle: the requests completed during the
retention window plus the peak of requests running and waiting in it. A value of exactly 0 is
idle; any positive value is activity; no series, a failed query or a value that is not a finite
number >= 0 is unknown, and unknown is never idle (an empty answer is not zero load).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Protocol

from wva.collector import promql
from wva.collector.v2.query import QueryList, QueryTemplate, QueryType

log = logging.getLogger(__name__)

Q_REQUEST_ACTIVITY = "request_activity"
_SEL = '{namespace="{{.namespace}}",model_name="{{.modelID}}"}'
ACTIVITY_TEMPLATE = (
    f"sum(increase({promql.REQUEST_SUCCESS_TOTAL}{_SEL}[{{{{.window}}}}]))"
    f" + sum(max_over_time({promql.NUM_REQUESTS_RUNNING}{_SEL}[{{{{.window}}}}]))"
    f" + sum(max_over_time({promql.NUM_REQUESTS_WAITING}{_SEL}[{{{{.window}}}}]))"
)


class InstantClient(Protocol):
    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any: ...


class RequestActivity:
    """``await idle(model, namespace, window)`` → True (no request), False (requests), None (unknown)."""

    def __init__(self, client: InstantClient, *, timeout: float = 10.0) -> None:
        self.client = client
        self.timeout = timeout
        self._queries = QueryList([QueryTemplate(
            Q_REQUEST_ACTIVITY, QueryType.PROMQL, ACTIVITY_TEMPLATE,
            params=(promql.PARAM_NAMESPACE, promql.PARAM_MODEL_ID, "window"),
            description="requests served, running or waiting during the scale-to-zero window",
        )])

    def query(self, model_id: str, namespace: str, window: float) -> str:
        window_text = f"{max(1, round(window))}s"
        return self._queries.build(Q_REQUEST_ACTIVITY, {
            promql.PARAM_NAMESPACE: namespace, promql.PARAM_MODEL_ID: model_id, "window": window_text,
        })

    async def idle(self, model_id: str, namespace: str, window: float) -> bool | None:
        query = self.query(model_id, namespace, window)
        try:
            result = await asyncio.wait_for(asyncio.to_thread(self.client.custom_query, query), self.timeout)
        except Exception as exc:  # an outage, a timeout or a client error: unknown, never idle
            log.warning("Request activity unknown model=%s namespace=%s error=%s", model_id, namespace,
                        " ".join(str(exc).split())[:200] or type(exc).__name__)
            return None
        value = _single_value(result)
        if value is None:
            log.info("Request activity unknown (no series) model=%s namespace=%s", model_id, namespace)
            return None
        return value == 0.0


def _single_value(result: Any) -> float | None:
    if not isinstance(result, list) or len(result) != 1 or not isinstance(result[0], dict):
        return None
    sample = result[0].get("value")
    try:
        value = float(sample[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return value if math.isfinite(value) and value >= 0 else None
