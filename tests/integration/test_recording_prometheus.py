"""wva's recording rules on the real Prometheus: the recorded path answers what the raw path does, and
``auto`` reads raw series while the rules are absent, recorded ones once they are loaded, and raw again
once they are removed.

One Prometheus of this module's own (its rules are swapped while it runs) scrapes the session's vLLM
emulator; a driver task counts requests on every pod at a steady rate, so the rates are non-zero.
The per-request averages (tokens, TTFT, ITL) are the same at any instant and must match to float
precision; the arrival rate is a rate read at two instants up to one rule interval apart, over
rate() windows younger than their minute, so it matches only within 20% (promtool's test proves the
expressions equal at one instant).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from test_batching_prometheus import build, cycle
from wva.collector.types import OptimizerMetrics, VariantRef
from wva.collector.v2.recording import RULE_GROUP, RecordingMode, rules_file_text
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = pytest.mark.prometheus

MODELS = ["llama", "llama.*", 'quo"te', "a|b", "uni-模型"]
REQUESTS_PER_SECOND = 4.0
PER_REQUEST = {"prompt_tokens": 512.0, "generation_tokens": 64.0, "ttft_seconds": 0.25, "tpot_seconds": 0.03125}


@pytest.fixture(scope="module")
def rules_prometheus(vllm_emulator: VLLMEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[LocalPrometheus, Path]
]:
    rules = tmp_path_factory.mktemp("rules") / "wva-recording-rules.yaml"
    rules.write_text(rules_file_text(interval="1s"), encoding="utf-8")  # the shipped rules, evaluated every second
    server = LocalPrometheus(targets=[f"127.0.0.1:{vllm_emulator.port}"])
    server.start()
    try:
        server.wait_for_blocking("up", timeout=30.0)
        yield server, rules
    finally:
        server.close()


@pytest_asyncio.fixture()
async def fleet(vllm_emulator: VLLMEmulator, unique_ns: str) -> AsyncIterator[dict[tuple[str, str], VariantRef]]:
    """Two namespaces x hostile model names x 2 pods, with requests counted on every pod as they run."""
    refs: dict[tuple[str, str], VariantRef] = {}
    pods: list[tuple[str, str]] = []
    for n, ns in enumerate([unique_ns, unique_ns + "-b"]):
        for i, model in enumerate(MODELS):
            refs[(model, ns)] = VariantRef(name=f"va{i}", namespace=ns, deployment_name=f"dep{i}",
                                           accelerator_name="L4")
            for j in range(2):
                pod = f"dep{i}-5f7-{j}"
                vllm_emulator.add_pod(pod, ns, model, kv_cache_usage=round(0.1 * (i + 1) + 0.3 * n, 4),
                                      num_requests_waiting=i + j)
                pods.append((ns, pod))

    async def drive() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            for ns, pod in pods:
                vllm_emulator.record_requests(ns, pod, count=REQUESTS_PER_SECOND * (now - last), **PER_REQUEST)
            last = now

    driver = asyncio.create_task(drive())
    try:
        yield refs
    finally:
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
        for ns, pod in pods:
            vllm_emulator.remove_pod(ns, pod)


def assert_same(got: list[Any], want: list[Any]) -> None:
    """Equal answers; the optimizer averages to float precision, the arrival rate within 20% (two instants,
    and rate() windows of series younger than their minute, whose extrapolation moves with each scrape)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, OptimizerMetrics):
            assert isinstance(g, OptimizerMetrics)
            assert g.arrival_rate == pytest.approx(w.arrival_rate, rel=0.2) and w.arrival_rate > 0
            for name in ("avg_input_tokens", "avg_output_tokens", "ttft_seconds", "itl_seconds"):
                assert getattr(g, name) == pytest.approx(getattr(w, name), rel=1e-9), name
            assert (g.avg_input_tokens, g.ttft_seconds) == pytest.approx((512.0, 0.25))
        else:
            assert g == w  # availability and every pod's ReplicaMetrics: the same raw series


async def wait_for_rates(prometheus: LocalPrometheus, refs: dict[tuple[str, str], VariantRef], series: str) -> None:
    """Until ``series`` (``{sel}`` standing for the fleet's namespace matcher) is > 0 for every model."""
    namespaces = "|".join(sorted({ns for _model, ns in refs}))
    want = len(refs)
    await prometheus.wait_for(
        f"count({series.format(sel=f'namespace=~{chr(34)}{namespaces}{chr(34)}')} > 0)",
        lambda r: int(float(r[0]["value"][1])) == want,
        timeout=30.0,
    )


async def test_auto_reads_raw_without_rules_recorded_with_them_and_the_answers_match(
    rules_prometheus: tuple[LocalPrometheus, Path], fleet: dict[tuple[str, str], VariantRef]
) -> None:
    prometheus, rules = rules_prometheus
    namespaces = len({ns for _model, ns in fleet})
    raw_rates = "sum by (namespace, model_name) (rate(vllm:request_success_total{{{sel}}}[1m]))"
    await wait_for_rates(prometheus, fleet, raw_rates)
    auto, auto_prom = build(prometheus, fleet, batch=True, recording=RecordingMode.AUTO)
    raw, _ = build(prometheus, fleet, batch=False, recording=RecordingMode.OFF)  # per model: the ground truth

    # no rules loaded: auto stays on the raw forms, one query per namespace
    for _ in range(2):
        before = auto_prom.queries
        got, want = await asyncio.gather(cycle(auto, fleet), cycle(raw, fleet))
        assert_same(got, want)
        assert auto_prom.queries - before == namespaces
    assert auto.batcher.stats.recorded_prefetches == 0

    # the rules are loaded: from the cycle after their series appear, auto reads them
    await asyncio.to_thread(prometheus.load_rules, [rules], [RULE_GROUP])
    await wait_for_rates(prometheus, fleet, "namespace_model:vllm_request_success:rate1m{{{sel}}}")
    await cycle(auto, fleet)  # sees the recorded series
    before = auto_prom.queries
    got, want = await asyncio.gather(cycle(auto, fleet), cycle(raw, fleet))
    assert_same(got, want)
    assert auto.batcher.stats.recorded_prefetches >= namespaces
    assert auto_prom.queries - before == namespaces  # still one query per namespace
    assert auto.batcher.stats.per_model_queries == 0

    # the rules are removed: their series go stale, and auto reads raw series again
    await asyncio.to_thread(prometheus.load_rules, [], [])
    await prometheus.wait_for(
        'absent(namespace_model:vllm_request_success:rate1m)', timeout=30.0
    )
    got, want = await asyncio.gather(cycle(auto, fleet), cycle(raw, fleet))
    assert_same(got, want)  # the cycle that finds them gone reads raw at once, never "no data"
    recorded_before = auto.batcher.stats.recorded_prefetches
    before = auto_prom.queries
    got, want = await asyncio.gather(cycle(auto, fleet), cycle(raw, fleet))
    assert_same(got, want)
    assert auto.batcher.stats.recorded_prefetches == recorded_before
    assert auto_prom.queries - before == namespaces
