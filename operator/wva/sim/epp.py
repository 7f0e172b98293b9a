"""An emulated gateway Endpoint Picker (EPP) metrics endpoint: the flow-control queue, settable per model.

It serves what an EPP with flow control serves (the series scale from zero reads), with the labels the
EPP puts on them and nothing a scrape target would add (no ``namespace``: Prometheus attaches that
from the target, the direct-scraping source from its configuration):

- ``inference_extension_flow_control_queue_size{fairness_id, priority, inference_pool, model_name,
  target_model_name}``: requests held in the queue;
- ``inference_extension_flow_control_pool_saturation{inference_pool}``.

Endpoints: ``GET /metrics``; ``POST /control`` with ``{"model": "<target model>", "queue": 3}`` (also
``"pool_saturation"`` and ``"fault"``: ``error``, ``garbage``, ``huge`` or null), for the demo and manual use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_SIZE = "inference_extension_flow_control_queue_size"
POOL_SATURATION = "inference_extension_flow_control_pool_saturation"
FAULTS = frozenset({"error", "garbage", "huge"})


@dataclass(frozen=True, slots=True)
class _Series:
    model_name: str
    target_model_name: str
    fairness_id: str
    priority: str


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class EppEmulator:
    """Thread-safe queue values plus the aiohttp app that serves them. One emulator is one EPP (one pool)."""

    def __init__(self, pool: str = "pool") -> None:
        self.pool = pool
        self._queues: dict[_Series, float] = {}
        self._saturation: float | None = None
        self._lock = threading.Lock()
        self.fault: str | None = None
        self.scrapes = 0
        self.host = "127.0.0.1"
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- values --------------------------------------------------------------------------------
    def set_queue(
        self,
        model: str,
        size: float,
        *,
        model_name: str | None = None,
        fairness_id: str = "default-flow",
        priority: str = "0",
    ) -> None:
        """Set the queue of ``model`` (the target model name; ``model_name`` defaults to it)."""
        key = _Series(model_name or model, model, fairness_id, priority)
        with self._lock:
            self._queues[key] = float(size)

    def remove_queue(self, model: str) -> None:
        """Drop every series of ``model`` (as if the EPP had never seen a request for it)."""
        with self._lock:
            self._queues = {k: v for k, v in self._queues.items() if k.target_model_name != model}

    def set_pool_saturation(self, value: float | None) -> None:
        with self._lock:
            self._saturation = value

    def render(self) -> str:
        with self._lock:
            queues = sorted(self._queues.items(), key=lambda kv: (kv[0].target_model_name, kv[0].fairness_id))
            saturation = self._saturation
        pool = _escape(self.pool)
        out = [
            f"# HELP {QUEUE_SIZE} Current number of requests actively held in the Flow Control queue.",
            f"# TYPE {QUEUE_SIZE} gauge",
        ]
        for s, value in queues:
            labels = (
                f'fairness_id="{_escape(s.fairness_id)}",priority="{_escape(s.priority)}",inference_pool="{pool}",'
                f'model_name="{_escape(s.model_name)}",target_model_name="{_escape(s.target_model_name)}"'
            )
            out.append(f"{QUEUE_SIZE}{{{labels}}} {_fmt(value)}")
        if saturation is not None:
            out.append(f"# HELP {POOL_SATURATION} Current saturation level of the inference pool.")
            out.append(f"# TYPE {POOL_SATURATION} gauge")
            out.append(f'{POOL_SATURATION}{{inference_pool="{pool}"}} {_fmt(saturation)}')
        return "\n".join(out) + "\n"

    # --- HTTP ----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EPP emulator is not serving")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.base_url}/metrics"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_post("/control", self._handle_control)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self._port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("EPP emulator serving on %s", self.base_url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_metrics(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        fault = self.fault
        if fault == "error":
            return web.Response(status=500, text="internal error\n")
        if fault == "garbage":
            return web.Response(text=f"{QUEUE_SIZE}{{<html> not metrics\n", headers={"Content-Type": CONTENT_TYPE})
        if fault == "huge":
            line = "# " + "x" * 1022 + "\n"
            return web.Response(text=line * (12 * 1024), headers={"Content-Type": CONTENT_TYPE})
        return web.Response(body=self.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _handle_control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            if "fault" in body:
                fault = body["fault"]
                if fault is not None and fault not in FAULTS:
                    raise ValueError(f"fault must be one of {sorted(FAULTS)} or null")
                self.fault = fault
            if "pool_saturation" in body:
                value = body["pool_saturation"]
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise ValueError("pool_saturation must be a number or null")
                self.set_pool_saturation(value)
            if "queue" in body:
                model, size = body.get("model"), body["queue"]
                if not isinstance(model, str) or not model:
                    raise ValueError("model must be a non-empty string")
                if size is None:
                    self.remove_queue(model)
                elif isinstance(size, bool) or not isinstance(size, int | float):
                    raise ValueError("queue must be a number or null")
                else:
                    self.set_queue(model, size)
        except (ValueError, json.JSONDecodeError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        return web.Response(body=self.render().encode(), headers={"Content-Type": CONTENT_TYPE})


class EppEmulatorThread:
    """Runs an :class:`EppEmulator` on its own event loop in a daemon thread (like ``EmulatorThread``)."""

    def __init__(self, emulator: EppEmulator | None = None) -> None:
        self.emulator = emulator or EppEmulator()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="epp-emulator", daemon=True)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> EppEmulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(host, port), self._loop).result(10)
        return self.emulator

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
