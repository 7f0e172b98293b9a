"""Drain-aware scale-down: choose which replica goes before the replica count drops.

When wva lowers a Deployment's replicas, the ReplicaSet controller picks the pods to delete. Among
pods that are equally scheduled, running and ready it removes the one with the lowest
``controller.kubernetes.io/pod-deletion-cost`` first, so before scaling down wva writes that
annotation on every ready pod of the Deployment from the pod's own load:

    cost = 1000 * min(ceil(in_flight), 2_000_000) + round(999 * clamp(kv_cache_usage, 0, 1))

In-flight requests (``vllm:num_requests_running``) dominate, because deleting a pod aborts them; the
KV-cache usage (0..1, the context a pod holds) breaks ties among pods with as many requests in
flight. An idle, empty pod costs 0; the most a known pod can cost is 2,000,000,999.

*Unknown load is never a guess:* a signal counts when at least one pod of the Deployment has it,
and a pod lacking a counted signal (or having none) costs ``UNKNOWN_COST`` (2^31-1, the largest
value the annotation takes), above every measured pod, so it is never chosen as the victim while a
measured pod can go instead. When the victims' and the survivors' costs tie at the boundary, the
victims chosen (lowest cost, then name) get one less, so the controller removes exactly the pods
that :func:`plan_scale_down` names.

Only pods whose annotation value changes are patched (wva remembers what it wrote per Deployment).
A failed patch is logged and counted and never blocks the scale-down. With a drain timeout, the
scale-down then waits (bounded) until each victim reports no request in flight.

Log lines are stable for grepping: ``Deletion costs set``, ``Deletion cost annotation failed``,
``Drain wait done``, ``Drain wait timed out``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from wva.inventory import PodRecord
from wva.kube import KubeError

if TYPE_CHECKING:
    from wva.actuator.metrics import OperatorMetrics
    from wva.settings import Settings

__all__ = [
    "DELETION_COST_ANNOTATION",
    "IN_FLIGHT_WEIGHT",
    "MAX_IN_FLIGHT",
    "UNKNOWN_COST",
    "DrainAwareScaler",
    "InFlightFetcher",
    "PodAnnotator",
    "PodLoad",
    "ScalePlan",
    "deletion_costs",
    "plan_scale_down",
]

log = logging.getLogger(__name__)

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
IN_FLIGHT_WEIGHT = 1000  # one request in flight outweighs any KV-cache usage (0..999)
KV_WEIGHT = 999
MAX_IN_FLIGHT = 2_000_000  # keeps every measured cost below UNKNOWN_COST
UNKNOWN_COST = 2**31 - 1  # the annotation is an int32; the largest value is reserved for unknown load


class PodLoad(NamedTuple):
    """One pod's load: KV-cache usage (0..1) and requests in flight; None where not known."""

    kv_cache_usage: float | None
    in_flight: float | None


LoadLike = PodLoad | tuple[float | None, float | None]
InFlightFetcher = Callable[[str, str], Awaitable[float | None]]
"""``await fetch(namespace, pod)``: the pod's requests in flight (``vllm:num_requests_running``), None if unknown."""


class PodAnnotator(Protocol):
    """The one Kubernetes write the scaler makes (``KubeClient`` implements it)."""

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None: ...


def _known(value: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _cost(kv: float | None, in_flight: float | None) -> int:
    cost = 0
    if in_flight is not None:
        cost += IN_FLIGHT_WEIGHT * min(math.ceil(max(in_flight, 0.0)), MAX_IN_FLIGHT)
    if kv is not None:
        cost += round(KV_WEIGHT * min(max(kv, 0.0), 1.0))
    return cost


def deletion_costs(loads: Mapping[str, LoadLike]) -> dict[str, int]:
    """The pod-deletion-cost of each pod of one Deployment from its load (pure; see the module doc).

    ``loads`` maps pod name to ``(kv_cache_usage, in_flight)``, either None when unknown. Busier pods
    get higher costs; equal loads get equal costs; a pod missing a signal that another pod of the set
    has (or having no signal at all) gets :data:`UNKNOWN_COST`. NaN and infinities count as unknown.
    """
    cleaned = {pod: (_known(load[0]), _known(load[1])) for pod, load in loads.items()}
    use_kv = any(kv is not None for kv, _ in cleaned.values())
    use_in_flight = any(n is not None for _, n in cleaned.values())
    costs: dict[str, int] = {}
    for pod, (kv, in_flight) in cleaned.items():
        missing = (use_kv and kv is None) or (use_in_flight and in_flight is None)
        if missing or not (use_kv or use_in_flight):
            costs[pod] = UNKNOWN_COST
        else:
            costs[pod] = _cost(kv, in_flight)
    return costs


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """What one scale-down writes and which pods the ReplicaSet controller will remove."""

    costs: Mapping[str, int]  # pod -> annotation value, for every ready pod
    victims: tuple[str, ...]  # pods of measured load chosen to go, lowest cost first
    undetermined: int = 0  # further pods to go, among pods of unknown load (the controller's own choice)


def plan_scale_down(loads: Mapping[str, LoadLike], current: int, target: int) -> ScalePlan:
    """Costs for the ready pods in ``loads`` and the victims of a scale-down from ``current`` to ``target``.

    The ReplicaSet controller removes ``current - target`` pods, pending and not-ready ones first;
    those are not in ``loads`` (only ready pods are), so ``min(current, len(loads)) - target`` of the
    ready pods go. Victims are the lowest costs, ties broken by pod name; a tie across the boundary
    gives the chosen victims one less, so the controller cannot pick a survivor instead. Pods of
    unknown load are never named as victims: if the scale-down must take some of them, how many is
    ``undetermined``.
    """
    costs = deletion_costs(loads)
    going = max(0, min(current, len(costs)) - max(target, 0))
    ranked = sorted(costs, key=lambda pod: (costs[pod], pod))
    chosen, staying = ranked[:going], ranked[going:]
    if chosen and staying:
        boundary = costs[staying[0]]
        if costs[chosen[-1]] == boundary and boundary < UNKNOWN_COST:
            for pod in chosen:
                if costs[pod] == boundary:
                    costs[pod] = boundary - 1
    victims = tuple(pod for pod in chosen if costs[pod] < UNKNOWN_COST)
    return ScalePlan(costs=costs, victims=victims, undetermined=len(chosen) - len(victims))


class DrainAwareScaler:
    """Sets pod-deletion-cost annotations before a scale-down and, optionally, waits for the victims to drain.

    ``pods(namespace, deployment)`` lists the Deployment's ready pods (``Inventory.ready_pods``).
    ``in_flight`` optionally fetches one pod's requests in flight; it fills the loads the caller did
    not know and is polled by :meth:`wait_drained`. Nothing here raises into the caller: the scale-down
    goes ahead whatever happens to the annotations.
    """

    def __init__(
        self,
        kube: PodAnnotator,
        pods: Callable[[str, str], Sequence[PodRecord]],
        *,
        enabled: bool = True,
        drain_timeout: float = 0.0,
        in_flight: InFlightFetcher | None = None,
        poll_interval: float = 1.0,
        fetch_timeout: float = 5.0,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.pods = pods
        self.enabled = enabled
        self.drain_timeout = max(0.0, drain_timeout)
        self.in_flight = in_flight
        self.poll_interval = poll_interval
        self.fetch_timeout = fetch_timeout
        self.metrics = metrics
        self.clock = clock
        self.stats: Counter[str] = Counter()  # patched, unchanged, failed, gone, drained, drain_timeout, errors
        self._written: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, deployment) -> pod -> value

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        kube: PodAnnotator,
        pods: Callable[[str, str], Sequence[PodRecord]],
        *,
        in_flight: InFlightFetcher | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> DrainAwareScaler:
        """A scaler configured by ``WVA_DELETION_COST`` and ``WVA_DRAIN_TIMEOUT``."""
        return cls(
            kube, pods, enabled=settings.deletion_cost, drain_timeout=settings.drain_timeout,
            in_flight=in_flight, metrics=metrics,
        )

    def forget(self, namespace: str, deployment: str) -> None:
        """The Deployment is gone: drop what was written to its pods."""
        self._written.pop((namespace, deployment), None)

    async def prepare_scale_down(
        self,
        namespace: str,
        deployment: str,
        current: int,
        target: int,
        loads: Mapping[str, LoadLike],
    ) -> None:
        """Annotate the Deployment's ready pods so the ``current - target`` least loaded go first.

        ``loads`` maps pod name to ``(kv_cache_usage, in_flight)``, None where unknown; a ready pod
        missing from it has neither. With an ``in_flight`` fetcher, every in-flight count that is
        unknown is fetched (a pod whose KV usage is unknown while others' is known stays unknown).
        Call it right before patching the scale subresource, only when ``target < current``. Never
        raises (cancellation aside).
        """
        if not self.enabled or target >= current:
            return
        try:
            await self._prepare(namespace, deployment, current, target, loads)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats["errors"] += 1
            self._count_error("deletion_cost")
            log.exception(
                "Deletion cost preparation failed; scaling down without it namespace=%s deployment=%s",
                namespace, deployment,
            )

    async def _prepare(
        self, namespace: str, deployment: str, current: int, target: int, loads: Mapping[str, LoadLike]
    ) -> None:
        names = [p.name for p in self.pods(namespace, deployment)]
        if not names:
            log.info("Deletion costs skipped, no ready pods namespace=%s deployment=%s", namespace, deployment)
            return
        known = await self._complete(namespace, names, loads)
        plan = plan_scale_down(known, current, target)
        patched, unchanged, failed = await self._annotate(namespace, deployment, plan.costs)
        log.info(
            "Deletion costs set namespace=%s deployment=%s from=%d to=%d victims=%s undetermined=%d "
            "patched=%d unchanged=%d failed=%d costs=%s",
            namespace, deployment, current, target, ",".join(plan.victims) or "-", plan.undetermined,
            patched, unchanged, failed, ",".join(f"{pod}={cost}" for pod, cost in sorted(plan.costs.items())),
        )
        if self.drain_timeout > 0 and plan.victims:
            await self.wait_drained(namespace, plan.victims, self.drain_timeout)

    async def _complete(
        self, namespace: str, names: Sequence[str], loads: Mapping[str, LoadLike]
    ) -> dict[str, PodLoad]:
        """The loads of ``names``, with in-flight counts the caller did not have fetched (concurrently)."""
        known = {name: PodLoad(*loads.get(name, (None, None))) for name in names}
        if self.in_flight is None:
            return known
        missing = [name for name, load in known.items() if _known(load.in_flight) is None]
        fetched = await asyncio.gather(*(self._fetch(namespace, name) for name in missing))
        for name, value in zip(missing, fetched, strict=True):
            known[name] = known[name]._replace(in_flight=value)
        return known

    async def _fetch(self, namespace: str, pod: str, budget: float | None = None) -> float | None:
        if self.in_flight is None:
            return None
        timeout = self.fetch_timeout if budget is None else max(0.0, min(self.fetch_timeout, budget))
        try:
            async with asyncio.timeout(timeout):
                return _known(await self.in_flight(namespace, pod))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a timeout or a scrape failure: unknown, never zero
            log.debug("In-flight fetch failed namespace=%s pod=%s error=%r", namespace, pod, exc)
            return None

    async def _annotate(
        self, namespace: str, deployment: str, costs: Mapping[str, int]
    ) -> tuple[int, int, int]:
        """Patch the pods whose value changes; returns (patched, unchanged, failed)."""
        previous = self._written.get((namespace, deployment), {})
        written = {pod: value for pod, value in previous.items() if pod in costs}  # forget pods that are gone
        self._written[(namespace, deployment)] = written
        changed = {pod: str(cost) for pod, cost in costs.items() if written.get(pod) != str(cost)}
        unchanged = len(costs) - len(changed)
        self.stats["unchanged"] += unchanged
        outcomes = await asyncio.gather(
            *(self._patch(namespace, deployment, pod, value) for pod, value in sorted(changed.items()))
        )
        patched = sum(1 for ok in outcomes if ok)
        return patched, unchanged, len(changed) - patched

    async def _patch(self, namespace: str, deployment: str, pod: str, value: str) -> bool:
        written = self._written.setdefault((namespace, deployment), {})
        try:
            await self.kube.patch_pod_annotations(namespace, pod, {DELETION_COST_ANNOTATION: value})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            written.pop(pod, None)  # unknown state now: patch again next time
            if isinstance(exc, KubeError) and exc.status == 404:
                self.stats["gone"] += 1
                log.info("Deletion cost skipped, pod gone namespace=%s pod=%s", namespace, pod)
                return False
            self.stats["failed"] += 1
            self._count_error("deletion_cost")
            log.warning(
                "Deletion cost annotation failed namespace=%s deployment=%s pod=%s cost=%s error=%s",
                namespace, deployment, pod, value, exc,
            )
            return False
        written[pod] = value
        self.stats["patched"] += 1
        return True

    async def wait_drained(self, namespace: str, pods: Sequence[str], timeout: float | None = None) -> bool:
        """Wait until each of ``pods`` has reported no request in flight, for at most ``timeout`` seconds
        (default: the scaler's drain timeout). Returns True when all drained, False on timeout or when no
        ``in_flight`` fetcher was given. An unknown count is not zero: the wait goes on."""
        limit = self.drain_timeout if timeout is None else max(0.0, timeout)
        if not pods:
            return True
        if self.in_flight is None:
            log.warning("Drain wait skipped, no in-flight source namespace=%s pods=%s", namespace, ",".join(pods))
            return False
        started = self.clock()
        deadline = started + limit
        waiting = list(dict.fromkeys(pods))
        last: dict[str, float | None] = {}
        while True:
            remaining = deadline - self.clock()
            values = await asyncio.gather(*(self._fetch(namespace, pod, max(remaining, 0.0)) for pod in waiting))
            # the last count each pod reported (a fetch cut short by the deadline does not erase it)
            last.update((pod, value) for pod, value in zip(waiting, values, strict=True) if value is not None)
            waiting = [pod for pod, value in zip(waiting, values, strict=True) if value is None or value > 0]
            if not waiting:
                self.stats["drained"] += 1
                log.info(
                    "Drain wait done namespace=%s pods=%s waited=%.1fs",
                    namespace, ",".join(pods), self.clock() - started,
                )
                return True
            remaining = deadline - self.clock()
            if remaining <= 0:
                self.stats["drain_timeout"] += 1
                log.warning(
                    "Drain wait timed out namespace=%s pods=%s waited=%.1fs in_flight=%s",
                    namespace, ",".join(waiting), self.clock() - started,
                    ",".join(f"{pod}={_show(last.get(pod))}" for pod in waiting),
                )
                return False
            await asyncio.sleep(min(self.poll_interval, remaining))

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels("actuator", kind).inc()


def _show(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"
