"""Background fetching of collector v1 under looptime: interval, due-ness, timeouts, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from wva.collector.legacy import CacheConfig, PrometheusCollector, QueryPolicy
from wva.collector.types import VariantRef

T = TypeVar("T")

VARIANTS = [VariantRef("va", "ns", "llama", accelerator_name="A100", cost=20.0)]


class CountingProm:
    """Synchronous fake PrometheusConnect that counts queries by kind."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.fail = False

    def custom_query(self, query: str) -> Any:
        self.queries.append(query)
        if self.fail:
            raise ConnectionError("prometheus down")
        if "kv_cache_usage_perc" in query or "num_requests_waiting" in query:
            return [{"metric": {"pod": "llama-1-a"}, "value": [0, "0.5"]}]
        if "kube_pod_info" in query:
            return [{"metric": {"pod": "llama-1-a"}, "value": [0, "1"]}]
        return [{"metric": {}, "value": [0, "1"]}]

    def count(self, fragment: str) -> int:
        return sum(fragment in q for q in self.queries)

    @property
    def va_fetches(self) -> int:
        return self.count("request_success_total")

    @property
    def model_fetches(self) -> int:
        return self.count("kv_cache_usage_perc")


async def inline(fn: Callable[[], T]) -> T:
    return fn()


def make(prom: Any, *, interval: float = 30.0, enabled: bool = True, **kwargs: Any) -> PrometheusCollector:
    loop = asyncio.get_running_loop()
    return PrometheusCollector(
        prom,
        CacheConfig(enabled=enabled, ttl=45.0, cleanup_interval=60.0, fetch_interval=interval),
        clock=loop.time,
        query_policy=kwargs.pop("query_policy", QueryPolicy(attempts=1)),
        run_blocking=kwargs.pop("run_blocking", inline),
        **kwargs,
    )


@contextlib.asynccontextmanager
async def tracked_and_running(prom: Any) -> AsyncIterator[PrometheusCollector]:
    """A started collector tracking VA "va" and model "m" in "ns"; stopped on exit."""
    collector = make(prom)
    collector.track_va("m", "ns", "va")
    collector.track_model("m", "ns", VARIANTS)
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop()


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.mark.looptime
async def test_tracked_items_are_refreshed_every_interval() -> None:
    prom = CountingProm()
    async with tracked_and_running(prom):
        await asyncio.sleep(1)
        assert (prom.va_fetches, prom.model_fetches) == (1, 1)  # runs immediately
        await asyncio.sleep(28)  # t=29
        assert (prom.va_fetches, prom.model_fetches) == (1, 1)
        await asyncio.sleep(2)  # t=31
        assert (prom.va_fetches, prom.model_fetches) == (2, 2)
        await asyncio.sleep(60)  # t=91: ticks at 60 and 90
        assert (prom.va_fetches, prom.model_fetches) == (4, 4)
        assert prom.count("kube_pod_info") == 4


@pytest.mark.looptime
async def test_background_results_serve_foreground_calls_from_the_cache() -> None:
    prom = CountingProm()
    async with tracked_and_running(prom) as collector:
        await asyncio.sleep(100)  # last refresh at t=90, so the entries are 10 s old
        before = len(prom.queries)
        metrics = await collector.collect_optimizer_metrics("m", "ns", "va")
        rows = await collector.collect_replica_metrics("m", "ns", VARIANTS)
        assert len(prom.queries) == before
        assert metrics.arrival_rate == 60.0
        assert [(r.pod_name, r.variant_name, r.cost) for r in rows] == [("llama-1-a", "va", 20.0)]
        assert rows[0].metadata is not None and rows[0].metadata.age == pytest.approx(10.0)


@pytest.mark.looptime
async def test_items_fetched_in_the_foreground_are_not_fetched_again_until_due() -> None:
    prom = CountingProm()
    collector = make(prom)
    await collector.collect_optimizer_metrics("m", "ns", "va")  # t=0, tracks the VA as fetched
    assert prom.va_fetches == 1
    await collector.start()
    try:
        await asyncio.sleep(29)
        assert prom.va_fetches == 1  # the immediate tick found nothing due
        await asyncio.sleep(2)
        assert prom.va_fetches == 2
        await collector.collect_optimizer_metrics("m", "ns", "va")  # cache hit: no query, no reset
        await asyncio.sleep(30)
        assert prom.va_fetches == 3
    finally:
        await collector.stop()


@pytest.mark.looptime
async def test_untracked_items_are_no_longer_fetched() -> None:
    prom = CountingProm()
    async with tracked_and_running(prom) as collector:
        await asyncio.sleep(1)
        collector.untrack_va("m", "ns", "va")
        collector.untrack_model("m", "ns")
        await asyncio.sleep(120)
        assert (prom.va_fetches, prom.model_fetches) == (1, 1)


@pytest.mark.looptime
async def test_failures_are_retried_on_the_next_tick_and_do_not_stop_the_loop() -> None:
    prom = CountingProm()
    prom.fail = True
    collector = make(prom)
    collector.track_va("m", "ns", "va")
    await collector.start()
    try:
        await asyncio.sleep(61)  # ticks at 0, 30, 60 all fail
        assert prom.va_fetches == 3
        assert collector.cache.size() == 0
        prom.fail = False
        await asyncio.sleep(30)  # tick at 90 succeeds
        assert prom.va_fetches == 4
        assert collector.cache.get("m/ns/va/allocation-metrics") is not None
        assert collector.background_fetch_running
    finally:
        await collector.stop()


@pytest.mark.looptime
async def test_fetch_interval_zero_or_disabled_cache_starts_no_fetcher() -> None:
    for collector in (make(CountingProm(), interval=0.0), make(CountingProm(), enabled=False)):
        collector.track_va("m", "ns", "va")
        await collector.start()
        assert not collector.background_fetch_running
        await asyncio.sleep(100)
        await collector.stop()
    assert other_tasks() == set()


@pytest.mark.looptime
async def test_a_hanging_fetch_is_bounded_by_the_fetch_timeout() -> None:
    loop = asyncio.get_running_loop()
    prom = CountingProm()
    finished: list[float] = []

    async def hanging(fn: Callable[[], T]) -> T:
        result = fn()
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append(loop.time())
        return result

    # per-query timeout far away: only the fetch timeout applies
    policy = QueryPolicy(attempts=1, timeout=1000.0)
    collector = make(prom, run_blocking=hanging, fetch_timeout=7.0, query_policy=policy)
    collector.track_va("m", "ns", "va")
    await collector.start()
    try:
        await asyncio.sleep(8)
        assert len(finished) == 5 and all(t == pytest.approx(7.0) for t in finished)
        assert collector.cache.size() == 0
        # the next tick starts 30 s after the timed-out one ended (t=37)
        await asyncio.sleep(28)  # t=36
        assert prom.va_fetches == 1
        await asyncio.sleep(2)  # t=38
        assert prom.va_fetches == 2
    finally:
        await collector.stop()


@pytest.mark.looptime
async def test_stop_cancels_in_flight_fetches_and_leaves_no_tasks() -> None:
    prom = CountingProm()
    in_flight = 0

    async def slow(fn: Callable[[], T]) -> T:
        nonlocal in_flight
        in_flight += 1
        try:
            await asyncio.sleep(20)
            return fn()
        finally:
            in_flight -= 1

    collector = make(prom, run_blocking=slow)
    for va in ("a", "b", "c"):
        collector.track_va("m", "ns", va)
    collector.track_model("m", "ns", VARIANTS)
    await collector.start()
    await collector.start()  # idempotent
    await asyncio.sleep(5)
    assert in_flight == 8  # 3 VAs x 5 queries, bounded by QueryPolicy.max_concurrency
    assert other_tasks()
    await collector.stop()
    assert in_flight == 0
    assert other_tasks() == set()
    await asyncio.sleep(300)
    assert prom.queries == []  # nothing completed, nothing ran after stop
    await collector.stop()  # idempotent


@pytest.mark.looptime
async def test_collector_can_be_restarted_after_stop() -> None:
    prom = CountingProm()
    collector = make(prom)
    collector.track_va("m", "ns", "va")
    await collector.start()
    await asyncio.sleep(1)
    await collector.stop()
    await asyncio.sleep(100)
    assert prom.va_fetches == 1
    await collector.start()
    await asyncio.sleep(1)
    assert prom.va_fetches == 2  # due again (last fetch 101 s ago)
    await collector.stop()
    assert other_tasks() == set()
