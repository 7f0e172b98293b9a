"""Scale from zero end to end: an emulated EPP queue, read through real Prometheus or scraped directly,
wakes a Deployment at zero in the embedded Kubernetes API through the real scale-subresource patch.

Each test measures the latency from the queue rising in the EPP to the patch being acknowledged and
prints it (``pytest -s`` shows it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry
from urllib3.util.retry import Retry

from operator_harness import wait_for
from wva.actuator.metrics import OperatorMetrics
from wva.collector.v2.epp import (
    EPP_QUEUE_SIZE,
    EppQueueReader,
    EppScrapingSource,
    EppTarget,
    PrometheusEppSource,
    QueueState,
)
from wva.kube import KubeClient, build_api_client
from wva.scalefromzero import DEFAULT_INTERVAL, ScaleFromZeroPoller, ZeroModel
from wva.sim.cluster import SimulatedCluster
from wva.sim.epp import EppEmulator
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

MODEL, OTHER = "acme/llama-8b", "acme/never-asked"
WOKEN, IDLE = "llama-8b-l4", "never-asked-l4"
MAX_LATENCY = 3.0  # seconds from the queue rising to the patch; measured far below this


@pytest_asyncio.fixture()
async def cluster(kube_api: LocalKubernetesAPI, unique_ns: str) -> AsyncIterator[SimulatedCluster]:
    async with SimulatedCluster(kube_api.base_url, VLLMEmulator()) as sim:
        await sim.create_deployment(WOKEN, unique_ns, MODEL, replicas=0)
        await sim.create_deployment(IDLE, unique_ns, OTHER, replicas=0)
        yield sim


async def wake_latency(cluster: SimulatedCluster, kube_api: LocalKubernetesAPI, ns: str, source: EppQueueReader,
                       epp: EppEmulator) -> float:
    """Run the poller against ``source``: nothing wakes on a zero or a missing queue; a queued request
    wakes the Deployment exactly once. Returns the seconds from the queue rising to the patch."""
    kube = KubeClient(build_api_client(kube_api.base_url))
    patched: list[tuple[str, float]] = []

    async def models_at_zero() -> list[ZeroModel]:  # what the watched state would say, read from the API
        at_zero = []
        for deployment, model in ((WOKEN, MODEL), (IDLE, OTHER)):
            body = await cluster.get_deployment(deployment, ns)
            if int((body.get("spec") or {}).get("replicas") or 0) == 0:
                at_zero.append(ZeroModel(ns, model, deployment))
        return at_zero

    async def scale_up(namespace: str, deployment: str, replicas: int) -> None:
        await kube.patch_deployment_scale(namespace, deployment, replicas)
        patched.append((deployment, time.monotonic()))

    registry = CollectorRegistry()
    poller = ScaleFromZeroPoller(source, models_at_zero, scale_up, metrics=OperatorMetrics(registry))
    await poller.start()
    try:
        await wait_for(lambda: poller.stats.reads >= 4, timeout=10, what="four polls")
        last = await source.read_queues([(ns, MODEL), (ns, OTHER)])
        assert last[(ns, MODEL)].state is QueueState.EMPTY  # the EPP has seen the model: a confirmed zero
        assert last[(ns, OTHER)].state is QueueState.UNKNOWN  # no series at all
        assert patched == []

        rose = time.monotonic()
        epp.set_queue(MODEL, 3)
        await wait_for(lambda: patched, timeout=MAX_LATENCY + 5, what="the scale-from-zero patch")
        latency = patched[0][1] - rose
        body = await cluster.get_deployment(WOKEN, ns)
        assert body["spec"]["replicas"] == 1
        await cluster.reconcile()  # the simulated ReplicaSet controller starts the pod
        assert len(cluster.deployments[(ns, WOKEN)].pods) == 1

        polls = poller.stats.polls
        await wait_for(lambda: poller.stats.polls >= polls + 8, timeout=10, what="eight more polls")
        assert [deployment for deployment, _t in patched] == [WOKEN]  # once, and never the unknown model
        assert (await cluster.get_deployment(IDLE, ns))["spec"]["replicas"] == 0
        labels = {"namespace": ns, "model_id": MODEL, "outcome": "scaled"}
        assert registry.get_sample_value("wva_scale_from_zero_total", labels) == 1
    finally:
        await poller.stop()
        kube.close()
    assert latency < MAX_LATENCY, f"latency {latency:.3f}s"
    return latency


@pytest.mark.prometheus
async def test_prometheus_queue_wakes_a_deployment_at_zero(
    epp: EppEmulator, cluster: SimulatedCluster, kube_api: LocalKubernetesAPI, unique_ns: str
) -> None:
    epp.set_queue(MODEL, 0)
    # the EPP adds no namespace; in a cluster Prometheus attaches the target's, as this static label does
    scrape = (
        "  - job_name: epp\n"
        "    scrape_interval: 100ms\n"
        "    scrape_timeout: 100ms\n"
        "    static_configs:\n"
        f'      - targets: ["127.0.0.1:{epp.port}"]\n'
        f'        labels: {{namespace: "{unique_ns}"}}\n'
    )
    prometheus = LocalPrometheus(targets=[], scrape_interval=0.1, scrape_configs=scrape)
    await asyncio.to_thread(prometheus.start)
    source = PrometheusEppSource(PrometheusConnect(url=prometheus.url, disable_ssl=True, retry=Retry(total=0)))
    try:
        await prometheus.wait_for(f'{EPP_QUEUE_SIZE}{{namespace="{unique_ns}"}}', timeout=25.0)
        latency = await wake_latency(cluster, kube_api, unique_ns, source, epp)
    finally:
        await source.stop()
        await asyncio.to_thread(prometheus.close)
    print(f"\nscale-from-zero latency via Prometheus (scrape 100ms, poll {DEFAULT_INTERVAL * 1000:.0f}ms): "
          f"{latency * 1000:.0f} ms")


async def test_scraped_queue_wakes_a_deployment_at_zero(
    epp: EppEmulator, cluster: SimulatedCluster, kube_api: LocalKubernetesAPI, unique_ns: str
) -> None:
    epp.set_queue(MODEL, 0)
    source = EppScrapingSource([EppTarget(epp.metrics_url, unique_ns)])
    try:
        latency = await wake_latency(cluster, kube_api, unique_ns, source, epp)
    finally:
        await source.stop()
    assert latency < DEFAULT_INTERVAL + 1.0  # one poll interval, plus the scrape and the patch
    print(f"\nscale-from-zero latency via direct EPP scrape (poll {DEFAULT_INTERVAL * 1000:.0f}ms): "
          f"{latency * 1000:.0f} ms")


async def test_a_failing_epp_endpoint_wakes_nothing_until_it_answers(
    epp: EppEmulator, cluster: SimulatedCluster, kube_api: LocalKubernetesAPI, unique_ns: str
) -> None:
    epp.set_queue(MODEL, 3)
    epp.fault = "error"
    source = EppScrapingSource([EppTarget(epp.metrics_url, unique_ns)])
    kube = KubeClient(build_api_client(kube_api.base_url))
    calls: list[str] = []

    asked: list[str] = []

    async def scale_up(namespace: str, deployment: str, replicas: int) -> None:
        asked.append(deployment)
        await kube.patch_deployment_scale(namespace, deployment, replicas)
        calls.append(deployment)  # after the patch: the assertion below reads the Deployment back

    poller = ScaleFromZeroPoller(source, lambda: [ZeroModel(unique_ns, MODEL, WOKEN)] if not asked else [], scale_up)
    await poller.start()
    try:
        await wait_for(lambda: poller.stats.reads >= 4, timeout=10, what="four reads")
        assert asked == []  # the queue is unknown while the scrape fails: never a guess
        epp.fault = None
        await wait_for(lambda: calls, timeout=5, what="the scale-up once the EPP answers")
        assert (await cluster.get_deployment(WOKEN, unique_ns))["spec"]["replicas"] == 1
    finally:
        await poller.stop()
        await source.stop()
        kube.close()
