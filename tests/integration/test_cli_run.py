"""`wva run` as a real process: it starts against the API server, serves /metrics and probes, becomes
ready once Prometheus answered, handles VAs, and stops cleanly on SIGTERM; by default its metrics port
is HTTPS and refuses requests it cannot authenticate (the real TokenReview path is tested on the
control plane, tests/controlplane/test_cp_metrics_auth.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from operator_harness import wait_for
from wva.sim.local_api import VA_RESOURCE, LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus, free_port


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the self-signed certificate
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


async def _start_wva_run(
    env: dict[str, str], metrics_port: int, probe_port: int, *args: str
) -> asyncio.subprocess.Process:
    """``wva run`` on the given ports with ``env``; its stderr is kept for the assertions."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wva.cli", "run", "--metrics-port", str(metrics_port), "--probe-port", str(probe_port),
        *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def _stop(proc: asyncio.subprocess.Process) -> str:
    """SIGTERM the process (SIGKILL if it has not exited within 30 s); its whole stderr."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    return (await proc.stderr.read()).decode() if proc.stderr else ""


@pytest.mark.prometheus
async def test_wva_run_process_becomes_ready_handles_a_va_and_stops_on_sigterm(
    kube_api: LocalKubernetesAPI, prometheus: LocalPrometheus, unique_ns: str
) -> None:
    metrics_port, probe_port = free_port(), free_port()
    env = {
        **os.environ,
        "PROMETHEUS_BASE_URL": prometheus.url,
        "WVA_KUBE_API_URL": kube_api.base_url,
        "POD_NAMESPACE": "wva-system",
        "LEADER_ELECTION": "false",
        "GLOBAL_OPT_INTERVAL": "1s",
        "LOG_LEVEL": "info",
    }
    kube_api.objects["apps/v1/deployments", unique_ns, "svc"] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "svc", "namespace": unique_ns, "uid": "d1", "resourceVersion": "1"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "svc"}},
                 "template": {"metadata": {"labels": {"app": "svc"}}, "spec": {"containers": []}}},
        "status": {"replicas": 1},
    }
    kube_api.objects[VA_RESOURCE, unique_ns, "svc"] = {
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "svc", "namespace": unique_ns, "uid": "v1", "resourceVersion": "2", "generation": 1},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "svc"}, "modelID": "cli/model",
                 "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 8}]}},
    }
    # this embedded API answers no TokenReview: /metrics as plain HTTP
    proc = await _start_wva_run(env, metrics_port, probe_port, "--metrics-secure=false")
    try:
        async def ready() -> bool:
            status, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{probe_port}/readyz")
            return status == 200

        for _ in range(300):
            if await ready():
                break
            assert proc.returncode is None, "wva run exited early"
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("wva run never became ready")
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{probe_port}/healthz"))[0] == 200
        # the VA gets its TargetResolved condition and, after a cycle, its decision and gauge
        await wait_for(
            lambda: (kube_api.objects[VA_RESOURCE, unique_ns, "svc"].get("status") or {}).get("desiredOptimizedAlloc"),
            timeout=30, what="a decision written by the process",
        )
        _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert f'wva_desired_replicas{{accelerator_type="L4",namespace="{unique_ns}",variant_name="svc"}} 1.0' in body
        assert "wva_engine_cycles_total" in body
    finally:
        stderr = await _stop(proc)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Operator started" in stderr and "Operator stopped" in stderr
    assert "over plain HTTP without authentication (--metrics-secure=false)" in stderr


async def test_wva_run_serves_https_and_refuses_what_it_cannot_authenticate(kube_api: LocalKubernetesAPI) -> None:
    """Nothing set: HTTPS on the metrics port with a self-signed certificate, 401 without a token, and
    never 200 for a token this embedded API cannot vouch for (it stores a TokenReview instead of answering
    it); the probes stay plain HTTP."""
    metrics_port, probe_port = free_port(), free_port()
    env = {**os.environ, "PROMETHEUS_BASE_URL": "http://127.0.0.1:9", "WVA_KUBE_API_URL": kube_api.base_url,
           "POD_NAMESPACE": "wva-system", "POD_NAME": "wva-cli-0", "LEADER_ELECTION": "false"}
    env.pop("WVA_METRICS_SECURE", None)
    proc = await _start_wva_run(env, metrics_port, probe_port)
    try:
        async def serving() -> bool:
            assert proc.returncode is None, "wva run exited early"
            return (await asyncio.to_thread(_get, f"https://127.0.0.1:{metrics_port}/metrics"))[0] != 0

        await _poll(serving, 30, "the HTTPS metrics port")
        status, body = await asyncio.to_thread(_get, f"https://127.0.0.1:{metrics_port}/metrics")
        assert status == 401 and "bearer token" in body
        assert (await asyncio.to_thread(_get, f"https://127.0.0.1:{metrics_port}/debug/decisions"))[0] == 401
        status, body = await asyncio.to_thread(_get, f"https://127.0.0.1:{metrics_port}/metrics", "some-token")
        assert status in (401, 503), body  # fails closed
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics"))[0] == 0  # no plain HTTP
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{probe_port}/healthz"))[0] == 200
        served = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", metrics_port))
        assert "BEGIN CERTIFICATE" in served
    finally:
        stderr = await _stop(proc)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Metrics serving certificate generated (self-signed)" in stderr and "CN=wva-cli-0" in stderr
    assert "bearer token authenticated and authorized" in stderr
    assert "Metrics request unauthenticated path=/metrics" in stderr or "authorization unavailable" in stderr
    assert "some-token" not in stderr


async def _poll(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        await asyncio.sleep(0.1)
