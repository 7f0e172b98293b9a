"""The test harness itself works: real Prometheus sees the emulator; kopf runs against the local API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from prometheus_api_client import PrometheusConnect

from operator_harness import wait_for
from wva.sim.local_api import VA_RESOURCE, LocalKubernetesAPI, request_method
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator


@pytest.mark.prometheus
async def test_prometheus_returns_what_the_emulated_pod_exposes(
    prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    vllm_emulator.add_pod("pod-a", unique_ns, "org/model:v1", kv_cache_usage=0.42, num_requests_waiting=3)
    query = f'max by (pod) (vllm:kv_cache_usage_perc{{namespace="{unique_ns}"}})'
    await prometheus.wait_for(query, lambda r: r[0]["value"][1] == "0.42")

    client = PrometheusConnect(url=prometheus.url, disable_ssl=True)
    result = await asyncio.to_thread(client.custom_query, query)
    assert [(s["metric"]["pod"], s["value"][1]) for s in result] == [("pod-a", "0.42")]

    vllm_emulator.set_values(unique_ns, "pod-a", kv_cache_usage=0.9)
    await prometheus.wait_for(query, lambda r: r[0]["value"][1] == "0.9")
    waiting = await asyncio.to_thread(
        client.custom_query, f'vllm:num_requests_waiting{{namespace="{unique_ns}",model_name="org/model:v1"}}'
    )
    assert waiting[0]["value"][1] == "3"


@contextlib.asynccontextmanager
async def running_operator(registry: kopf.OperatorRegistry) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=15)


@pytest.mark.looptime
async def test_kopf_handles_a_created_va_and_its_status_patch_lands(kube_api: LocalKubernetesAPI) -> None:
    registry = kopf.OperatorRegistry()
    seen: list[str] = []

    @kopf.on.login(registry=registry)  # type: ignore[arg-type]
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube_api.base_url, insecure=True)

    @kopf.on.startup(registry=registry)  # type: ignore[arg-type]
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        settings.watching.server_timeout = 60

    @kopf.on.create("llmd.ai", "v1alpha1", "variantautoscalings", registry=registry)  # type: ignore[arg-type]
    def on_create(name: str, patch: kopf.Patch, **_: Any) -> None:
        seen.append(name)
        patch.status["observedModel"] = "handled"

    async with running_operator(registry):
        kube_api.objects[VA_RESOURCE, "ns1", "va1"] = {
            "apiVersion": "llmd.ai/v1alpha1",
            "kind": "VariantAutoscaling",
            "metadata": {"name": "va1", "namespace": "ns1", "resourceVersion": "1", "uid": "u1"},
            "spec": {"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": "d1"}},
        }
        await wait_for(
            lambda: kube_api.objects[VA_RESOURCE, "ns1", "va1"].get("status", {}).get("observedModel")
            == "handled"
        )
    assert seen == ["va1"]
    patches = [r for r in kube_api if request_method(r) == "PATCH" and r.subresource == "status"]
    assert patches, "kopf wrote nothing through the API"
