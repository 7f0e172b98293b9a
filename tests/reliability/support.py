"""Helpers shared by the reliability scenarios: a small fleet of VAs under a running operator."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from operator_harness import OPERATOR_NAMESPACE, condition, operator_settings, running_operator, wait_for
from wva.api.constants import GROUP, PLURAL, VERSION
from wva.runtime import Runtime
from wva.saturation.engine import CycleReport
from wva.sim.cluster import SimulatedCluster
from wva.sim.local_api import LocalKubernetesAPI
from wva.sim.prometheus import LocalPrometheus
from wva.sim.vllm import VLLMEmulator

VA_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
SATURATED = {"kv_cache_usage": 0.9, "num_requests_waiting": 0}
STEADY = {"kv_cache_usage": 0.6, "num_requests_waiting": 0}


@dataclass
class Fleet:
    """A running operator (cycles on demand) over VAs in one namespace; one model per VA."""

    api: LocalKubernetesAPI
    runtime: Runtime
    cluster: SimulatedCluster
    namespace: str
    names: list[str]
    reports: list[CycleReport] = field(default_factory=list)

    def model(self, name: str) -> str:
        return f"acme/{name}"

    def va(self, name: str) -> dict[str, Any]:
        return dict(self.api.objects[VA_RESOURCE, self.namespace, name])

    def desired(self, name: str) -> int:
        return int(self.va(name)["status"]["desiredOptimizedAlloc"]["numReplicas"])

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        cond = condition(self.va(name), type_)
        assert cond is not None, f"{name} has no {type_} condition"
        return cond

    def gauge(self, name: str) -> float | None:
        return self.runtime.emitter.value(
            "wva_desired_replicas", variant_name=name, namespace=self.namespace, accelerator_type="A100"
        )

    async def cycle(self) -> CycleReport:
        report = await self.runtime.engine.run_cycle()
        self.reports.append(report)
        return report

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        """Events posted in this namespace (optionally with one reason)."""
        out = []
        for request in list(self.api):
            resource = request.resource
            if resource is None or resource.plural != "events" or not isinstance(request.data, dict):
                continue
            data = request.data
            if data.get("metadata", {}).get("namespace", request.namespace) != self.namespace:
                continue
            if reason is None or data.get("reason") == reason:
                out.append(data)
        return out


async def wait_prometheus_pods(prometheus: LocalPrometheus, namespace: str, pods: int, kv: float) -> None:
    """Wait until Prometheus has a 1-minute peak of ``kv`` for ``pods`` pods of ``namespace``."""
    query = f'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{namespace="{namespace}"}}[1m]))'

    def ok(result: list[dict[str, Any]]) -> bool:
        return len(result) == pods and all(abs(float(r["value"][1]) - kv) < 1e-9 for r in result)

    await prometheus.wait_for(query, ok, timeout=60.0)


@contextlib.asynccontextmanager
async def fleet(
    api: LocalKubernetesAPI,
    prometheus_url: str,
    emulator: VLLMEmulator,
    namespace: str,
    names: list[str],
    *,
    replicas: int = 2,
    load: dict[str, Any] | None = None,
    max_replicas: int = 6,
    runtime: Runtime | None = None,
    main_config: dict[str, str] | None = None,
    **env: str,
) -> AsyncIterator[Fleet]:
    """Deployments + VAs (one model each) created through the API, then the operator running over them."""
    values = dict(load or STEADY)
    settings = operator_settings(api, prometheus_url, **{"COLLECTOR_V2": "true", **env})
    runtime = runtime or Runtime.build(settings, serve_http=False, run_engine_loop=False)
    async with SimulatedCluster(api.base_url, emulator, lambda _d, _p: dict(values)) as cluster:
        for name in names:
            await cluster.create_deployment(name, namespace, f"acme/{name}", replicas=replicas)
        await cluster.reconcile()
        if main_config is not None:
            await cluster.request("POST", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap", "data": main_config,
                "metadata": {"name": settings.config_map_name, "namespace": OPERATOR_NAMESPACE},
            })
        for name in names:
            await cluster.create_va(name, namespace, f"acme/{name}", name, "A100", max_replicas=max_replicas)
        async with running_operator(runtime):
            await wait_for(
                lambda: sum(1 for v in runtime.inventory.variants() if v.namespace == namespace) == len(names),
                what="VAs in the inventory",
            )
            await wait_for(
                lambda: all(len(runtime.inventory.ready_pods(namespace, n)) >= replicas for n in names),
                what="ready pods in the inventory",
            )
            yield Fleet(api, runtime, cluster, namespace, list(names))


class LogCapture(logging.Handler):
    """Collects every formatted record (with arguments) of every logger, at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")
            if record.exc_info:
                self.lines.append(logging.Formatter().formatException(record.exc_info))

    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def capture_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


class AcceptingKube:
    """The API server surface the engine uses, accepting everything and counting it."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    async def patch_va_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.calls["patch", "status"] += 1
        return {"status": status}

    async def create_event(self, *_: Any, **__: Any) -> None:
        self.calls["create", "events"] += 1

    async def patch_deployment_scale(self, *_: Any) -> None:
        self.calls["patch", "scale"] += 1

    async def get_configmap_data(self, *_: Any) -> None:
        return None

    def close(self) -> None:
        pass


class PodPerModelProm:
    """Answers every query with one saturated sample per pod of the queried model (or, for a query
    batched over a namespace, of every live model), as Prometheus would; a combined batch query gets
    those samples once per ``wva_query`` branch, tagged."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.queries = 0
        self.models: set[str] = set()

    def custom_query(self, query: str, params: Any = None, timeout: Any = None) -> list[dict[str, Any]]:
        self.queries += 1
        match = re.search(r'model_name="acme/([^"]+)"', query)
        vas = [match.group(1)] if match is not None else sorted(self.models)
        tags: list[dict[str, str]] = [{"wva_query": t} for t in re.findall(r'"wva_query", "([^"]+)"', query)] or [{}]
        return [
            {
                "metric": {
                    "pod": f"{va}-5d9f7c6b4-abcde", "namespace": self.namespace, "model_name": f"acme/{va}", **tag
                },
                "value": [time.time(), "0.9"],
            }
            for tag in tags
            for va in vas
        ]


__all__ = [
    "OPERATOR_NAMESPACE",
    "AcceptingKube",
    "Fleet",
    "PodPerModelProm",
    "capture_logs",
    "fleet",
    "wait_for",
    "wait_prometheus_pods",
]
