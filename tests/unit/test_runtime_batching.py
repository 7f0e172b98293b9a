"""WVA_BATCH_QUERIES reaches the collector the runtime builds."""

from __future__ import annotations

import pytest

from operator_harness import OPERATOR_NAMESPACE
from reliability.support import AcceptingKube, PodPerModelProm
from wva.collector.v2 import V2MetricsCollector
from wva.runtime import Runtime
from wva.settings import Settings


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("false", False), ("on", True)])
def test_runtime_collector_batches_as_configured(value: str | None, enabled: bool) -> None:
    env = {
        "PROMETHEUS_BASE_URL": "http://prometheus.invalid:9090",
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
        "LEADER_ELECTION": "false",
        "COLLECTOR_V2": "true",
    }
    if value is not None:
        env["WVA_BATCH_QUERIES"] = value
    runtime = Runtime.build(
        Settings.from_env(env), prom=PodPerModelProm("ns"), kube=AcceptingKube(),  # type: ignore[arg-type]
        serve_http=False, run_engine_loop=False,
    )
    assert isinstance(runtime.collector, V2MetricsCollector)
    assert runtime.collector.batcher.enabled is enabled
