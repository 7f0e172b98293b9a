"""Reliability suite fixtures: a fault-injecting proxy in front of the session's real Prometheus.

The shared fixtures (``prometheus``, ``vllm_emulator``, ``kube_api``, ``unique_ns``) come from
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reliability.fault_proxy import FaultProxy
from wva.sim.prometheus import LocalPrometheus


@pytest.fixture()
def fault_proxy(prometheus: LocalPrometheus) -> Iterator[FaultProxy]:
    proxy = FaultProxy(prometheus.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()
