"""PodScrapingSource against a small in-process HTTP server: values, windows, rates, auth, failures."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from fakes import FakeClock
from wva.collector import promql
from wva.collector.types import VariantRef
from wva.collector.v2 import (
    PodMetricResult,
    PodScrapingConfig,
    PodScrapingSource,
    PodTarget,
    PodVAMapper,
    RefreshSpec,
    ScrapeOutcome,
    SourceRegistry,
    V2MetricsCollector,
)
from wva.collector.v2.errors import MetricsCollectionError
from wva.sim.vllm import PodState, render_pods

NS, MODEL = "ns1", "acme/m"
PARAMS = {promql.PARAM_NAMESPACE: NS, promql.PARAM_MODEL_ID: MODEL}


@dataclass
class FakePods:
    """Serves /{pod}/metrics from PodState values, or a status/body override per pod."""

    states: dict[str, PodState] = field(default_factory=dict)
    overrides: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    token: str | None = None
    seen_auth: list[str | None] = field(default_factory=list)
    base: str = ""
    sources: list[PodScrapingSource] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        pod = request.match_info["pod"]
        self.seen_auth.append(request.headers.get("Authorization"))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if pod in self.overrides:
            status, body = self.overrides[pod]
            return web.Response(status=status, body=body)
        return web.Response(body=render_pods([({}, self.states[pod])]).encode())

    def discovery(self, model_id: str, namespace: str | None) -> list[PodTarget]:
        return [PodTarget(NS, pod, model_id, f"{self.base}/{pod}/metrics", "va") for pod in sorted(self.states)]


@pytest_asyncio.fixture()
async def pods() -> AsyncIterator[FakePods]:
    fake = FakePods()
    app = web.Application()
    app.router.add_get("/{pod}/metrics", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base = f"http://127.0.0.1:{port}"
    yield fake
    for source in fake.sources:
        await source.stop()
    await runner.cleanup()


def make_source(
    pods: FakePods, clock: Callable[[], float], wall: Callable[[], float] | None = None, **config: object
) -> PodScrapingSource:
    cfg = PodScrapingConfig(**{"min_scrape_interval": 0.0, "scrape_timeout": 2.0, **config})  # type: ignore[arg-type]
    source = PodScrapingSource(pods.discovery, cfg, clock=clock, wall_clock=wall or clock)
    pods.sources.append(source)
    return source


async def refresh(source: PodScrapingSource, *names: str) -> dict[str, PodMetricResult]:
    results = await source.refresh(RefreshSpec(queries=list(names), params=PARAMS))
    out = {}
    for name, result in results.items():
        assert isinstance(result, PodMetricResult)
        out[name] = result
    return out


def per_pod(result: PodMetricResult) -> dict[str, float]:
    return {v.labels["pod"]: v.value for v in result.values}


async def test_saturation_queries_answer_per_pod_peaks_over_the_window(pods: FakePods) -> None:
    clock = FakeClock()
    pods.states = {"a": PodState(MODEL, kv_cache_usage=0.9, num_requests_waiting=7), "b": PodState(MODEL)}
    source = make_source(pods, clock, window=60.0)
    first = await refresh(source, promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH)
    assert per_pod(first[promql.Q_KV_CACHE_USAGE]) == {"a": 0.9, "b": 0.0}  # b reported 0: a confirmed zero
    assert per_pod(first[promql.Q_QUEUE_LENGTH]) == {"a": 7.0, "b": 0.0}

    pods.states["a"].kv_cache_usage = 0.2
    pods.states["a"].num_requests_waiting = 1
    clock.now += 30
    assert per_pod((await refresh(source, promql.Q_KV_CACHE_USAGE))[promql.Q_KV_CACHE_USAGE])["a"] == 0.9
    clock.now += 31  # the 0.9 reading has left the window
    later = await refresh(source, promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH)
    assert per_pod(later[promql.Q_KV_CACHE_USAGE])["a"] == 0.2
    assert per_pod(later[promql.Q_QUEUE_LENGTH])["a"] == 1.0
    assert source.get(promql.Q_KV_CACHE_USAGE, PARAMS) is not None  # cached under the v2 key


async def test_optimizer_metrics_come_from_counter_deltas_and_are_unknown_at_first(pods: FakePods) -> None:
    clock = FakeClock()
    pods.states = {"a": PodState(MODEL), "b": PodState(MODEL)}
    source = make_source(pods, clock)
    registry = SourceRegistry()
    registry.register("pods", source)
    collector = V2MetricsCollector(registry, PodVAMapper(), source_name="pods", batch_queries=False)

    # one reading only: a rate is unknown, which is an error (never a zero rate)
    with pytest.raises(MetricsCollectionError, match="rate unknown"):
        await collector.collect_optimizer_metrics(MODEL, NS, "va")

    for pod in ("a", "b"):
        pods.states[pod].record_requests(count=10, prompt_tokens=100, generation_tokens=50,
                                         ttft_seconds=0.2, tpot_seconds=0.01)
    clock.now += 10.0
    metrics = await collector.collect_optimizer_metrics(MODEL, NS, "va")
    assert metrics.arrival_rate == pytest.approx(20 / 10.0 * 60)  # requests per minute, both pods
    assert metrics.avg_input_tokens == pytest.approx(100.0)
    assert metrics.avg_output_tokens == pytest.approx(50.0)
    assert metrics.ttft_seconds == pytest.approx(0.2)
    assert metrics.itl_seconds == pytest.approx(0.01)

    clock.now += 10.0  # no new requests: a confirmed zero rate
    metrics = await collector.collect_optimizer_metrics(MODEL, NS, "va")
    assert metrics.arrival_rate == pytest.approx(20 / 20.0 * 60)  # still inside the 60 s window
    clock.now += 70.0
    metrics = await collector.collect_optimizer_metrics(MODEL, NS, "va")
    assert metrics.arrival_rate == 0.0


async def test_a_failing_pod_is_unknown_and_reported_never_zero(pods: FakePods) -> None:
    clock = FakeClock()
    pods.states = {p: PodState(MODEL, kv_cache_usage=0.5, num_requests_running=1) for p in ("ok", "e401", "e500")}
    pods.overrides = {"e401": (401, b"no"), "e500": (500, b"boom")}
    outcomes: list[ScrapeOutcome] = []
    source = PodScrapingSource(
        pods.discovery, PodScrapingConfig(min_scrape_interval=0.0), clock=clock, wall_clock=clock,
        on_scrape=lambda outcome, _s: outcomes.append(outcome),
    )
    pods.sources.append(source)
    results = await refresh(source, promql.Q_KV_CACHE_USAGE, promql.Q_METRICS_AVAILABILITY)
    kv = results[promql.Q_KV_CACHE_USAGE]
    assert kv.error is None
    assert per_pod(kv) == {"ok": 0.5}
    assert "unauthorized (HTTP 401)" in kv.pod_errors["e401"]
    assert kv.pod_errors["e500"] == "HTTP 500"
    assert per_pod(results[promql.Q_METRICS_AVAILABILITY]) == {"ok": 1.0}
    assert source.pod_errors(NS, MODEL).keys() == {"e401", "e500"}
    assert sorted(outcomes) == sorted([ScrapeOutcome.OK, ScrapeOutcome.HTTP_ERROR, ScrapeOutcome.HTTP_ERROR])

    # every pod failing is an error for the model, not an empty (idle-looking) answer
    pods.overrides["ok"] = (503, b"")
    clock.now += 1
    kv = (await refresh(source, promql.Q_KV_CACHE_USAGE))[promql.Q_KV_CACHE_USAGE]
    assert kv.error is not None and "all 3 pod scrapes failed" in kv.error
    assert kv.values == []


async def test_a_pod_missing_one_saturation_signal_is_left_out_of_both(pods: FakePods) -> None:
    clock = FakeClock()
    pods.states = {"full": PodState(MODEL, kv_cache_usage=0.4)}
    pods.overrides = {"half": (200, b'vllm:kv_cache_usage_perc{model_name="acme/m"} 0.99\n')}
    pods.states["half"] = PodState(MODEL)
    source = make_source(pods, clock)
    results = await refresh(source, promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH)
    assert per_pod(results[promql.Q_KV_CACHE_USAGE]) == {"full": 0.4}
    assert per_pod(results[promql.Q_QUEUE_LENGTH]) == {"full": 0.0}
    assert "missing" in results[promql.Q_QUEUE_LENGTH].pod_errors["half"]


async def test_oversized_and_garbage_bodies_cost_one_pod(pods: FakePods) -> None:
    clock = FakeClock()
    pods.states = {p: PodState(MODEL, kv_cache_usage=0.3) for p in ("ok", "big", "junk")}
    pods.overrides = {"big": (200, b"# " + b"x" * 200_000 + b"\n"), "junk": (200, b"<html>{{{\n")}
    source = make_source(pods, clock, max_body_bytes=64 * 1024)
    kv = (await refresh(source, promql.Q_KV_CACHE_USAGE))[promql.Q_KV_CACHE_USAGE]
    assert per_pod(kv) == {"ok": 0.3}
    assert "exceeds 65536" in kv.pod_errors["big"]
    assert "invalid exposition text" in kv.pod_errors["junk"]
    assert source.outcomes[ScrapeOutcome.TOO_LARGE] == 1
    assert source.outcomes[ScrapeOutcome.PARSE_ERROR] == 1


async def test_bearer_token_from_a_file_is_sent_and_refreshed_when_it_changes(
    pods: FakePods, tmp_path: Path
) -> None:
    clock = FakeClock()
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    pods.states = {"a": PodState(MODEL, kv_cache_usage=0.6)}
    pods.token = "first-token"
    source = make_source(pods, clock, token_path=str(token_file))
    assert per_pod((await refresh(source, promql.Q_KV_CACHE_USAGE))[promql.Q_KV_CACHE_USAGE]) == {"a": 0.6}

    pods.token = "second-token"  # the Secret is rotated
    token_file.write_text("second-token\n")
    stat = token_file.stat()
    os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    clock.now += 1
    assert per_pod((await refresh(source, promql.Q_KV_CACHE_USAGE))[promql.Q_KV_CACHE_USAGE]) == {"a": 0.6}
    assert pods.seen_auth == ["Bearer first-token", "Bearer second-token"]


async def test_readings_are_reused_within_the_scrape_interval_and_pruned_when_pods_go(pods: FakePods) -> None:
    clock = FakeClock()
    pods.states = {"a": PodState(MODEL), "b": PodState(MODEL)}
    source = make_source(pods, clock, min_scrape_interval=5.0)
    await refresh(source, promql.Q_KV_CACHE_USAGE)
    await refresh(source, promql.Q_QUEUE_LENGTH, promql.Q_METRICS_AVAILABILITY)
    assert len(pods.seen_auth) == 2  # one scrape per pod for the whole cycle
    assert source.tracked_pods() == 2
    del pods.states["b"]
    clock.now += 6
    await refresh(source, promql.Q_KV_CACHE_USAGE)
    assert source.tracked_pods() == 1


async def test_unsupported_queries_and_missing_params_are_error_results(pods: FakePods) -> None:
    source = make_source(pods, FakeClock())
    results = await source.refresh(RefreshSpec(queries=["cache_config_info"], params=PARAMS))
    assert "not supported" in (results["cache_config_info"].error or "")
    results = await source.refresh(RefreshSpec(queries=[promql.Q_KV_CACHE_USAGE], params={"modelID": MODEL}))
    assert "missing required parameter 'namespace'" in (results[promql.Q_KV_CACHE_USAGE].error or "")


async def test_replica_metrics_through_the_v2_collector(pods: FakePods) -> None:
    pods.states = {"dep-abc-1": PodState(MODEL, kv_cache_usage=0.8, num_requests_waiting=2),
                   "dep-abc-2": PodState(MODEL, kv_cache_usage=0.1)}
    pods.overrides = {"dep-abc-3": (401, b"")}
    pods.states["dep-abc-3"] = PodState(MODEL)
    mapper = PodVAMapper()
    mapper.register("va", NS, "dep")
    registry = SourceRegistry()
    registry.register("pods", make_source(pods, time.monotonic, time.time))  # the collector checks sample age
    collector = V2MetricsCollector(registry, mapper, source_name="pods")
    replicas = await collector.collect_replica_metrics(MODEL, NS, [VariantRef("va", NS, "dep", "A100", 5.0)])
    assert [(r.pod_name, r.kv_cache_usage, r.queue_length) for r in replicas] == [
        ("dep-abc-1", 0.8, 2), ("dep-abc-2", 0.1, 0)
    ]  # the 401 pod is absent (unknown), so the engine will not scale down on it
    assert all(r.metadata is not None and r.metadata.source == "pods" for r in replicas)
    availability = await collector.validate_metrics_availability(MODEL, NS)
    assert availability.available
