"""The synthetic fleet: N VAs, one model and one Deployment each, 4 pods per VA, over a few namespaces.

The operator's inventory is fed these objects directly (``apply_variant``/``apply_deployment``/
``apply_pod``), exactly what the kopf watch handlers would pass it: pod -> VA mapping then needs no
API call, which the counting Kubernetes client proves.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.emulator_proc import PodSpec
from bench.report import BATCHED_MODES, DECIDE_ALL
from wva.actuator.metrics import MetricsEmitter
from wva.actuator.status import StatusWriter
from wva.api.constants import API_VERSION, KIND
from wva.collector import MetricsCollector, new_metrics_collector
from wva.collector.legacy import CacheConfig
from wva.collector.v2 import PodVAMapper, PrometheusSource, PrometheusSourceConfig, SourceRegistry, V2MetricsCollector
from wva.collector.v2.recording import RecordingMode
from wva.inventory import Inventory
from wva.saturation.config import SaturationConfigStore
from wva.saturation.engine import SaturationEngine
from wva.sharding import ShardAssignment

PODS_PER_VA = 4
NAMESPACES = 4
WRITE_CALLS = frozenset({"patch_va_status", "create_event", "patch_deployment_scale"})


@dataclass(frozen=True)
class Variant:
    index: int

    @property
    def namespace(self) -> str:
        return f"bench-{self.index % NAMESPACES}"

    @property
    def name(self) -> str:
        return f"va-{self.index:04d}"

    @property
    def model(self) -> str:
        return f"org/model-{self.index:04d}"

    @property
    def deployment(self) -> str:
        return f"model-{self.index:04d}"

    @property
    def template_hash(self) -> str:
        return hashlib.sha1(self.deployment.encode()).hexdigest()[:10]

    def pod_names(self) -> list[str]:
        return [f"{self.deployment}-{self.template_hash}-p{j:03d}" for j in range(PODS_PER_VA)]

    def va_body(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": f"uid-{self.name}", "generation": 1},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": self.deployment},
                "modelID": self.model,
                "variantCost": "10.0",
                "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 256}]},
            },
        }

    def deployment_body(self) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.deployment, "namespace": self.namespace},
            "spec": {"replicas": PODS_PER_VA},
            "status": {"replicas": PODS_PER_VA, "readyReplicas": PODS_PER_VA},
        }

    def pod_bodies(self) -> list[dict[str, Any]]:
        rs = f"{self.deployment}-{self.template_hash}"
        return [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": self.namespace,
                    "labels": {"pod-template-hash": self.template_hash},
                    "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "controller": True}
                    ],
                },
                "status": {
                    "phase": "Running",
                    "podIP": "10.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            for pod in self.pod_names()
        ]

    def emulator_pods(self) -> list[PodSpec]:
        # a fleet at its equilibrium: every variant has the replicas its load needs (KV usage 0.55-0.69,
        # queues of 0-1: neither rule fires), so the steady state is that of a cluster where the HPA has
        # acted on earlier decisions; values differ per pod
        return [
            (pod, self.namespace, self.model,
             {"kv_cache_usage": round(0.55 + 0.02 * ((self.index + j) % 8), 3), "num_requests_waiting": j % 2})
            for j, pod in enumerate(self.pod_names())
        ]


def fleet(n: int) -> list[Variant]:
    return [Variant(i) for i in range(n)]


def populate(inventory: Inventory, variants: list[Variant]) -> None:
    for v in variants:
        inventory.apply_deployment(v.deployment_body())
        inventory.apply_variant(v.va_body())
        for body in v.pod_bodies():
            inventory.apply_pod(body)


class CountingKube:
    """Stands in for ``wva.kube.KubeClient``: answers instantly and counts every call by method.

    Writes (status patches, Events, scale) are expected; any other call (a List or Get) would be
    an API read the engine made, e.g. for pod -> VA mapping, and is counted under its method name.
    """

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    def _count(self, name: str) -> None:
        self.calls[("write" if name in WRITE_CALLS else "read", name)] += 1

    async def patch_va_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self._count("patch_va_status")
        return {"status": status}

    async def create_event(self, *args: Any, **kwargs: Any) -> None:
        self._count("create_event")

    async def patch_deployment_scale(self, *args: Any, **kwargs: Any) -> None:
        self._count("patch_deployment_scale")

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._count(name)
            return None

        return call

    def totals(self) -> tuple[int, int]:
        """(reads, writes) so far."""
        reads = sum(n for (kind, _), n in self.calls.items() if kind == "read")
        writes = sum(n for (kind, _), n in self.calls.items() if kind == "write")
        return reads, writes


def build_collector(mode: str, prom: Any, mapper: PodVAMapper, query_timeout: float = 30.0) -> MetricsCollector:
    """The collector of a benchmark mode: ``v1``, ``v2-per-model``, ``v2-batched`` (raw series only) or
    ``v2-recorded`` (batched, reading wva's recording rules where they exist, as ``WVA_RECORDING_RULES=auto``)."""
    if mode == "v1":
        # upstream v1 as the engine sees it every cycle: per-model queries, no result cache in between
        return new_metrics_collector(
            False, prom, mapper, cache_config=CacheConfig(enabled=False), query_timeout=query_timeout
        )
    registry = SourceRegistry()
    registry.register("prometheus", PrometheusSource(prom, PrometheusSourceConfig(query_timeout=query_timeout)))
    recording = RecordingMode.AUTO if mode == "v2-recorded" else RecordingMode.OFF
    return V2MetricsCollector(registry, mapper, batch_queries=mode in BATCHED_MODES, recording_rules=recording)


@dataclass
class BenchOperator:
    """The operator's parts for the synthetic fleet, wired as ``wva run`` wires them, minus kopf.

    ``prefetch_seconds`` collects the wall time of every ``begin_cycle`` (the batch prefetch).
    """

    inventory: Inventory
    collector: MetricsCollector
    kube: CountingKube
    engine: SaturationEngine
    prefetch_seconds: list[float] = field(default_factory=list)


def build_operator(
    n: int, prom: Any, mode: str = "v2-batched", shard: ShardAssignment | None = None, query_timeout: float = 30.0
) -> BenchOperator:
    """N VAs of the fleet in an inventory (of one shard, if given), a collector over ``prom``, the
    engine and a counting Kubernetes client; ``begin_cycle`` is timed."""
    inventory = Inventory(PodVAMapper(), shard=shard)
    populate(inventory, fleet(n))  # every object of the fleet, as the watches deliver them
    kube = CountingKube()
    collector = build_collector(mode, prom, inventory.mapper, query_timeout)
    engine = SaturationEngine(
        inventory, collector, SaturationConfigStore(), StatusWriter(kube, inventory),  # type: ignore[arg-type]
        MetricsEmitter(), kube,  # type: ignore[arg-type]
        reuse_decisions=mode != DECIDE_ALL,
    )
    op = BenchOperator(inventory, collector, kube, engine)
    begin_cycle = getattr(collector, "begin_cycle", None)
    if begin_cycle is not None:

        async def timed_begin_cycle(models: Sequence[tuple[str, str]]) -> None:
            started = time.perf_counter()
            try:
                await begin_cycle(models)
            finally:
                op.prefetch_seconds.append(time.perf_counter() - started)

        collector.begin_cycle = timed_begin_cycle  # type: ignore[attr-defined]
    return op
