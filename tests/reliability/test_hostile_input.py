"""Hostile input: names, model IDs and namespaces built to break queries, labels or logs; malformed
ConfigMaps; bad environment variables."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import wva.handlers as handlers
from operator_harness import OPERATOR_NAMESPACE, condition
from reliability.fault_proxy import FaultProxy
from reliability.support import (
    SATURATED,
    AcceptingKube,
    PodPerModelProm,
    capture_logs,
    fleet,
    wait_for,
    wait_prometheus_pods,
)
from wva.collector import promql
from wva.collector.v2 import QueryList
from wva.collector.v2.registration import catalogue_template
from wva.runtime import Runtime
from wva.settings import Settings, SettingsError
from wva.sim.local_api import LocalKubernetesAPI, request_method
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

HOSTILE = [
    'a"b',
    "back\\slash\\",
    "new\nline\r\ttab",
    "brace}{x}",
    '"} or vector(1) or {"',
    '\\"} or vector(1) #',
    ".*|(a+)+$[^]",
    "ünïcødé-模型-🚀",
    "\u2028\u0000\x7f",
    "{{.namespace}}",
    "x" * 10_000,
]

_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n", "\\r": "\r", "\\t": "\t"}


def _decode(literal: str) -> str:
    out, i = [], 0
    while i < len(literal):
        if literal[i] == "\\":
            pair = literal[i : i + 2]
            assert pair in _ESCAPES, f"unexpected escape {pair!r}"
            out.append(_ESCAPES[pair])
            i += 2
        else:
            out.append(literal[i])
            i += 1
    return "".join(out)


def _all_queries() -> QueryList:
    return QueryList([catalogue_template(name) for name in promql.QUERY_TEMPLATES])


def _skeleton(query: str) -> tuple[str, list[str]]:
    """The query with every string literal emptied, and the decoded literals."""
    literals = [_decode(m.group(1)) for m in _LITERAL.finditer(query)]
    return _LITERAL.sub('""', query), literals


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(namespace=st.text(min_size=1, max_size=200), model=st.text(min_size=1, max_size=200))
@example(namespace=HOSTILE[4], model=HOSTILE[5])
@example(namespace="x" * 10_000, model="{{.modelID}}")
def test_promql_injection_is_impossible(namespace: str, model: str) -> None:
    """For any namespace and model ID, every registered query keeps exactly the structure of its
    template: the values land inside string literals that decode back to exactly the input, and nothing
    outside a literal changes. No input can add a matcher, an operator or a second expression."""
    queries = _all_queries()
    benign = {promql.PARAM_NAMESPACE: "ns", promql.PARAM_MODEL_ID: "model"}
    hostile = {promql.PARAM_NAMESPACE: namespace, promql.PARAM_MODEL_ID: model}
    for name in queries.names():
        expected_shape, expected_literals = _skeleton(queries.build(name, benign))
        shape, literals = _skeleton(queries.build(name, hostile))
        assert shape == expected_shape, name
        swap = {"ns": namespace, "model": model}
        assert literals == [swap.get(v, v) for v in expected_literals], name


@pytest.mark.prometheus
def test_hostile_values_are_inert_in_real_prometheus(prometheus: LocalPrometheus) -> None:
    """Real Prometheus parses every query built from hostile values (no 400 bad_data) and matches
    nothing: a value that tried to break out of its string (``or vector(1)``) would return a series."""
    queries = _all_queries()
    sent = 0
    for namespace in HOSTILE:
        for model in HOSTILE:
            params = {promql.PARAM_NAMESPACE: namespace, promql.PARAM_MODEL_ID: model}
            for name in (promql.Q_KV_CACHE_USAGE, promql.Q_ARRIVAL_RATE):
                query = queries.build(name, params)
                answer = requests.post(f"{prometheus.url}/api/v1/query", data={"query": query}, timeout=10).json()
                sent += 1
                assert answer["status"] == "success", (query[:200], answer)
                result = answer["data"]["result"]
                values = [float(r["value"][1]) for r in result] if isinstance(result, list) else []
                assert all(v == 0 for v in values), (query[:200], result)  # sum() of nothing is empty or 0
                assert name != promql.Q_KV_CACHE_USAGE or result == [], query[:200]
    assert sent == len(HOSTILE) ** 2 * 2


async def test_hostile_model_ids_in_a_running_operator(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    fault_proxy: FaultProxy,
    unique_ns: str,
) -> None:
    """VAs whose modelID is hostile sit next to a normal VA: their queries reach Prometheus escaped
    (the proxy sees each one) and are answered without error, they report missing metrics or an invalid
    configuration by condition, and the normal VA keeps scaling as if they were not there."""
    async with fleet(kube_api, fault_proxy.url, vllm_emulator, unique_ns, ["normal"], load=SATURATED) as f:
        for i, model in enumerate(HOSTILE):
            await f.cluster.create_deployment(f"hdep-{i}", f.namespace, "acme/unused", replicas=1)
            await f.cluster.create_va(f"hostile-{i}", f.namespace, model, f"hdep-{i}", "A100")
        await f.cluster.reconcile()
        await wait_for(lambda: len(f.runtime.inventory.variants()) >= len(HOSTILE) + 1, what="hostile VAs")
        await wait_for(lambda: f.runtime.inventory.deployment(f.namespace, f"hdep-{len(HOSTILE) - 1}"),
                       what="their Deployments")
        await wait_prometheus_pods(prometheus, f.namespace, pods=2 + len(HOSTILE), kv=0.9)
        report = await f.cycle()
        assert report.decisions[(f.namespace, "normal")].target == 3
        assert f.desired("normal") == 3
        literals = {m for q in fault_proxy.queries for m in _skeleton(q)[1]}
        for i, model in enumerate(HOSTILE):
            va = f.va(f"hostile-{i}")
            metrics, ready = condition(va, "MetricsAvailable"), condition(va, "OptimizationReady")
            if ready is not None and ready["reason"] == "InvalidConfiguration":
                continue  # rejected by validation, which names the field
            assert model in literals, f"model {i} never queried"
            assert metrics is not None and metrics["reason"] != "PrometheusError", (i, metrics)
            assert f.desired(f"hostile-{i}") >= 1 if va["status"].get("desiredOptimizedAlloc") else True


async def test_hostile_va_names_namespaces_and_labels_are_safe() -> None:
    """VA names and namespaces with quotes, newlines, braces, unicode and 10k characters go through the
    handlers, the engine, status writes and the gauges; the /metrics exposition stays parseable and
    gives back every name exactly."""
    settings_ = Settings.from_env(
        {"PROMETHEUS_BASE_URL": "http://prometheus.invalid:9090", "POD_NAMESPACE": OPERATOR_NAMESPACE,
         "LEADER_ELECTION": "false", "COLLECTOR_V2": "true", "WVA_BATCH_QUERIES": "false"}
    )
    runtime = Runtime.build(
        settings_, prom=PodPerModelProm("unused"), kube=AcceptingKube(), serve_http=False,  # type: ignore[arg-type]
        run_engine_loop=False,
    )
    import kopf

    memo = kopf.Memo(runtime=runtime)
    await runtime.start()
    try:
        for i, name in enumerate(HOSTILE):
            namespace = f"ns-{i}-{name}"
            body = {
                "metadata": {"name": name, "namespace": namespace, "uid": f"u{i}"},
                "spec": {
                    "scaleTargetRef": {"kind": "Deployment", "name": name},
                    "modelID": name,
                    "variantCost": "10.0",
                    "modelProfile": {"accelerators": [{"acc": "A100", "accCount": 1, "maxBatchSize": 256}]},
                },
            }
            dep = {"metadata": {"name": name, "namespace": namespace}, "spec": {"replicas": 1},
                   "status": {"replicas": 1}}
            await handlers.deployment_event(type="ADDED", body=dep, memo=memo)
            await handlers.variant_event(type="ADDED", body=body, memo=memo)
        report = await runtime.engine.run_cycle()
        assert len(report.decisions) + len(report.invalid) == len(HOSTILE)
        text = runtime.emitter.exposition()[0].decode()
        names = {
            s.labels["variant_name"]
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if fam.name == "wva_desired_replicas"
        }
        assert names == {k[1] for k in report.decisions}
    finally:
        await runtime.stop()


async def test_malformed_saturation_config_keeps_last_good(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
) -> None:
    """A saturation ConfigMap with a YAML error, wrong types and out-of-range values: the operator stays
    up, the last good configuration stays in force, every bad entry is reported as a Warning Event
    naming the key, and the next cycle decides with the good configuration."""
    async with fleet(kube_api, prometheus.url, vllm_emulator, unique_ns, ["alpha"], load=SATURATED) as f:
        cm_path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps"
        good = {"default": "kvCacheThreshold: 0.95\nkvSpareTrigger: 0.01\n"}
        await f.cluster.request("POST", cm_path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "saturation-scaling-config", "namespace": OPERATOR_NAMESPACE}, "data": good})
        await f.cycle()  # the thresholds ConfigMap is read at the start of every cycle
        assert f.runtime.config_store.version >= 1
        good_config = f.runtime.config_store.get("acme/alpha", f.namespace)
        bad = {
            "default": "kvCacheThreshold: [0.5\n  : : :",  # YAML error
            "wrong-types": f"model_id: acme/alpha\nnamespace: {f.namespace}\nkvCacheThreshold: high\n",
            "out-of-range": f"model_id: acme/alpha\nnamespace: {f.namespace}\nkvCacheThreshold: 7\n"
                            "queueLengthThreshold: -3\n",
        }
        await f.cluster.request(
            "PATCH", f"{cm_path}/saturation-scaling-config", {"data": bad}, content_type="application/merge-patch+json"
        )

        def warned() -> list[Any]:
            return [
                r.data for r in list(kube_api)
                if r.resource is not None and r.resource.plural == "events" and request_method(r) == "POST"
                and isinstance(r.data, dict) and r.data.get("reason") == "InvalidConfiguration"
                and r.data.get("involvedObject", {}).get("kind") == "ConfigMap"
            ]

        await wait_prometheus_pods(prometheus, f.namespace, pods=2, kv=0.9)
        report = await f.cycle()
        assert len(warned()) >= 3, "a Warning Event per bad entry"
        messages = " ".join(str(e.get("message")) for e in warned())
        for key in bad:
            assert repr(key) in messages, key
        assert f.runtime.config_store.get("acme/alpha", f.namespace) == good_config
        assert not report.group_errors
        # at kvCacheThreshold 0.95, 0.9 usage is not saturated but spare 0.05 >= kvSpareTrigger 0.01: steady
        assert report.decisions[(f.namespace, "alpha")].target == 2


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("COLLECTOR_V2", "maybe"),
        ("GLOBAL_OPT_INTERVAL", "-5s"),
        ("GLOBAL_OPT_INTERVAL", "nan"),
        ("WVA_PROMETHEUS_QUERY_TIMEOUT", "0"),
        ("PROMETHEUS_BASE_URL", "ftp://prometheus"),
        ("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "sometimes"),
        ("PROMETHEUS_TOKEN_PATH", "/nonexistent/token"),
        ("POD_NAMESPACE", "Bad_Namespace!"),
        ("ACTUATION_MODE", "yolo"),
        ("LOG_LEVEL", "LOUD"),
        ("LEADER_ELECTION", "2"),
        ("CONTROLLER_INSTANCE", 'a"b\n{}'),
        ("METRICS_SOURCE", "x" * 10_000),
    ],
)
def test_bad_environment_values_fail_at_startup_naming_them(var: str, value: str) -> None:
    """Every bad environment value is a startup error whose message names the variable and the value."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: value})
    message = str(info.value)
    assert var in message
    assert repr(value)[:40] in message


async def test_malformed_main_configmap_falls_back_to_defaults(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
) -> None:
    """The main ConfigMap with wrong types and out-of-range cache settings: the operator starts anyway,
    logs a warning naming each bad key, uses the defaults for them and decides normally."""
    bad = {"PROMETHEUS_METRICS_CACHE_ENABLED": "maybe", "PROMETHEUS_METRICS_CACHE_TTL": "banana",
           "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL": "-5s"}
    with capture_logs() as logs:
        async with fleet(kube_api, prometheus.url, vllm_emulator, unique_ns, ["alpha"], load=SATURATED,
                         COLLECTOR_V2="false", main_config=bad) as f:
            await wait_prometheus_pods(prometheus, f.namespace, pods=2, kv=0.9)
            report = await f.cycle()
            assert f.runtime.started and not report.group_errors
            assert report.decisions[(f.namespace, "alpha")].target == 3
    warnings = [line for line in logs.lines if "Main ConfigMap" in line and " WARNING " in line]
    for key in bad:
        assert any(key in line for line in warnings), (key, warnings)
