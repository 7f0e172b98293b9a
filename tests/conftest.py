"""Shared fixtures: the real Prometheus server, the vLLM emulator and the embedded Kubernetes API.

- ``vllm_emulator`` (session): one emulator serving every test's pods; use ``unique_ns`` so tests do
  not see each other's pods.
- ``prometheus`` (session): the real Prometheus server binary scraping the emulator every second.
  Without the binary these tests skip with an install hint, except under CI (``CI`` set), where a
  missing binary is a failure.
- ``kube_api``: the embedded local Kubernetes API (kmock-based) on a loopback port, with the wva
  resources declared.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from binaries import unavailable
from wva.sim.epp import EppEmulator, EppEmulatorThread
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import INSTALL_HINT, LocalPrometheus, find_prometheus_binary
from wva.sim.vllm import EmulatorThread, VLLMEmulator

_ns_counter = itertools.count(1)
CONTROLPLANE_DIR = Path(__file__).resolve().parent / "controlplane"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CONTROLPLANE_DIR in item.path.parents:
            item.add_marker(pytest.mark.controlplane)
    if find_prometheus_binary() is not None:
        return
    if os.environ.get("CI"):
        return  # the fixture fails loudly instead of skipping
    skip = pytest.mark.skip(reason=f"needs the Prometheus server binary; {INSTALL_HINT}")
    for item in items:
        if "prometheus" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, except that every control-plane test goes to one worker.

    The control plane is a session fixture: started once per worker that runs such a test. Keeping
    them together starts one control plane instead of one per worker, while the other workers run
    the remaining files as loadfile would.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    prefix = CONTROLPLANE_DIR.relative_to(config.rootpath).as_posix() + "/"

    class ControlPlaneTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(prefix):
                return prefix
            return nodeid.split("::", 1)[0]

    return ControlPlaneTogether(config, log)


@pytest.fixture(scope="session")
def vllm_emulator() -> Iterator[VLLMEmulator]:
    runner = EmulatorThread()
    emulator = runner.start()
    try:
        yield emulator
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def prometheus(vllm_emulator: VLLMEmulator) -> Iterator[LocalPrometheus]:
    if find_prometheus_binary() is None:
        unavailable(f"the Prometheus server binary is required; {INSTALL_HINT}")
    server = LocalPrometheus(targets=[f"127.0.0.1:{vllm_emulator.port}"])
    server.start()
    try:
        # The first scrape lands a few seconds after start (Prometheus 2.x reload throttle).
        server.wait_for_blocking("up", timeout=30.0)
        yield server
    finally:
        server.close()


@pytest.fixture()
def unique_ns(request: pytest.FixtureRequest) -> str:
    """A namespace name no other test uses (DNS-1123 label)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"t{next(_ns_counter)}-{base}"[:63].strip("-")


@pytest_asyncio.fixture()
async def kube_api() -> AsyncIterator[LocalKubernetesAPI]:
    """The embedded local Kubernetes API serving on a free loopback port."""
    import kmock

    async with LocalKubernetesAPI() as api, kmock.Server(api):
        api.declare_resources()
        yield api


@pytest.fixture()
def epp() -> Iterator[EppEmulator]:
    """An emulated gateway Endpoint Picker serving its flow-control queue (one pool), per test."""
    runner = EppEmulatorThread(EppEmulator(pool="pool-a"))
    emulator = runner.start()
    try:
        yield emulator
    finally:
        runner.stop()
