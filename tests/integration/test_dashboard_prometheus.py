"""Every query of the Grafana dashboard, its variables and the alert rules, run against a real
Prometheus that scrapes a running wva (and the emulated vLLM pods) the way a cluster does.

The operator's target carries a ``namespace`` label, so wva's own ``namespace`` label arrives as
``exported_namespace``, as behind a ServiceMonitor. Grafana's variables are replaced with the values
Grafana would send for this test's namespace, model and variants: a query that returns nothing means
a wrong metric name, label or selector.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest

import monitoring
from operator_harness import OPERATOR_NAMESPACE, operator_settings, running_operator, wait_for
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus, free_port
from wva.sim.vllm import VLLMEmulator

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

MODEL = "acme/dash-8b"
CHEAP, PREMIUM = "dash-cheap", "dash-premium"

# Panels whose series exist only after an event this test does not cause; for these the metric
# names must still be in the operator's exposition (HELP/TYPE lines).
EVENT_ONLY: dict[str, str] = {
    "Learnt cold-start time": "wva_cold_start_seconds appears once wva has seen a pod of the variant become Ready "
    "some time after its creation; the simulated pods are Ready the second they are created",
}


def _scrape_configs(vllm_port: int, wva_port: int) -> str:
    return (
        "  - job_name: vllm\n"
        "    honor_labels: true\n"
        "    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{vllm_port}']\n"
        "  - job_name: wva\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{wva_port}']\n"
        f"        labels: {{namespace: {OPERATOR_NAMESPACE}, pod: wva-test-0}}\n"
    )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def _wait_all_seen(runtime: Runtime, prometheus: LocalPrometheus, ns: str, replicas: dict[str, int]) -> None:
    def ready() -> bool:
        if runtime.inventory.sizes()["pods"] < sum(replicas.values()):
            return False
        for name, count in replicas.items():
            dep = runtime.inventory.deployment(ns, name)
            if dep is None or dep.ready_replicas != count:
                return False
        return True

    await wait_for(ready, what="ready replicas in the inventory")
    total = sum(replicas.values())
    query = f'count(max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{namespace="{ns}"}}[1m])))'
    await prometheus.wait_for(query, lambda r: int(float(r[0]["value"][1])) == total, timeout=30.0)


@pytest.fixture()
def own_prometheus(vllm_emulator: VLLMEmulator) -> Any:
    port = free_port()
    server = LocalPrometheus(targets=[], scrape_configs=_scrape_configs(vllm_emulator.port, port))
    server.start()
    try:
        yield server, port
    finally:
        server.close()


async def test_every_dashboard_query_and_alert_expression_returns_series_from_a_running_wva(
    kube_api: LocalKubernetesAPI, vllm_emulator: VLLMEmulator, own_prometheus: Any, unique_ns: str
) -> None:
    prometheus, metrics_port = own_prometheus
    ns = unique_ns
    load = {"kv_cache_usage": 0.95, "num_requests_waiting": 2}
    settings = operator_settings(
        kube_api, prometheus.url, COLLECTOR_V2="true", ACTUATION_MODE="direct", METRICS_SOURCE="auto",
        WVA_POD_METRICS_URL_TEMPLATE=vllm_emulator.base_url + "/pods/{namespace}/{pod}/metrics",
        # plain HTTP: this embedded API answers no TokenReview; Prometheus scraping wva over HTTPS with a
        # token is tested on the real control plane (tests/controlplane/test_cp_metrics_auth.py)
        WVA_METRICS_SECURE="false",
    )
    runtime = Runtime.build(settings, metrics_port=metrics_port, probe_port=0, run_engine_loop=False)
    board = monitoring.load_dashboard()

    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(load)) as cluster:
        await cluster.create_deployment(CHEAP, ns, MODEL, replicas=2)
        await cluster.create_deployment(PREMIUM, ns, MODEL, replicas=1)
        await cluster.reconcile()
        # the cheap variant is at its maximum: the step goes to the premium one (a scale event)
        await cluster.create_va(CHEAP, ns, MODEL, CHEAP, "L4", cost="5.0", max_replicas=2)
        await cluster.create_va(PREMIUM, ns, MODEL, PREMIUM, "H100", cost="20.0", max_replicas=4)
        # one invalid saturation entry: wva_config_errors{kind="saturation_config"} = 1
        await cluster.request("POST", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "saturation-scaling-config", "namespace": OPERATOR_NAMESPACE},
            "data": {"default": "kvCacheThreshold: 0.8\n", "broken": "model_id: x\nkvCacheThreshold: 7\n"},
        })
        query = f'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{namespace="{ns}"}}[1m]))'
        await prometheus.wait_for(query, lambda r: len(r) == 3, timeout=60.0)

        async with running_operator(runtime):
            await wait_for(lambda: runtime.inventory.sizes()["pods"] >= 3, what="pods in the inventory")
            replicas = {CHEAP: 2, PREMIUM: 1}
            for _ in range(2):  # two cycles a few scrapes apart: rate() and histogram_quantile() have data
                # every pod is ready and in Prometheus first: each ready replica reports (no coverage gap)
                await _wait_all_seen(runtime, prometheus, ns, replicas)
                report = await runtime.engine.run_cycle()
                assert not report.group_errors, report.group_errors
                replicas = await cluster.reconcile()
                await prometheus.wait_for(
                    f'wva_engine_cycles_total{{job="wva",outcome="ok"}} >= {runtime.engine.cycles}', timeout=20.0
                )
            await prometheus.wait_for(
                'count_over_time(wva_engine_cycles_total{job="wva"}[1m]) >= 3', timeout=20.0
            )
            exposition = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")

            values = {"namespace": ns, "model": MODEL, "variant": f"{CHEAP}|{PREMIUM}"}
            everything = {"namespace": ".*", "model": ".*", "variant": f"{CHEAP}|{PREMIUM}"}  # "All" selected
            empty: list[str] = []
            for selection in (values, everything):
                for q in monitoring.queries(board):
                    expr = monitoring.substitute(q.expr, selection)
                    if q.panel_title in EVENT_ONLY:
                        continue
                    result = await asyncio.to_thread(prometheus.query, expr)
                    if not result:
                        empty.append(f"{q.panel_title} [{q.ref_id}]: {expr}")
            assert empty == [], "dashboard queries without series:\n" + "\n".join(empty)

            # the variables list this test's namespace, model and variants
            variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "query"}
            expected = {"namespace": {ns}, "model": {MODEL}, "variant": {CHEAP, PREMIUM}}
            for name, want in expected.items():
                selector, label = monitoring.label_values(monitoring.variable_query(variables[name]))
                result = await asyncio.to_thread(
                    prometheus.query, f"group by ({label}) ({monitoring.substitute(selector, values)})"
                )
                assert want <= {r["metric"].get(label) for r in result}, (name, result)

            # the replica panel shows what wva decided: the cheap variant stays at its maximum, the premium one
            # took the steps
            published = {
                name: runtime.emitter.value("wva_desired_replicas", variant_name=name, namespace=ns,
                                            accelerator_type=acc)
                for name, acc in ((CHEAP, "L4"), (PREMIUM, "H100"))
            }
            assert published[CHEAP] == 2 and (published[PREMIUM] or 0) > 1
            desired = await asyncio.to_thread(
                prometheus.query, monitoring.substitute(
                    next(q.expr for q in monitoring.queries(board) if q.expr.startswith("wva_desired_replicas")),
                    values,
                ),
            )
            assert {r["metric"]["variant_name"]: float(r["value"][1]) for r in desired} == published

    # every own metric of the dashboard and the rules has series in the live exposition
    live = monitoring.exposition_names(exposition)
    for q in monitoring.queries(board):
        names = monitoring.own_metric_names(q.expr)
        if q.panel_title in EVENT_ONLY:
            assert all(f"# TYPE {n.removesuffix('_total')}" in exposition for n in names), q.panel_title
        else:
            assert names <= live, (q.panel_title, sorted(names - live))
    for rule in monitoring.alert_rules():
        assert monitoring.own_metric_names(rule["expr"]) <= live, rule["alert"]

    # the alert expressions evaluate on the real series: what should hold now does, the rest is quiet
    results = {
        rule["alert"]: await asyncio.to_thread(prometheus.query, rule["expr"]) for rule in monitoring.alert_rules()
    }
    assert [r["metric"]["kind"] for r in results["WVAConfigError"]] == ["saturation_config"]
    at_max = results["WVAVariantAtMaxReplicas"]
    assert [(r["metric"]["variant_name"], r["metric"]["exported_namespace"]) for r in at_max] == [(CHEAP, ns)]
    for quiet in ("WVAOperatorDown", "WVANoLeader", "WVAEngineCycleStale", "WVASignalsUnknown",
                  "WVASignalCoverageLow", "WVAMetricsSourceFailedOver"):
        assert results[quiet] == [], (quiet, results[quiet])
