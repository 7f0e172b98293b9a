"""Helpers for the kind e2e suite: skip detection, polling, kubectl and Prometheus access.

All cluster access goes through ``kubectl`` (JSON in, JSON out), so the tests need no kubeconfig
handling of their own and behave like an operator's shell session.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("WVA_E2E_CLUSTER", "wva")
WVA_NAMESPACE = os.environ.get("WVA_NAMESPACE", "wva-system")
MONITORING_NAMESPACE = os.environ.get("MONITORING_NAMESPACE", "monitoring")
TIMEOUT = float(os.environ.get("WVA_E2E_TIMEOUT", "420"))
TOOLS = ("kind", "kubectl", "docker", "helm")

T = TypeVar("T")


def _run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@cache
def skip_reason() -> str | None:
    """Why the e2e suite cannot run here, or None when it can."""
    if os.environ.get("WVA_E2E") != "1":
        return (
            "kind e2e tests are off: run `make test-e2e` or set WVA_E2E=1 (needs kind, kubectl, docker, helm)"
        )
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"kind e2e tests need {', '.join(missing)} on PATH"
    if os.environ.get("WVA_E2E_CREATE_CLUSTER") == "1":
        return None  # the install fixture creates it
    try:
        context = _run(["kubectl", "config", "current-context"], 10).stdout.strip()
        info = _run(["kubectl", "cluster-info"], 20)
    except subprocess.TimeoutExpired:
        return "no reachable cluster: `kubectl cluster-info` timed out"
    if info.returncode != 0:
        return (
            "no reachable kind cluster: `kubectl cluster-info` failed; run deploy/kind/install.sh "
            "or set WVA_E2E_CREATE_CLUSTER=1"
        )
    if not context.startswith("kind-"):
        return (
            f"the current kubectl context {context!r} is not a kind cluster; refusing to run e2e tests on it"
        )
    return None


def poll(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = TIMEOUT,
    interval: float = 5.0,
    on_tick: Callable[[], None] | None = None,
) -> T:
    """Call ``probe`` until it returns something not None (then return it) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if on_tick is not None:
            on_tick()
        try:
            result = probe()
            if result is not None:
                return result
        except (subprocess.SubprocessError, OSError, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error}"
            )
        time.sleep(interval)


class Kubectl:
    """Thin kubectl wrapper: raises with stderr on failure, parses JSON output."""

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        proc = subprocess.run(
            ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, ["kubectl", *args], proc.stdout, proc.stderr)
        return proc.stdout

    def get(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json"))
        return data

    def apply(self, *objects: dict[str, Any]) -> None:
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.run("apply", "-f", "-", stdin=json.dumps(doc))

    def delete(self, kind: str, name: str, namespace: str) -> None:
        self.run("delete", kind, name, "-n", namespace, "--ignore-not-found", "--wait=false")

    def ready_pods(self, namespace: str, selector: str) -> list[str]:
        pods = self.get("pods", "-n", namespace, "-l", selector)["items"]
        ready = []
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = pod.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready.append(pod["metadata"]["name"])
        return sorted(ready)


def operator_env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    base_url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def values(self, promql: str) -> list[float]:
        return [float(r["value"][1]) for r in self.query(promql)]
