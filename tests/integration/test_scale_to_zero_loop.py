"""Scale to zero and back, through the whole operator: kopf, the engine on its own loop, the real
Prometheus for the request counters, an emulated EPP for the gateway queue, direct actuation.

An idle model goes to 0 after its retention window (ScaleToZeroIdle); the EPP's queue rises and the
scale-from-zero poller brings its cheapest variant to 1 within a poll; the engine then decides it
with the normal rules again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from operator_harness import OPERATOR_NAMESPACE, operator_settings, running_operator, wait_for
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.epp import EppEmulator
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

MODEL = "acme/zero-loop-8b"
CHEAP, PRICEY = "zero-loop-l4", "zero-loop-h100"

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _code(api: LocalKubernetesAPI, ns: str, name: str) -> str | None:
    try:
        va: dict[str, Any] = api.objects["llmd.ai/v1alpha1/variantautoscalings", ns, name]
    except KeyError:
        return None
    return ((va.get("status") or {}).get("lastDecision") or {}).get("reason")


async def test_an_idle_model_goes_to_zero_and_the_gateway_queue_brings_it_back(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
    epp: EppEmulator,
) -> None:
    ns = unique_ns
    epp.set_queue(MODEL, 0)
    settings = operator_settings(
        kube_api, prometheus.url, COLLECTOR_V2="true", ACTUATION_MODE="direct", GLOBAL_OPT_INTERVAL="1s",
        WVA_EPP_METRICS_SOURCE="pods", WVA_EPP_METRICS_URLS=f"{ns}={epp.metrics_url}",
    )
    runtime = Runtime.build(settings, serve_http=False)
    idle = {"kv_cache_usage": 0.0, "num_requests_waiting": 0, "num_requests_running": 0}
    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(idle)) as cluster:
        await cluster.request("POST", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": settings.saturation_config_map_name, "namespace": OPERATOR_NAMESPACE},
            "data": {"default": "scaleToZero: true\nscaleToZeroRetention: 4s\nscaleDownStabilizationWindow: 0s\n"},
        })
        for name, cost in ((CHEAP, "5.0"), (PRICEY, "20.0")):
            await cluster.create_deployment(name, ns, MODEL, replicas=1)
            await cluster.create_va(name, ns, MODEL, name, "A100", cost=cost, min_replicas=1)
        await cluster.reconcile()
        await prometheus.wait_for(f'vllm:request_success_total{{namespace="{ns}"}}', lambda r: len(r) == 2,
                                  timeout=60.0)

        async with running_operator(runtime):
            async def replicas(name: str) -> int:
                return int((await cluster.get_deployment(name, ns))["spec"]["replicas"])

            async def both_at_zero() -> bool:
                return await replicas(CHEAP) == 0 and await replicas(PRICEY) == 0

            # idle: no request served, none running or waiting, for the whole 4 s window
            await _poll_async(both_at_zero, 60, "both variants at zero")
            # direct actuation scales first and writes the status after, so the reason can trail by a moment
            await wait_for(lambda: _code(kube_api, ns, CHEAP) in ("ScaleToZeroIdle", "HoldAtZero"), 15,
                           "the cheap variant's zero reason")
            await cluster.reconcile()
            await wait_for(lambda: _code(kube_api, ns, PRICEY) == "HoldAtZero", 15, "held at zero")
            assert runtime.engine.zero_groups() == [(ns, MODEL, CHEAP)]

            # requests queue at the gateway: the cheapest variant comes back within a poll or so
            rose = time.monotonic()
            epp.set_queue(MODEL, 3)

            async def cheap_is_back() -> bool:
                return await replicas(CHEAP) == 1

            await _poll_async(cheap_is_back, 10, "the cheap variant at 1")
            latency = time.monotonic() - rose
            assert await replicas(PRICEY) == 0
            assert latency < 3.0, latency
            # the pod starts and serves; the engine decides it with the normal rules again
            idle["num_requests_running"] = 1
            await cluster.reconcile()
            epp.set_queue(MODEL, 0)
            await wait_for(lambda: _code(kube_api, ns, CHEAP) not in (None, "ScaleToZeroIdle", "HoldAtZero",
                                                                     "ScaleFromZeroQueued"),
                           30, "a normal decision for the cheap variant")
            assert await replicas(CHEAP) >= 1
            print(f"\nscale-from-zero latency through the operator: {latency * 1000:.0f} ms")


async def _poll_async(predicate: Any, timeout: float, what: str) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
