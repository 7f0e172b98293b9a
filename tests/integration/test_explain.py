"""``wva explain`` on real parts: the operator's /debug/decisions endpoint, and a decision recomputed
from the real Prometheus at the instant of a live record, with the engine's own code."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from operator_harness import operator_settings, running_operator, wait_for
from wva.cli import main
from wva.runtime import Runtime
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

MODEL = "acme/explain-8b"
CHEAP, PREMIUM = "explain-cheap", "explain-premium"

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


async def _get(url: str) -> tuple[int, Any]:
    """GET off the event loop: the operator serving the request runs on it."""
    return await asyncio.to_thread(_blocking_get, url)


def _blocking_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_explain_reads_the_operator_and_recomputes_the_same_decision_from_prometheus(
    kube_api: LocalKubernetesAPI,
    prometheus: LocalPrometheus,
    vllm_emulator: VLLMEmulator,
    unique_ns: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = unique_ns
    load = {"kv_cache_usage": 0.75, "num_requests_waiting": 0}
    # plain HTTP: this embedded API answers no TokenReview (explain over HTTPS with a token runs on the real
    # control plane, tests/controlplane/test_cp_metrics_auth.py)
    settings = operator_settings(kube_api, prometheus.url, COLLECTOR_V2="true", WVA_DECISION_RING_SIZE="3",
                                 WVA_METRICS_SECURE="false")
    runtime = Runtime.build(settings, metrics_port=0, probe_port=0, run_engine_loop=False)
    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _d, _p: dict(load)) as cluster:
        await cluster.create_deployment(CHEAP, ns, MODEL, replicas=2)
        await cluster.create_deployment(PREMIUM, ns, MODEL, replicas=1)
        await cluster.reconcile()
        await cluster.create_va(CHEAP, ns, MODEL, CHEAP, "A100", cost="5.0", max_replicas=2)
        await cluster.create_va(PREMIUM, ns, MODEL, PREMIUM, "A100", cost="20.0")
        query = f'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{namespace="{ns}"}}[1m]))'
        await prometheus.wait_for(query, lambda r: len(r) == 3, timeout=90.0)

        async with running_operator(runtime):
            await wait_for(lambda: runtime.inventory.sizes()["pods"] >= 3, what="pods in the inventory")
            assert runtime.server is not None
            base = f"http://127.0.0.1:{runtime.server.bound_ports['metrics']}"
            report = await runtime.engine.run_cycle()
            assert not report.group_errors, report.group_errors

            # the endpoint: an index, a VA's records, a bad limit, an unknown VA
            status, index = await _get(f"{base}/debug/decisions")
            assert status == 200 and f"{ns}/{CHEAP}" in index["variantAutoscalings"]
            status, body = await _get(f"{base}/debug/decisions/{ns}/{CHEAP}?limit=1")
            assert status == 200 and len(body["records"]) == 1
            live = body["records"][0]
            assert (await _get(f"{base}/debug/decisions/{ns}/{CHEAP}?limit=x"))[0] == 400
            status, missing = await _get(f"{base}/debug/decisions/{ns}/nope")
            assert status == 404 and "no decision records for" in missing["error"]

            # spare KV 0.05 < 0.10 with the cheap variant at its maximum: the step goes to the premium one
            cheap = next(r for r in live["results"] if r["variant"] == CHEAP)
            assert cheap["code"] == "AtMaxReplicas"
            assert await asyncio.to_thread(main, ["explain", f"{ns}/{CHEAP}", "--operator", base]) == 0
            text = capsys.readouterr().out
            assert f"{ns}/{CHEAP}: model {MODEL}, record {live['id']}" in text
            assert "Decision: AtMaxReplicas" in text and "the step went to explain-premium" in text
            assert "would not scale up if spare KV ≥ 0.100; now 0.050 (0.050 away)" in text

            # the ring keeps the newest WVA_DECISION_RING_SIZE cycles
            for _ in range(3):
                await runtime.engine.run_cycle()
            assert len((await _get(f"{base}/debug/decisions/{ns}/{CHEAP}"))[1]["records"]) == 3

    # without a cluster: the same instant recomputed from Prometheus with the engine's code
    model_file = tmp_path / "model.yaml"
    model_file.write_text(
        f"model: {MODEL}\nnamespace: {ns}\nvariants:\n"
        f"  - {{name: {CHEAP}, accelerator: A100, cost: 5, maxReplicas: 2}}\n"
        f"  - {{name: {PREMIUM}, accelerator: A100, cost: 20}}\n",
        encoding="utf-8",
    )
    args = ["explain", f"{ns}/{CHEAP}", "--prometheus", prometheus.url, "--config", str(model_file),
            "--at", str(live["time"]), "-o", "json"]
    assert main(args) == 0
    recomputed = json.loads(capsys.readouterr().out)
    assert recomputed["id"] == live["id"]  # same group, same instant
    assert _outcomes(recomputed) == _outcomes(live)
    assert _pod_values(recomputed) == _pod_values(live)
    assert recomputed["analysis"]["spareKV"] == pytest.approx(live["analysis"]["spareKV"])
    assert recomputed["config"]["hash"] == live["config"]["hash"]

    # user errors: one line, exit code 2
    assert main(["explain", f"{ns}/{CHEAP}", "--prometheus", prometheus.url]) == 2
    assert main(["explain", "no-slash", "--records", str(model_file)]) == 2
    assert main(["explain", f"{ns}/{CHEAP}", "--operator", "http://127.0.0.1:9"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("wva explain: error: ") for line in errors)
    assert "needs --config" in errors[0] and "expected NAMESPACE/NAME" in errors[1]
    assert "cannot read http://127.0.0.1:9/debug/decisions" in errors[2]


def _outcomes(record: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(r["variant"], r["target"], r["code"]) for r in record["results"]]


def _pod_values(record: dict[str, Any]) -> dict[str, tuple[float, int]]:
    return {p["pod"]: (p["kvCacheUsage"], p["queueLength"]) for p in record["inputs"]["pods"]}
