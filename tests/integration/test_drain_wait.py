"""The optional drain wait (WVA_DRAIN_TIMEOUT) as the operator wires it: before a direct scale-down the
victim's requests in flight are read by a fresh scrape of the pod (the real vLLM emulator over HTTP),
and the replica count drops once the victim reports none, or when the timeout passes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from operator_harness import wait_for
from wva.runtime import Runtime
from wva.settings import Settings
from wva.sim.vllm import VLLMEmulator

MODEL = "acme/drain-8b"
DEPLOYMENT = "drain-l4"


def _settings(emulator: VLLMEmulator, **env: str) -> Settings:
    return Settings.from_env({
        "PROMETHEUS_BASE_URL": "http://127.0.0.1:9",  # never asked here
        "WVA_KUBE_API_URL": "http://127.0.0.1:9",
        "POD_NAMESPACE": "wva-system",
        "LEADER_ELECTION": "false",
        "ACTUATION_MODE": "direct",
        "WVA_POD_METRICS_URL_TEMPLATE": emulator.base_url + "/pods/{namespace}/{pod}/metrics",
        **env,
    })


def _pod(ns: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": {"pod-template-hash": "7d9f"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": f"{DEPLOYMENT}-7d9f", "controller": True}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _runtime(emulator: VLLMEmulator, ns: str, **env: str) -> Runtime:
    runtime = Runtime.build(_settings(emulator, **env), serve_http=False, run_engine_loop=False)
    runtime.inventory.apply_variant({
        "metadata": {"name": DEPLOYMENT, "namespace": ns},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": DEPLOYMENT}, "modelID": MODEL,
                 "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 8}]}},
    })
    runtime.inventory.apply_deployment({"metadata": {"name": DEPLOYMENT, "namespace": ns}, "spec": {"replicas": 2},
                                        "status": {"replicas": 2, "readyReplicas": 2}})
    for name in ("busy", "quiet"):
        runtime.inventory.apply_pod(_pod(ns, f"{DEPLOYMENT}-7d9f-{name}"))
    return runtime


def test_the_drain_wait_is_wired_only_when_asked_for(vllm_emulator: VLLMEmulator, unique_ns: str) -> None:
    off = _runtime(vllm_emulator, unique_ns)
    assert off.engine.drain is not None and off.engine.drain.in_flight is None  # annotations only
    on = _runtime(vllm_emulator, unique_ns, WVA_DRAIN_TIMEOUT="30s")
    assert on.engine.drain is not None and on.engine.drain.in_flight is not None
    assert on.engine.drain.drain_timeout == 30.0
    hpa = _runtime(vllm_emulator, unique_ns, WVA_DRAIN_TIMEOUT="30s", ACTUATION_MODE="hpa")
    assert hpa.engine.drain is None  # the HPA scales; wva never drops a replica count itself


async def test_the_scale_down_waits_until_the_victim_has_no_request_in_flight(
    vllm_emulator: VLLMEmulator, unique_ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    ns = unique_ns
    busy, quiet = f"{DEPLOYMENT}-7d9f-busy", f"{DEPLOYMENT}-7d9f-quiet"
    vllm_emulator.add_pod(busy, ns, MODEL, kv_cache_usage=0.6, num_requests_running=7)
    vllm_emulator.add_pod(quiet, ns, MODEL, kv_cache_usage=0.2, num_requests_running=1)
    runtime = _runtime(vllm_emulator, ns, WVA_DRAIN_TIMEOUT="30s")
    scaler = runtime.engine.drain
    assert scaler is not None and scaler.in_flight is not None
    assert await scaler.in_flight(ns, busy) == 7.0 and await scaler.in_flight(ns, "not-a-pod") is None
    written: list[tuple[str, dict[str, str | None]]] = []

    class Annotations:
        async def patch_pod_annotations(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
            written.append((name, dict(annotations)))

    scaler.kube = Annotations()
    scaler.poll_interval = 0.05
    fetch = scaler.in_flight
    polls: list[str] = []

    async def counting(namespace: str, pod: str) -> float | None:
        polls.append(pod)
        return await fetch(namespace, pod)

    scaler.in_flight = counting
    try:
        with caplog.at_level(logging.INFO, logger="wva.actuator.drain"):
            task = asyncio.create_task(scaler.prepare_scale_down(ns, DEPLOYMENT, 2, 1, {}))
            # the quiet pod is the victim (fewest requests in flight); it still has one: the wait goes on
            await wait_for(lambda: polls.count(quiet) >= 3, 10, "the victim polled while it drains")
            assert not task.done()
            costs = {name: int(a["controller.kubernetes.io/pod-deletion-cost"] or 0) for name, a in written}
            assert costs[quiet] < costs[busy]
            vllm_emulator.set_values(ns, quiet, num_requests_running=0)
            await asyncio.wait_for(task, 10)
        assert scaler.stats["drained"] == 1
        assert any("Drain wait done" in r.getMessage() and quiet in r.getMessage() for r in caplog.records)

        # a victim that never drains: the scale-down goes ahead when the timeout passes, and says so
        vllm_emulator.set_values(ns, quiet, num_requests_running=2)
        scaler.drain_timeout = 0.3
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="wva.actuator.drain"):
            await asyncio.wait_for(scaler.prepare_scale_down(ns, DEPLOYMENT, 2, 1, {}), 10)
        assert scaler.stats["drain_timeout"] == 1
        assert any("Drain wait timed out" in r.getMessage() and f"{quiet}=2" in r.getMessage()
                   for r in caplog.records)
    finally:
        if runtime.drain_source is not None:
            await runtime.drain_source.stop()
        vllm_emulator.remove_pod(ns, busy)
        vllm_emulator.remove_pod(ns, quiet)
