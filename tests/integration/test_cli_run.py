"""`wva run` as a real process: it starts against the API server, serves /metrics and probes, becomes
ready once Prometheus answered, handles VAs, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from operator_harness import wait_for
from wva.sim.local_api import VA_RESOURCE, LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus, free_port

pytestmark = pytest.mark.prometheus


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


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
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wva.cli", "run", "--metrics-port", str(metrics_port), "--probe-port", str(probe_port),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
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
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert proc.returncode == 0, stderr[-3000:]
    assert "Operator started" in stderr and "Operator stopped" in stderr
