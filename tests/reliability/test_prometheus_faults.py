"""Prometheus killed, restarted, slow, failing, returning hostile values or series without ``pod``.

Every scenario first lets the operator make a real decision (a scale-up the HPA has not applied
yet, so the held decision differs from the current replica count), then injects its fault through
the proxy and proves the fault happened (the proxy counted it).
"""

from __future__ import annotations

import pytest

from reliability.fault_proxy import FaultProxy
from reliability.support import SATURATED, STEADY, Fleet, fleet, wait_prometheus_pods
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

pytestmark = [pytest.mark.prometheus]

A, B = "alpha", "beta"
V1_NO_CACHE = {"PROMETHEUS_METRICS_CACHE_ENABLED": "false"}  # cycles run back to back in these tests


async def _decided_up(f: Fleet, prometheus: LocalPrometheus) -> None:
    """Both VAs saturated at 2 replicas: the first cycle decides 3 for each (HPA mode: nothing applies it)."""
    await wait_prometheus_pods(prometheus, f.namespace, pods=4, kv=0.9)
    report = await f.cycle()
    assert not report.group_errors, report.group_errors
    assert (f.desired(A), f.desired(B)) == (3, 3)
    assert f.gauge(A) == 3


def _assert_held(f: Fleet, name: str, replicas: int) -> None:
    """The last decision is in force: status, gauge and the report all say ``replicas``."""
    assert f.desired(name) == replicas
    assert f.gauge(name) == replicas
    decision = f.reports[-1].decisions[(f.namespace, name)]
    assert decision.target == replicas and not decision.decided


async def _recovers(f: Fleet, names: list[str]) -> None:
    """Within two cycles after the fault clears, every VA has metrics and a fresh decision again."""
    for _ in range(2):
        report = await f.cycle()
        if not report.group_errors and all(
            f.condition(n, "MetricsAvailable")["status"] == "True" for n in names
        ):
            break
    assert not f.reports[-1].group_errors, f.reports[-1].group_errors
    for name in names:
        assert f.condition(name, "MetricsAvailable")["status"] == "True"
        assert f.reports[-1].decisions[(f.namespace, name)].decided


@pytest.mark.parametrize("collector_v2", ["true", "false"], ids=["v2", "v1"])
@pytest.mark.parametrize("mode", ["error", "down", "slow"])
async def test_prometheus_failing_holds_decisions_and_recovers(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    fault_proxy: FaultProxy,
    unique_ns: str,
    mode: str,
    collector_v2: str,
) -> None:
    """Prometheus answering 500, dropping connections or answering past the query timeout: the operator
    stays up, every VA keeps its last decision (status and gauge), MetricsAvailable=False with reason
    PrometheusError names the cause, and a fresh decision is made within two cycles of recovery."""
    async with fleet(
        kube_api, fault_proxy.url, vllm_emulator, unique_ns, [A, B], load=SATURATED,
        WVA_PROMETHEUS_QUERY_TIMEOUT="1s", COLLECTOR_V2=collector_v2, main_config=V1_NO_CACHE,
    ) as f:
        await _decided_up(f, prometheus)
        fault_proxy.set_mode(mode, delay=3.0)
        report = await f.cycle()
        assert fault_proxy.injected[mode] > 0
        assert set(report.group_errors) == {(f"acme/{A}", f.namespace, "A100"), (f"acme/{B}", f.namespace, "A100")}
        for name in (A, B):
            _assert_held(f, name, 3)
            cond = f.condition(name, "MetricsAvailable")
            assert (cond["status"], cond["reason"]) == ("False", "PrometheusError")
            assert "prometheus" in cond["message"].lower() or "query" in cond["message"].lower()
            ready = f.condition(name, "OptimizationReady")
            assert ready["status"] == "False" and "holding the last decision of 3" in ready["message"]
        assert f.runtime.started and f.runtime.engine.cycles == 2
        fault_proxy.set_mode("pass")
        await _recovers(f, [A, B])


async def test_prometheus_killed_and_restarted(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    fault_proxy: FaultProxy,
    unique_ns: str,
) -> None:
    """The Prometheus process itself stops (connection refused behind the proxy) and comes back on the
    same port with its data: decisions are held while it is gone and fresh ones follow within two
    cycles of its return."""
    async with fleet(kube_api, fault_proxy.url, vllm_emulator, unique_ns, [A, B], load=SATURATED) as f:
        await _decided_up(f, prometheus)
        queries, forwarded = len(fault_proxy.queries), fault_proxy.forwarded
        prometheus.stop()
        try:
            assert not prometheus.running
            report = await f.cycle()
            assert report.group_errors
            # queries were attempted while it was down, and none reached a Prometheus
            assert len(fault_proxy.queries) > queries and fault_proxy.forwarded == forwarded
            for name in (A, B):
                _assert_held(f, name, 3)
                assert f.condition(name, "MetricsAvailable")["reason"] == "PrometheusError"
        finally:
            prometheus.start()
        await wait_prometheus_pods(prometheus, f.namespace, pods=4, kv=0.9)
        await _recovers(f, [A, B])


@pytest.mark.parametrize("collector_v2", ["true", "false"], ids=["v2", "v1"])
@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-1", "1e308"])
async def test_hostile_metric_values_never_scale_down(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    fault_proxy: FaultProxy,
    unique_ns: str,
    value: str,
    collector_v2: str,
) -> None:
    """Every sample rewritten to NaN, ±Inf, a negative or a huge number: no VA is scaled below its last
    decision, no status write is rejected (the stored status stays schema-valid) and the operator
    keeps cycling; honest values bring normal decisions back within two cycles.

    The fleet starts steady (decision == current, no pending decision that would mask a scale-down)."""
    async with fleet(kube_api, fault_proxy.url, vllm_emulator, unique_ns, [A, B], load=STEADY,
                     COLLECTOR_V2=collector_v2, main_config=V1_NO_CACHE) as f:
        await wait_prometheus_pods(prometheus, f.namespace, pods=4, kv=0.6)
        await f.cycle()
        assert (f.desired(A), f.desired(B)) == (2, 2)
        fault_proxy.set_mode("rewrite", value=value)
        for _ in range(2):
            await f.cycle()
            for name in (A, B):
                assert f.desired(name) >= 2, f"{name} scaled down on {value}"
                assert f.gauge(name) == f.desired(name)
                assert f.desired(name) <= 3  # at most one step per cycle group, bounded by maxReplicas
        assert fault_proxy.injected["rewrite"] > 0
        assert f.runtime.engine.status_writer.failed_writes == 0
        fault_proxy.set_mode("pass")
        await _recovers(f, [A, B])


@pytest.mark.parametrize("collector_v2", ["true", "false"], ids=["v2", "v1"])
async def test_series_without_pod_label_are_not_load(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    fault_proxy: FaultProxy,
    unique_ns: str,
    collector_v2: str,
) -> None:
    """Series that lost their ``pod`` label cannot be attributed to a replica: they are ignored, their
    absence never reads as idle capacity (no scale-down), and attribution resumes within two cycles."""
    async with fleet(kube_api, fault_proxy.url, vllm_emulator, unique_ns, [A, B], load=SATURATED,
                     COLLECTOR_V2=collector_v2, main_config=V1_NO_CACHE) as f:
        await _decided_up(f, prometheus)
        fault_proxy.set_mode("strip_pod")
        await f.cycle()
        assert fault_proxy.injected["strip_pod"] > 0
        for name in (A, B):
            assert f.desired(name) == 3
            assert f.gauge(name) == 3
        fault_proxy.set_mode("pass")
        await _recovers(f, [A, B])
