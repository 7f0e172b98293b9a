"""1,000 VAs created and deleted in bursts: nothing the operator keeps per VA outlives the VA.

The bursts go through wva's real kopf handler functions, inventory, mapper, engine, status writer,
gauges and collector v2 (with its cache); only the network ends are replaced (Prometheus answers
every query with one sample per pod, the API server accepts every write), which keeps 2,000 VAs
well under a few seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import kopf
import pytest

import wva.handlers as handlers
from operator_harness import OPERATOR_NAMESPACE
from reliability.support import AcceptingKube, PodPerModelProm
from wva.collector.v2 import PrometheusSource
from wva.runtime import Runtime
from wva.settings import Settings

N = 1000
NS = "burst"


def _va(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": name},
            "modelID": f"acme/{name}",
            "variantCost": "10.0",
            "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": 256}]},
        },
    }


def _deployment(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"replicas": 1}, "status": {"replicas": 1}}


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{name}-5d9f7c6b4-abcde",
            "namespace": NS,
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{name}-5d9f7c6b4", "controller": True}],
        },
        "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _per_va_state(runtime: Runtime) -> dict[str, int]:
    engine, writer = runtime.engine, runtime.engine.status_writer
    return {
        **runtime.inventory.sizes(),
        "gauge_series": len(runtime.emitter.series()),
        "status_locks": len(writer._locks),
        "status_heartbeats": len(writer._last_full_write),
        "reported_problems": len(engine._reported_problems),
        "model_sources": len(engine._sources),
        "source_series": len(engine._source_series),
    }


@pytest.mark.parametrize("reports_source", [False, True], ids=["single-source", "failover-source"])
async def test_thousand_vas_in_bursts_leave_nothing_behind(reports_source: bool) -> None:
    """Two bursts of 1,000 VAs (each with its Deployment and pod), one cycle each, then all deleted:
    every cycle decides for every VA, and afterwards the inventory, the pod->VA mapper, the status
    writer, the engine's per-VA state and the gauge series are back to empty. The collector cache stays
    within its bound even though 2,000 different models passed through it."""
    settings = Settings.from_env(
        {"PROMETHEUS_BASE_URL": "http://prometheus.invalid:9090", "POD_NAMESPACE": OPERATOR_NAMESPACE,
         "LEADER_ELECTION": "false", "COLLECTOR_V2": "true"}
    )
    prom, kube = PodPerModelProm(NS), AcceptingKube()
    runtime = Runtime.build(settings, prom=prom, kube=kube, serve_http=False, run_engine_loop=False)  # type: ignore[arg-type]
    memo = kopf.Memo(runtime=runtime)
    if reports_source:  # a collector that can fail over reports the source per model (engine hook)
        runtime.collector.source_for = lambda _model, _ns: "prometheus"  # type: ignore[attr-defined]
    await runtime.start()
    try:
        baseline = _per_va_state(runtime)
        source = runtime.collector._registry.get("prometheus")  # type: ignore[attr-defined]
        assert isinstance(source, PrometheusSource)
        for burst in range(2):
            names = [f"b{burst}-va-{i:04d}" for i in range(N)]
            prom.models = set(names)
            for name in names:
                await handlers.deployment_event(type="ADDED", body=_deployment(name), memo=memo)
                await handlers.pod_event(type="ADDED", body=_pod(name), memo=memo)
                await handlers.variant_event(type="ADDED", body=_va(name), memo=memo)
            assert runtime.inventory.sizes()["variants"] == N
            report = await runtime.engine.run_cycle()
            assert len(report.decisions) == N and not report.group_errors
            targets = Counter(d.target for d in report.decisions.values())
            assert targets == {2: N}, (targets, next(iter(report.decisions.values())))  # saturated: one step up each
            assert len(runtime.emitter.series()) == N
            for name in names:
                await handlers.variant_event(type="DELETED", body=_va(name), memo=memo)
                await handlers.pod_event(type="DELETED", body=_pod(name), memo=memo)
                await handlers.deployment_event(type="DELETED", body=_deployment(name), memo=memo)
            report = await runtime.engine.run_cycle()
            assert report.decisions == {}
            assert _per_va_state(runtime) == baseline, f"state left behind after burst {burst}"
            assert len(source.cache) <= source.cache.maxsize
        assert prom.queries > 0 and kube.calls["patch", "status"] >= 2 * N
    finally:
        await runtime.stop()


class GatedProm(PodPerModelProm):
    """Holds every query until ``release`` is set, so a test can act while a cycle is in flight."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.entered, self.release = threading.Event(), threading.Event()

    def custom_query(self, query: str, params: Any = None, timeout: Any = None) -> list[dict[str, Any]]:
        self.entered.set()
        assert self.release.wait(30), "the test never released the query"
        return super().custom_query(query, params, timeout)


async def test_a_va_deleted_while_a_cycle_runs_leaves_nothing_behind() -> None:
    """The DELETED event of a VA can arrive while a cycle is collecting its group's metrics; the cycle
    then decides for the VA it read before. It must not bring back what the event removed (the gauge
    series, the status writer's and the engine's per-VA state): found by the soak benchmark, where every
    deletion that met a cycle left one ``wva_desired_replicas`` series behind for good."""
    settings = Settings.from_env(
        {"PROMETHEUS_BASE_URL": "http://prometheus.invalid:9090", "POD_NAMESPACE": OPERATOR_NAMESPACE,
         "LEADER_ELECTION": "false", "COLLECTOR_V2": "true"}
    )
    prom, kube = GatedProm(NS), AcceptingKube()
    runtime = Runtime.build(settings, prom=prom, kube=kube, serve_http=False, run_engine_loop=False)  # type: ignore[arg-type]
    memo = kopf.Memo(runtime=runtime)
    prom.release.set()
    await runtime.start()
    try:
        baseline = _per_va_state(runtime)
        names = ["kept", "gone"]
        prom.models = set(names)
        for name in names:
            await handlers.deployment_event(type="ADDED", body=_deployment(name), memo=memo)
            await handlers.pod_event(type="ADDED", body=_pod(name), memo=memo)
            await handlers.variant_event(type="ADDED", body=_va(name), memo=memo)
        prom.release.clear()
        prom.entered.clear()
        cycle = asyncio.create_task(runtime.engine.run_cycle())
        assert await asyncio.to_thread(prom.entered.wait, 30), "the cycle sent no query"
        await handlers.variant_event(type="DELETED", body=_va("gone"), memo=memo)
        assert "gone" not in {name for _ns, name in runtime.emitter.series()}
        prom.release.set()
        report = await cycle
        assert not report.group_errors
        assert {name for _ns, name in report.decisions} == {"kept", "gone"}  # it did decide for both
        assert {name for _ns, name in runtime.emitter.series()} == {"kept"}
        state = _per_va_state(runtime)
        for key in ("gauge_series", "status_locks", "status_heartbeats"):
            assert state[key] == baseline[key] + 1, (key, state)
        assert runtime.engine.decisions.keys() == [(NS, "kept")]
        assert runtime.engine.status_writer.tracked() == {(NS, "kept")}
        # the next cycles decide for the live VA only, and nothing of the deleted one comes back
        report = await runtime.engine.run_cycle()
        assert {name for _ns, name in report.decisions} == {"kept"}
        assert {name for _ns, name in runtime.emitter.series()} == {"kept"}
    finally:
        prom.release.set()
        await runtime.stop()
