"""Build the ``PrometheusConnect`` client from settings: TLS, CA, client certificate, bearer token.

The bearer token is attached per request by the session, so a rotated service-account token file
is picked up without a restart; it is never logged. The library's own retries are disabled: the
collectors own the retry and timeout budget. ``MeteredPrometheusConnect`` counts every query and
its latency for the operator's self-metrics.

Queries go out as POST with the PromQL in a form body by default, as Prometheus' own Go client sends
them: a long query (a batch over many models, a very long model ID) then never meets a proxy's
URL-length limit. A server that answers POST with 405 or 501 is asked with GET from then on.
``WVA_PROMETHEUS_QUERY_METHOD=GET`` forces GET, e.g. behind a proxy that authorises POST differently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
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
    """PrometheusConnect that reports each ``custom_query`` (outcome, seconds) to a callback.

    With ``method="POST"`` the query travels in a form body instead of the URL (the library itself
    still puts it in the URL); 405 or 501 switches the client to GET for good.
    """

    def __init__(
        self,
        *args: Any,
        on_query: Callable[[str, float], None] | None = None,
        on_answer: Callable[[int, int | None], None] | None = None,
        method: str = "GET",
        **kwargs: Any,
    ) -> None:
        if method.upper() not in ("GET", "POST"):
            raise ValueError(f"method must be GET or POST, got {method!r}")
        super().__init__(*args, **kwargs)  # the library itself always sends GET; POST is ours
        self.on_query = on_query
        self.on_answer = on_answer  # (series, bytes of the body or None when the library read it)
        self.queries = 0
        self.post = method.upper() == "POST"

    def custom_query(self, query: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            size: int | None = None
            if self.post:
                result, size = self._post_query(query, params, timeout)
            else:
                result = super().custom_query(query, params=params, timeout=timeout)
            outcome = "ok"
            if self.on_answer is not None:
                self.on_answer(len(result) if isinstance(result, list) else 0, size)
            return result
        finally:
            self.queries += 1
            if self.on_query is not None:
                self.on_query(outcome, time.perf_counter() - started)

    def _post_query(self, query: str, params: dict[str, Any] | None, timeout: float | None) -> tuple[Any, int | None]:
        response = self._session.request(
            method="POST",
            url=f"{self.url}/api/v1/query",
            data={"query": str(query), **(params or {})},
            verify=self._session.verify,
            headers=self.headers,
            auth=self.auth,
            cert=self._session.cert,
            timeout=self._timeout if timeout is None else timeout,
        )
        if response.status_code in (405, 501):
            self.post = False
            log.warning(
                "Prometheus does not take POST queries, using GET from now on status=%d", response.status_code
            )
            return super().custom_query(query, params=params, timeout=timeout), None
        if response.status_code != 200:
            # the library's message format: the collectors parse the status and the error body from it
            raise PrometheusApiClientException(f"HTTP Status Code {response.status_code} ({response.content!r})")
        return response.json()["data"]["result"], len(response.content)


def build_prometheus_connect(
    settings: Settings,
    on_query: Callable[[str, float], None] | None = None,
    on_answer: Callable[[int, int | None], None] | None = None,
) -> MeteredPrometheusConnect:
    if not settings.prometheus_base_url:
        raise ValueError("PROMETHEUS_BASE_URL is not set")
    return MeteredPrometheusConnect(
        url=settings.prometheus_base_url,
        session=build_session(settings),
        retry=Retry(total=0, raise_on_status=False),
        timeout=settings.prometheus_query_timeout,
        on_query=on_query,
        on_answer=on_answer,
        method=settings.prometheus_query_method,
    )
