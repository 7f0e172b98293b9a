"""Build the ``PrometheusConnect`` client from settings: TLS, CA, client certificate, bearer token.

The bearer token is attached per request by the session, so a rotated service-account token file
is picked up without a restart; it is never logged. The library's own retries are disabled: the
collectors own the retry and timeout budget. ``MeteredPrometheusConnect`` counts every query and
its latency for the operator's self-metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from wva.settings import Settings
from wva.tokens import TokenFile

log = logging.getLogger(__name__)


class BearerSession(requests.Session):
    """A session that adds ``Authorization: Bearer <token>`` from a callable to every request."""

    def __init__(self, token: Callable[[], str | None]) -> None:
        super().__init__()
        self._token = token

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        token = self._token()
        if token:
            headers = dict(kwargs.pop("headers", None) or {})
            headers["Authorization"] = f"Bearer {token}"
            kwargs["headers"] = headers
        return super().request(method, url, *args, **kwargs)


def build_session(settings: Settings) -> requests.Session:
    token_source: Callable[[], str | None]
    if settings.prometheus_bearer_token is not None:
        secret = settings.prometheus_bearer_token
        token_source = secret.get_secret_value
    elif settings.prometheus_token_path:
        token_source = TokenFile(settings.prometheus_token_path, "Prometheus").get
    else:
        token_source = _no_token
    session = BearerSession(token_source)
    if settings.prometheus_tls_insecure_skip_verify:
        session.verify = False
    elif settings.prometheus_ca_cert_path:
        session.verify = settings.prometheus_ca_cert_path
    else:
        session.verify = True
    if settings.prometheus_client_cert_path and settings.prometheus_client_key_path:
        session.cert = (settings.prometheus_client_cert_path, settings.prometheus_client_key_path)
    if settings.prometheus_server_name:
        session.headers["Host"] = settings.prometheus_server_name
    return session


def _no_token() -> str | None:
    return None


class MeteredPrometheusConnect(PrometheusConnect):  # type: ignore[misc]
    """PrometheusConnect that reports each ``custom_query`` (outcome, seconds) to a callback."""

    def __init__(self, *args: Any, on_query: Callable[[str, float], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_query = on_query
        self.queries = 0

    def custom_query(self, query: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = super().custom_query(query, params=params, timeout=timeout)
            outcome = "ok"
            return result
        finally:
            self.queries += 1
            if self.on_query is not None:
                self.on_query(outcome, time.perf_counter() - started)


def build_prometheus_connect(
    settings: Settings, on_query: Callable[[str, float], None] | None = None
) -> MeteredPrometheusConnect:
    if not settings.prometheus_base_url:
        raise ValueError("PROMETHEUS_BASE_URL is not set")
    return MeteredPrometheusConnect(
        url=settings.prometheus_base_url,
        session=build_session(settings),
        retry=Retry(total=0, raise_on_status=False),
        timeout=settings.prometheus_query_timeout,
        on_query=on_query,
    )
