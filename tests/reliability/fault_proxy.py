"""A small fault-injecting HTTP proxy in front of Prometheus.

It runs on its own event loop in a daemon thread (like the vLLM emulator), so it keeps answering
whatever the test's loop does. Every request is forwarded to the real Prometheus unless a fault mode
says otherwise; every injected fault is counted, so a test can prove its fault really happened.

Modes:
- ``pass``: forward unchanged;
- ``error``: answer HTTP 500 with a Prometheus-style error body;
- ``slow``: wait ``delay`` seconds (longer than the client's timeout), then forward;
- ``down``: drop the connection without an answer (what a killed server looks like mid-request);
- ``rewrite``: forward, then replace every sample value in the answer with ``value``
  (``"NaN"``, ``"+Inf"``, ``"-1"``, ``"1e308"``...);
- ``strip_pod``: forward, then remove the ``pod`` label from every series in the answer.

``match`` (a substring of the PromQL) limits a fault to the queries that contain it; others pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from typing import Any

import aiohttp
import yarl
from aiohttp import web

MODES = ("pass", "error", "slow", "down", "rewrite", "strip_pod")


class FaultProxy:
    """Forwards ``/api/v1/*`` to ``target`` with switchable faults; counts what it injected."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self._lock = threading.Lock()
        self._mode = "pass"
        self._value = "NaN"
        self._delay = 30.0
        self._match: str | None = None
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.queries: list[str] = []
        self.authorization: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prometheus-fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._release: asyncio.Event | None = None
        self.port = 0

    # --- control (any thread) ----------------------------------------------------------------
    def set_mode(self, mode: str, *, value: str = "NaN", delay: float = 30.0, match: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; one of {MODES}")
        with self._lock:
            self._mode, self._value, self._delay, self._match = mode, value, delay, match
        if mode != "slow" and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)  # let parked slow requests go

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- server (proxy thread) ---------------------------------------------------------------
    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # long request lines: with WVA_PROMETHEUS_QUERY_METHOD=GET a 10k-character label value must reach Prometheus
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.5,
            max_line_size=1 << 20, max_field_size=1 << 20,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._serve(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        query = request.query.get("query", "")
        if not query and body:
            form = await request.post()
            query = str(form.get("query", ""))
        with self._lock:
            mode, value, delay, match = self._mode, self._value, self._delay, self._match
            self.queries.append(query)
            auth = request.headers.get("Authorization")
            if auth:
                self.authorization.append(auth)
        if match is not None and match not in query:
            mode = "pass"
        if mode == "error":
            self._count("error")
            return web.json_response(
                {"status": "error", "errorType": "internal", "error": "injected fault"}, status=500
            )
        if mode == "down":
            self._count("down")
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError()
        if mode == "slow":
            self._count("slow")
            assert self._release is not None
            self._release.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._release.wait(), delay)
        status, payload = await self._forward(request, body)
        if mode in ("rewrite", "strip_pod") and isinstance(payload, dict):
            changed = _rewrite(payload, value) if mode == "rewrite" else _strip_pod(payload)
            if changed:
                self._count(mode, changed)
        return web.json_response(payload, status=status)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, Any]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._session.request(
            # the raw path and query, byte for byte: re-encoding a parsed URL would alter hostile values
            request.method, yarl.URL(self.target + request.raw_path, encoded=True), data=body or None,
            headers=headers,
        ) as response:
            text = await response.text()
            with self._lock:
                self.forwarded += 1
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, {"status": "error", "error": text[:200]}

    def _count(self, mode: str, n: int = 1) -> None:
        with self._lock:
            self.injected[mode] += n


def _results(payload: dict[str, Any]) -> list[dict[str, Any]]:
    data = payload.get("data")
    if not isinstance(data, dict) or data.get("resultType") not in ("vector", "matrix"):
        return []
    result = data.get("result")
    return [r for r in result if isinstance(r, dict)] if isinstance(result, list) else []


def _rewrite(payload: dict[str, Any], value: str) -> int:
    """Replace every sample value; returns how many were replaced."""
    n = 0
    for series in _results(payload):
        if isinstance(series.get("value"), list):
            series["value"] = [series["value"][0], value]
            n += 1
        for sample in series.get("values") or []:
            sample[1] = value
            n += 1
    return n


def _strip_pod(payload: dict[str, Any]) -> int:
    n = 0
    for series in _results(payload):
        metric = series.get("metric")
        if isinstance(metric, dict) and "pod" in metric:
            del metric["pod"]
            n += 1
    return n
