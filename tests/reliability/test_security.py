"""Security review: secrets never logged, TLS verification on by default, least-privilege RBAC,
bounded caches and bounded concurrency."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from reliability.fault_proxy import FaultProxy
from reliability.support import SATURATED, capture_logs, fleet, wait_prometheus_pods
from wva import rbac
from wva.collector.legacy.cache import MemoryCache
from wva.collector.v2 import Cache, MetricResult, PrometheusSource, PrometheusSourceConfig, RefreshSpec
from wva.collector.v2.registration import register_optimizer_queries, register_saturation_queries
from wva.kube import build_api_client
from wva.promconnect import build_prometheus_connect, build_session
from wva.settings import Settings
from wva.sim.local_api import LocalKubernetesAPI, request_method
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

TOKEN = "s3cr3t-t0ken-9f8e7d6c5b4a"


@pytest.mark.prometheus
@pytest.mark.parametrize("how", ["env", "file"])
async def test_bearer_token_is_sent_but_never_logged(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    fault_proxy: FaultProxy,
    unique_ns: str,
    tmp_path: Path,
    how: str,
) -> None:
    """With PROMETHEUS_BEARER_TOKEN or PROMETHEUS_TOKEN_PATH set, every query carries the token (the
    proxy saw it), while nothing logged at DEBUG — startup, cycles, failed queries — contains it."""
    env = {"PROMETHEUS_BEARER_TOKEN": TOKEN, "WVA_PROMETHEUS_QUERY_TIMEOUT": "1s"}
    if how == "file":
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        env = {"PROMETHEUS_TOKEN_PATH": str(token_file), "WVA_PROMETHEUS_QUERY_TIMEOUT": "1s"}
    with capture_logs() as logs:
        async with fleet(kube_api, fault_proxy.url, vllm_emulator, unique_ns, ["alpha"], load=SATURATED,
                         **env) as f:
            assert TOKEN not in repr(f.runtime.settings)
            await wait_prometheus_pods(prometheus, f.namespace, pods=2, kv=0.9)
            await f.cycle()
            fault_proxy.set_mode("error")
            await f.cycle()
            assert fault_proxy.injected["error"] > 0
    assert fault_proxy.authorization and set(fault_proxy.authorization) == {f"Bearer {TOKEN}"}
    assert any(line.startswith("urllib3") for line in logs.lines)  # DEBUG really was captured
    assert TOKEN not in logs.text()


def test_tls_verification_is_on_unless_explicitly_disabled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """https Prometheus is verified against the system CAs by default, against PROMETHEUS_CA_CERT_PATH
    when given; only PROMETHEUS_TLS_INSECURE_SKIP_VERIFY=true turns verification off, with a warning.
    An https API server URL is verified too."""
    base = {"PROMETHEUS_BASE_URL": "https://prometheus.monitoring.svc:9090"}
    assert build_session(Settings.from_env(base)).verify is True
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert build_session(Settings.from_env({**base, "PROMETHEUS_CA_CERT_PATH": str(ca)})).verify == str(ca)
    with caplog.at_level(logging.WARNING):
        insecure = Settings.from_env({**base, "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY": "true"})
    assert build_session(insecure).verify is False
    assert "verification for Prometheus is disabled" in caplog.text
    client = build_api_client("https://kubernetes.default.svc")
    try:
        assert client.configuration.verify_ssl is True
    finally:
        client.close()


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def test_rbac_rules_are_least_privilege() -> None:
    """No wildcard, no Secrets, no delete; writes only to VA status, Events, Leases, pod annotations
    (patch: pod-deletion-cost) and (direct actuation only) the Deployment scale subresource; ConfigMaps
    readable in the operator's own namespace only. The secure metrics port's TokenReviews and
    SubjectAccessReviews are creates that store nothing (the server only answers them)."""
    for rule in rbac.RULES:
        assert "*" not in rule.verbs and "*" not in rule.resource and rule.api_group != "*", rule
        assert rule.plural != "secrets", rule
        assert not {"delete", "deletecollection"} & set(rule.verbs), rule
        writes = WRITE_VERBS & set(rule.verbs)
        if rule.resource in ("tokenreviews", "subjectaccessreviews"):
            assert rule.verbs == ("create",) and rule.secure_metrics_only and rule.api_group in (
                "authentication.k8s.io", "authorization.k8s.io"), rule
            continue
        if writes:
            assert rule.resource in {"variantautoscalings", "variantautoscalings/status", "events", "leases",
                                     "deployments/scale", "pods"}, rule
            if rule.resource == "pods":  # the pod-deletion-cost annotation before a scale-down, nothing else
                assert writes == {"patch"}, rule
        if rule.resource == "deployments/scale":
            assert rule.direct_actuation_only
        if rule.plural == "configmaps":
            assert rule.scope == "namespace" and set(rule.verbs) == {"get"}
    assert all(not r.direct_actuation_only for r in rbac.required_rules("hpa"))


@pytest.mark.prometheus
async def test_operator_needs_no_more_than_the_rbac_rules(
    kube_api: LocalKubernetesAPI, prometheus: LocalPrometheus, vllm_emulator: VLLMEmulator, unique_ns: str
) -> None:
    """Every API request a running operator made (watches, status writes, Events, scale patches) is
    granted by ``wva.rbac.RULES``; the operator never writes the VA object itself, only its status."""
    async with fleet(kube_api, prometheus.url, vllm_emulator, unique_ns, ["alpha"], load=SATURATED,
                     ACTUATION_MODE="direct") as f:
        await wait_prometheus_pods(prometheus, f.namespace, pods=2, kv=0.9)
        await f.cycle()
        start = len(list(kube_api))
    granted = {(r.api_group, r.resource, v) for r in rbac.RULES for v in r.verbs}
    operator_requests = [
        r for r in list(kube_api)[:start]
        if r.resource is not None and r.resource.plural  # discovery (/api, /apis) is open to everyone
        and str(r.headers.get("User-Agent", "")).startswith(("kopf", "OpenAPI"))  # not the test's own calls
    ]
    assert operator_requests
    for r in operator_requests:
        method = request_method(r)
        watch = (r.params or {}).get("watch") in ("true", "1")
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
            method, "watch" if watch else ("get" if r.name else "list")
        )
        resource = f"{r.resource.plural}/{r.subresource}" if r.subresource else r.resource.plural
        assert (r.resource.group, resource, verb) in granted, (method, r.url)
        assert not (resource == "variantautoscalings" and verb in WRITE_VERBS), (method, r.url)


def test_every_cache_is_bounded() -> None:
    """Both collectors' caches hold at most ``maxsize`` entries however many keys pass through."""
    v2 = Cache(default_ttl=3600.0, maxsize=100)
    for i in range(1000):
        v2.set(f"q:{i}", MetricResult(query_name="q"))
    assert len(v2) == 100
    v1 = MemoryCache(ttl=3600.0, cleanup_interval=1.0, maxsize=100)
    for i in range(1000):
        v1.set(f"k{i}", i, ttl=3600.0)
    assert v1.size() <= 100


@pytest.mark.prometheus
async def test_prometheus_concurrency_is_bounded(fault_proxy: FaultProxy) -> None:
    """Forty queries refreshed at once against a slow Prometheus: never more than the configured
    concurrency (8) are in flight, so the load on Prometheus stays bounded whatever the fleet size."""
    settings = Settings.from_env({"PROMETHEUS_BASE_URL": fault_proxy.url})
    source = PrometheusSource(build_prometheus_connect(settings), PrometheusSourceConfig(max_concurrency=8))
    register_saturation_queries(source.query_list())
    register_optimizer_queries(source.query_list())
    fault_proxy.set_mode("slow", delay=0.2)
    specs = [RefreshSpec(params={"namespace": f"ns{i}", "modelID": f"m{i}"}) for i in range(5)]
    results = await asyncio.gather(*(source.refresh(spec) for spec in specs))
    assert sum(len(r) for r in results) == 5 * 7
    assert fault_proxy.injected["slow"] == 5 * 7
    assert 1 < fault_proxy.max_in_flight <= 8
