"""Test doubles for the collector-v2 tests (no tests here): clock, fake source, fake Prometheus."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from wva.collector.v2 import (
    Cache,
    CachedValue,
    MetricResult,
    MetricValue,
    QueryList,
    RefreshSpec,
    build_cache_key,
)


@dataclass
class FakeSource:
    """A MetricsSource answering refresh() from canned results keyed by query name."""

    results: dict[str, MetricResult] = field(default_factory=dict)
    queries: QueryList = field(default_factory=QueryList)
    specs: list[RefreshSpec] = field(default_factory=list)
    cache: Cache = field(default_factory=Cache)

    def query_list(self) -> QueryList:
        return self.queries

    async def refresh(self, spec: RefreshSpec) -> dict[str, MetricResult]:
        self.specs.append(spec)
        names = list(spec.queries) or self.queries.names()
        out = {}
        for name in names:
            result = self.results.get(name, MetricResult(query_name=name, values=[]))
            self.cache.set(build_cache_key(name, spec.params), result)
            out[name] = result
        return out

    def get(self, query_name: str, params: Mapping[str, str] | None = None) -> CachedValue | None:
        return self.cache.get(build_cache_key(query_name, params))


def per_pod(
    name: str, samples: Mapping[str, float], timestamp: float = 0.0, label: str = "pod"
) -> MetricResult:
    return MetricResult(
        query_name=name,
        values=[MetricValue(v, timestamp, {label: pod}) for pod, v in samples.items()],
        collected_at=timestamp,
    )


def vector(
    samples: Sequence[tuple[Mapping[str, str], float | str]], ts: float = 1700000000.0
) -> dict[str, Any]:
    """A Prometheus /api/v1/query success body with a vector result."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": dict(labels), "value": [ts, str(value)]} for labels, value in samples],
        },
    }


def error_body(message: str, error_type: str = "bad_data") -> dict[str, Any]:
    return {"status": "error", "errorType": error_type, "error": message}


Responder = Callable[[str], Awaitable[tuple[int, dict[str, Any]]]]


class FakePrometheus:
    """An aiohttp stand-in for Prometheus' instant-query API on 127.0.0.1 (port 0).

    ``respond`` decides the answer for each query string; the server records every query and the
    highest number of requests it had in flight at once.
    """

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or self._default
        self.queries: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @staticmethod
    async def _default(_query: str) -> tuple[int, dict[str, Any]]:
        return 200, vector([({"pod": "p"}, 1.0)])

    async def _handle(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        if not query and request.method == "POST":
            query = str((await request.post()).get("query", ""))
        self.queries.append(query)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, body = await self.respond(query)
        finally:
            self.in_flight -= 1
        return web.json_response(body, status=status)

    async def start(self) -> FakePrometheus:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def client(self) -> PrometheusConnect:
        return client_for(self.url)


def client_for(url: str) -> PrometheusConnect:
    """A client without its own retries: the source does the retrying."""
    return PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0, raise_on_status=False))


def closed_port_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state owned by other code is the point
            await asyncio.sleep(0.005)
