"""The scale-to-zero signal against the real Prometheus: idle, active and unknown."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_api_client import PrometheusConnect

from wva.collector.activity import RequestActivity
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = [pytest.mark.prometheus]


async def test_idle_active_and_unknown_from_the_request_counters(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    model = "acme/zero-8b"
    vllm_emulator.add_pod("zero-abc-1", unique_ns, model, kv_cache_usage=0.0, num_requests_running=0,
                          num_requests_waiting=0)
    activity = RequestActivity(PrometheusConnect(url=prometheus.url), timeout=10)
    selector = f'vllm:request_success_total{{namespace="{unique_ns}"}}'
    await prometheus.wait_for(selector, lambda r: len(r) == 1, timeout=60.0)

    # no request, nothing running or waiting during the last 5 s: idle
    async def settles(expected: bool | None) -> None:
        deadline = asyncio.get_running_loop().time() + 30
        while (got := await activity.idle(model, unique_ns, 5.0)) is not expected:
            assert asyncio.get_running_loop().time() < deadline, f"still {got}, waiting for {expected}"
            await asyncio.sleep(0.5)

    await settles(True)
    vllm_emulator.record_requests(unique_ns, "zero-abc-1", count=3, prompt_tokens=10, generation_tokens=10,
                                  ttft_seconds=0.1, tpot_seconds=0.01)  # requests served: active for the window
    await settles(False)
    await settles(True)  # and idle again once the window has passed them
    # a model Prometheus has never seen is unknown, not idle; so is one with a hostile name
    assert await activity.idle("acme/never-seen", unique_ns, 5.0) is None
    assert await activity.idle('x"}) or vector(0) #', unique_ns, 5.0) is None
    # an unreachable Prometheus is unknown
    assert await RequestActivity(PrometheusConnect(url="http://127.0.0.1:9"), timeout=2).idle(model, unique_ns,
                                                                                              5.0) is None
