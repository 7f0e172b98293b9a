"""The real kubectl against the demo's embedded local API, with the kubeconfig ``wva demo`` writes.

kubectl discovers the API (``/api``, ``/apis``, the group versions), finds ``va`` by its short name,
asks for Tables and prints the CRD's printer columns, and ``get -w`` sees the status updates as they
happen, each once. The first tests build the demo's objects the way the demo does; the last one runs
a short demo and reads the story from kubectl while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from binaries import require_kubectl
from wva.api.constants import GROUP, PLURAL, VERSION
from wva.sim.cluster import SimulatedCluster
from wva.sim.demo import OPERATOR_NAMESPACE, _create_objects
from wva.sim.loadmodel import load_scenario
from wva.sim.local_api import LocalKubernetesAPI, write_kubeconfig
from wva.sim.vllm import VLLMEmulator

SCENARIO = load_scenario("spike")
CHEAP, PREMIUM = (v.name for v in SCENARIO.variants)
HEADER = ["NAME", "TARGET", "MODEL", "ACCELERATOR", "CURRENTREPLICAS", "OPTIMIZED", "METRICSREADY", "AGE"]


@pytest.fixture()
def kubectl() -> str:
    return require_kubectl()


@pytest_asyncio.fixture()
async def demo_cluster(
    kube_api: LocalKubernetesAPI, vllm_emulator: VLLMEmulator
) -> AsyncIterator[SimulatedCluster]:
    async with SimulatedCluster(kube_api.base_url, vllm_emulator, lambda _dep, _pod: {}) as cluster:
        await _create_objects(cluster, SCENARIO, "wva-config", "saturation-scaling-config")
        yield cluster


def kubectl_argv(kubectl: str, kubeconfig: Path, *args: str) -> list[str]:
    # a private discovery cache: the port is new each run
    return [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "kube-cache"), *args]


async def run_kubectl(kubectl: str, kubeconfig: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *kubectl_argv(kubectl, kubeconfig, *args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert not err.strip(), err.decode()  # no warning (an ambiguous short name, a failed discovery)
    return out.decode()


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def by_column(text: str) -> list[dict[str, str]]:
    """kubectl's table as one dict per row, cut at the header's column starts (empty cells stay empty)."""
    header, *lines = text.rstrip("\n").splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for line in lines]


async def set_status(cluster: SimulatedCluster, name: str, current: int, desired: int) -> None:
    await cluster.request(
        "PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{SCENARIO.namespace}/{PLURAL}/{name}/status",
        {"status": {
            "currentAlloc": {"accelerator": "L4", "numReplicas": current},
            "desiredOptimizedAlloc": {"accelerator": "L4", "numReplicas": desired},
            "conditions": [{"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound"}],
            "lastDecision": {"reason": "ScaleUpKVSpareLow"},
        }},
        content_type="application/merge-patch+json",
    )


async def test_kubectl_get_lists_the_demos_vas_with_the_printer_columns(
    kubectl: str, kube_api: LocalKubernetesAPI, demo_cluster: SimulatedCluster, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_api.base_url, SCENARIO.namespace)
    await set_status(demo_cluster, CHEAP, 2, 3)

    table = rows(await run_kubectl(kubectl, kubeconfig, "get", "va", "-A"))
    assert table[0] == ["NAMESPACE", *HEADER]
    by_name = {r[1]: r for r in table[1:]}
    assert set(by_name) == {CHEAP, PREMIUM}  # the ConfigMaps and Deployments are not VAs
    assert by_name[CHEAP][:8] == [SCENARIO.namespace, CHEAP, CHEAP, SCENARIO.model, "L4", "2", "3", "True"]
    assert by_name[PREMIUM][:4] == [SCENARIO.namespace, PREMIUM, PREMIUM, SCENARIO.model]

    # the kubeconfig's namespace is the demo's; -o wide adds the reason (a priority-1 column)
    wide = rows(await run_kubectl(kubectl, kubeconfig, "get", "variantautoscalings", "-o", "wide"))
    assert wide[0] == [*HEADER[:-1], "REASON", "AGE"]
    assert next(r for r in wide if r[0] == CHEAP)[7] == "ScaleUpKVSpareLow"

    one = rows(await run_kubectl(kubectl, kubeconfig, "get", "va", CHEAP, "-n", SCENARIO.namespace))
    assert [r[0] for r in one] == ["NAME", CHEAP]
    # other resources still answer (plain JSON, printed by kubectl itself)
    deployments = await run_kubectl(kubectl, kubeconfig, "get", "deployments", "-o", "name")
    assert set(deployments.split()) == {f"deployment.apps/{CHEAP}", f"deployment.apps/{PREMIUM}"}
    configmaps = await run_kubectl(kubectl, kubeconfig, "get", "configmaps", "-n", OPERATOR_NAMESPACE, "-o", "name")
    assert "configmap/saturation-scaling-config" in configmaps.split()


async def test_kubectl_watch_sees_each_update_once(
    kubectl: str, kube_api: LocalKubernetesAPI, demo_cluster: SimulatedCluster, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_api.base_url, SCENARIO.namespace)
    proc = await asyncio.create_subprocess_exec(
        *kubectl_argv(kubectl, kubeconfig, "get", "va", "-w"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    deadline = time.monotonic() + 30

    async def line() -> list[str]:
        raw = await asyncio.wait_for(stdout.readline(), max(0.1, deadline - time.monotonic()))
        assert raw, (await stderr.read()).decode()
        return raw.decode().split()

    try:
        assert await line() == HEADER
        assert sorted([(await line())[0], (await line())[0]]) == sorted([CHEAP, PREMIUM])
        await set_status(demo_cluster, CHEAP, 2, 3)
        # the next line is the update: the watch started from the list, so nothing is printed twice
        update = await line()
        assert update[:7] == [CHEAP, CHEAP, SCENARIO.model, "L4", "2", "3", "True"]
        await set_status(demo_cluster, CHEAP, 3, 4)
        assert (await line())[4:6] == ["3", "4"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def test_a_running_demo_can_be_watched_with_kubectl(kubectl: str, tmp_path: Path) -> None:
    """A short spike run with pod scraping: the demo writes the kubeconfig and says how to use it, and
    kubectl shows the cheap variant's optimized replicas climbing while the demo runs."""
    out = tmp_path / "out"
    kubeconfig = out / "kubeconfig"
    with (tmp_path / "stdout.jsonl").open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wva.cli", "demo", "--scenario", "spike", "--duration", "240",
             "--metrics-source", "pods", "--no-ui", "--output", str(out)],
            stdout=stdout, stderr=subprocess.PIPE, text=True, env={**os.environ},
        )
        try:
            seen: set[str] = set()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if kubeconfig.exists():
                    got = subprocess.run(kubectl_argv(kubectl, kubeconfig, "get", "va", CHEAP),
                                         capture_output=True, text=True, timeout=30)
                    if got.returncode == 0:
                        (row,) = by_column(got.stdout)
                        seen.add(row["OPTIMIZED"])
                if len(seen - {""}) >= 2:  # the optimized replicas moved
                    break
                time.sleep(0.2)
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert f"watch it with kubectl: kubectl --kubeconfig {kubeconfig} get va -w" in err
    assert len(seen - {""}) >= 2, f"kubectl saw the optimized replicas as {seen} only"
    start = (tmp_path / "stdout.jsonl").read_text().splitlines()[0]
    assert f'"kubeconfig":"{kubeconfig}"' in start
