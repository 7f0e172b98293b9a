"""An emulated vLLM metrics endpoint: one HTTP server that can stand in for many serving pods.

Every pod exposes the vLLM series the autoscaler reads (KV-cache usage, queue length, request and
token counters, latency histograms' sum/count pairs and ``vllm:cache_config_info``), each labelled
with ``model_name``. Values are set at run time so tests, the demo and benchmarks can move them.

Endpoints:

- ``GET /metrics``: every pod's series with ``namespace`` and ``pod`` labels, as Prometheus would
  attach them from its targets (scrape it with ``honor_labels: true``).
- ``GET /pods/{namespace}/{pod}/metrics``: one pod's series without those labels, exactly as a real
  vLLM process serves them (what the pod-scraping source reads).
- ``POST /pods/{namespace}/{pod}/control`` and, in single-pod mode, ``POST /control``: a JSON object of
  values to set, e.g. ``{"kv_cache_usage": 0.9, "num_requests_waiting": 8}``.

The text is the plain exposition format 0.0.4: it keeps the ``vllm:`` colons that Prometheus 2.x
would otherwise see escaped when a client negotiates OpenMetrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Fault modes a pod endpoint can be told to show (used by reliability tests of pod scraping).
FAULTS = frozenset({"unauthorized", "error", "garbage", "huge", "hang"})


@dataclass
class PodState:
    """The current values of one emulated vLLM pod."""

    model: str
    kv_cache_usage: float = 0.0
    num_requests_waiting: float = 0.0
    num_requests_running: float = 0.0
    request_success_total: float = 0.0
    prompt_tokens_sum: float = 0.0
    prompt_tokens_count: float = 0.0
    generation_tokens_sum: float = 0.0
    generation_tokens_count: float = 0.0
    ttft_seconds_sum: float = 0.0
    ttft_seconds_count: float = 0.0
    tpot_seconds_sum: float = 0.0
    tpot_seconds_count: float = 0.0
    num_gpu_blocks: int = 4096
    block_size: int = 16
    fault: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)

    def apply(self, values: Mapping[str, Any]) -> None:
        """Set fields by name; unknown names and wrong types raise ValueError naming the field."""
        names = {f.name: f for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in names or key in ("extra_labels",):
                raise ValueError(f"unknown emulator value {key!r}")
            if key == "model":
                if not isinstance(value, str) or not value:
                    raise ValueError(f"model must be a non-empty string, got {value!r}")
            elif key == "fault":
                if value is not None and value not in FAULTS:
                    raise ValueError(f"fault must be one of {sorted(FAULTS)} or null, got {value!r}")
            elif key in ("num_gpu_blocks", "block_size"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{key} must be an integer, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            setattr(self, key, value)

    def record_requests(
        self,
        count: float,
        prompt_tokens: float,
        generation_tokens: float,
        ttft_seconds: float,
        tpot_seconds: float,
    ) -> None:
        """Account ``count`` finished requests with the given per-request averages."""
        if count <= 0:
            return
        self.request_success_total += count
        self.prompt_tokens_sum += count * prompt_tokens
        self.prompt_tokens_count += count
        self.generation_tokens_sum += count * generation_tokens
        self.generation_tokens_count += count
        self.ttft_seconds_sum += count * ttft_seconds
        self.ttft_seconds_count += count
        self.tpot_seconds_sum += count * tpot_seconds * max(generation_tokens, 1.0)
        self.tpot_seconds_count += count * max(generation_tokens, 1.0)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    return repr(float(value))


_GAUGES = (
    ("vllm:kv_cache_usage_perc", "kv_cache_usage", "GPU KV-cache usage. 1 means 100 percent usage."),
    ("vllm:num_requests_waiting", "num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:num_requests_running", "num_requests_running", "Number of requests in model execution."),
)
_COUNTERS = (
    ("vllm:request_success_total", "request_success_total", "Count of successfully processed requests."),
)
_HISTOGRAMS = (
    ("vllm:request_prompt_tokens", "prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:request_generation_tokens", "generation_tokens", "Number of generation tokens processed."),
    ("vllm:time_to_first_token_seconds", "ttft_seconds", "Histogram of time to first token in seconds."),
    ("vllm:time_per_output_token_seconds", "tpot_seconds", "Histogram of time per output token."),
)


_LE_INF = 'le="+Inf"'


def render_pods(pods: list[tuple[dict[str, str], PodState]]) -> str:
    """Render pods in the text exposition format; each pod's extra labels prefix its series."""
    out: list[str] = []

    def labels(base: dict[str, str], pod: PodState, more: str = "") -> str:
        merged = {**base, **pod.extra_labels, "model_name": pod.model}
        body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in merged.items())
        return "{" + body + (("," + more) if more else "") + "}"

    for name, attr, help_text in _GAUGES:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{labels(b, p)} {_fmt(getattr(p, attr))}" for b, p in pods)
    for name, attr, help_text in _COUNTERS:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} counter")
        out.extend(f"{name}{labels(b, p)} {_fmt(getattr(p, attr))}" for b, p in pods)
    for name, attr, help_text in _HISTOGRAMS:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} histogram")
        for b, p in pods:
            count = getattr(p, f"{attr}_count")
            out.append(f"{name}_bucket{labels(b, p, _LE_INF)} {_fmt(count)}")
            out.append(f"{name}_sum{labels(b, p)} {_fmt(getattr(p, f'{attr}_sum'))}")
            out.append(f"{name}_count{labels(b, p)} {_fmt(count)}")
    out.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
    out.append("# TYPE vllm:cache_config_info gauge")
    for b, p in pods:
        more = f'block_size="{p.block_size}",num_gpu_blocks="{p.num_gpu_blocks}"'
        out.append(f"vllm:cache_config_info{labels(b, p, more)} 1.0")
    return "\n".join(out) + "\n"


class VLLMEmulator:
    """Thread-safe store of emulated pods plus the aiohttp app that serves them."""

    def __init__(self, single_pod: tuple[str, str] | None = None) -> None:
        self._pods: dict[tuple[str, str], PodState] = {}
        self._lock = threading.Lock()
        self._single_pod = single_pod
        self._runner: web.AppRunner | None = None
        self._site_port: int | None = None
        self.host = "127.0.0.1"
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests_served = 0
        self._hang = asyncio.Event()  # "hang" pods wait on it until the client gives up or release_hung()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- pod management ------------------------------------------------------------------------
    def add_pod(self, pod: str, namespace: str, model: str, **values: Any) -> PodState:
        state = PodState(model=model)
        state.apply(values)
        with self._lock:
            self._pods[(namespace, pod)] = state
        return state

    def set_values(self, namespace: str, pod: str, **values: Any) -> None:
        with self._lock:
            state = self._pods.get((namespace, pod))
            if state is None:
                raise KeyError(f"no emulated pod {namespace}/{pod}")
            state.apply(values)

    def record_requests(self, namespace: str, pod: str, **kwargs: float) -> None:
        with self._lock:
            self._pods[(namespace, pod)].record_requests(**kwargs)

    def remove_pod(self, namespace: str, pod: str) -> None:
        with self._lock:
            self._pods.pop((namespace, pod), None)

    def get(self, namespace: str, pod: str) -> PodState | None:
        with self._lock:
            state = self._pods.get((namespace, pod))
            return dataclasses.replace(state) if state is not None else None

    def pods(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._pods)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pods())

    # --- rendering -----------------------------------------------------------------------------
    def render_all(self) -> str:
        with self._lock:
            snapshot = [
                ({"namespace": ns, "pod": pod}, dataclasses.replace(st))
                for (ns, pod), st in sorted(self._pods.items())
                if st.fault is None
            ]
        return render_pods(snapshot)

    def render_pod(self, namespace: str, pod: str) -> str | None:
        with self._lock:
            state = self._pods.get((namespace, pod))
            snapshot = dataclasses.replace(state) if state is not None else None
        return render_pods([({}, snapshot)]) if snapshot is not None else None

    # --- HTTP ----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._site_port is None:
            raise RuntimeError("emulator is not serving")
        return self._site_port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.base_url}/metrics"

    def pod_url(self, namespace: str, pod: str) -> str:
        return f"{self.base_url}/pods/{namespace}/{pod}/metrics"

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_in_flight])
        app.router.add_get("/metrics", self._handle_all)
        app.router.add_get("/pods/{namespace}/{pod}/metrics", self._handle_pod)
        app.router.add_post("/pods/{namespace}/{pod}/control", self._handle_control)
        app.router.add_post("/control", self._handle_single_control)
        app.router.add_get("/health", self._handle_health)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._loop = asyncio.get_running_loop()
        self._hang = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._site_port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("vLLM emulator serving on %s", self.base_url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _count_in_flight(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self.in_flight -= 1
            self.requests_served += 1

    def release_hung(self) -> None:
        """Answer every request a "hang" pod is holding (call from any thread before stopping)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._hang.set)

    def reset_counters(self) -> None:
        self.max_in_flight = self.in_flight
        self.requests_served = 0

    async def _handle_health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _handle_all(self, _request: web.Request) -> web.Response:
        if self._single_pod is not None:
            return await self._pod_response(*self._single_pod)
        return web.Response(body=self.render_all().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _handle_pod(self, request: web.Request) -> web.Response:
        return await self._pod_response(request.match_info["namespace"], request.match_info["pod"])

    async def _pod_response(self, namespace: str, pod: str) -> web.Response:
        with self._lock:
            state = self._pods.get((namespace, pod))
            fault = state.fault if state is not None else None
        if state is None:
            return web.Response(status=404, text=f"no pod {namespace}/{pod}\n")
        if fault == "unauthorized":
            return web.Response(status=401, text="Unauthorized\n")
        if fault == "error":
            return web.Response(status=500, text="internal error\n")
        if fault == "garbage":
            return web.Response(text="<html>this is not metrics{{{\n", headers={"Content-Type": CONTENT_TYPE})
        if fault == "huge":
            line = "# " + "x" * 1022 + "\n"
            return web.Response(text=line * (50 * 1024), headers={"Content-Type": CONTENT_TYPE})
        if fault == "hang":
            await self._hang.wait()
        text = self.render_pod(namespace, pod) or ""
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _handle_control(self, request: web.Request) -> web.Response:
        return await self._control(request, request.match_info["namespace"], request.match_info["pod"])

    async def _handle_single_control(self, request: web.Request) -> web.Response:
        if self._single_pod is None:
            return web.Response(status=404, text="use /pods/{namespace}/{pod}/control\n")
        return await self._control(request, *self._single_pod)

    async def _control(self, request: web.Request, namespace: str, pod: str) -> web.Response:
        try:
            values = await request.json()
            if not isinstance(values, dict):
                raise ValueError("body must be a JSON object")
            self.set_values(namespace, pod, **values)
        except KeyError as exc:
            return web.Response(status=404, text=f"{exc}\n")
        except (ValueError, json.JSONDecodeError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        state = self.get(namespace, pod)
        assert state is not None
        return web.json_response(dataclasses.asdict(state))


class EmulatorThread:
    """Runs a VLLMEmulator's server on its own event loop in a daemon thread.

    Tests and benchmarks use this so that the emulator keeps answering whatever the test's own loop
    does (including time fast-forwarded by looptime).
    """

    def __init__(self, emulator: VLLMEmulator | None = None) -> None:
        self.emulator = emulator or VLLMEmulator()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-emulator", daemon=True)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> VLLMEmulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(host, port), self._loop).result(10)
        return self.emulator

    def stop(self) -> None:
        self.emulator.release_hung()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def serve_single_pod(
    model: str, port: int, namespace: str = "default", pod: str = "vllm", host: str = "0.0.0.0"
) -> None:
    """Serve one emulated pod until cancelled (the ``wva emulate`` command)."""
    emulator = VLLMEmulator(single_pod=(namespace, pod))
    emulator.add_pod(pod, namespace, model)
    await emulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
