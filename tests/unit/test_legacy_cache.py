"""MemoryCache / NoOpCache of collector v1, driven by an injected clock."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import FrozenInstanceError, dataclass

import pytest

from fakes import FakeClock
from wva.collector.legacy import MemoryCache, NoOpCache
from wva.collector.types import ReplicaMetrics


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> MemoryCache:
    return MemoryCache(ttl=30.0, cleanup_interval=60.0, clock=clock)


def test_set_get_and_entry_fields(cache: MemoryCache, clock: FakeClock) -> None:
    cache.set("k", 42)
    entry = cache.get("k")
    assert entry is not None
    assert (entry.data, entry.collected_at, entry.ttl) == (42, 1000.0, 30.0)
    clock.advance(12.5)
    assert cache.get("k") is not None
    assert entry.age(clock()) == 12.5


def test_missing_key_is_a_miss(cache: MemoryCache) -> None:
    assert cache.get("nope") is None


def test_expiry_is_strict_and_deletes_on_read(cache: MemoryCache, clock: FakeClock) -> None:
    cache.set("k", "v")
    clock.advance(30.0)
    assert cache.get("k") is not None  # exactly ttl old: still valid
    clock.advance(0.001)
    assert cache.size() == 1  # expired but not yet read or swept
    assert cache.get("k") is None
    assert cache.size() == 0  # deleted by the read


def test_per_entry_ttl_and_zero_means_default(cache: MemoryCache, clock: FakeClock) -> None:
    cache.set("short", 1, ttl=0.1)
    cache.set("default", 2, ttl=0)
    clock.advance(0.15)
    assert cache.get("short") is None
    entry = cache.get("default")
    assert entry is not None and entry.ttl == 30.0


def test_negative_ttl_rejected(cache: MemoryCache) -> None:
    with pytest.raises(ValueError):
        cache.set("k", 1, ttl=-1)
    with pytest.raises(ValueError):
        MemoryCache(ttl=-1, cleanup_interval=0)


def test_set_overwrites_and_restarts_the_clock(cache: MemoryCache, clock: FakeClock) -> None:
    cache.set("k", "old")
    clock.advance(20)
    cache.set("k", "new")
    clock.advance(20)
    entry = cache.get("k")
    assert entry is not None and entry.data == "new" and entry.collected_at == 1020.0


def test_invalidate_and_size(cache: MemoryCache) -> None:
    assert cache.size() == 0
    cache.set("a", 1)
    assert cache.size() == 1
    cache.set("b", 2)
    assert cache.size() == 2
    cache.invalidate("a")
    cache.invalidate("absent")
    assert cache.size() == 1
    assert cache.get("a") is None and cache.get("b") is not None


def test_invalidate_by_prefix(cache: MemoryCache) -> None:
    for key in [
        "model1/ns1/variant1/allocation-metrics",
        "model1/ns1/variant1/replica-metrics",
        "model1/ns1/variant2/allocation-metrics",
        "model2/ns1/variant1/allocation-metrics",
    ]:
        cache.set(key, key)
    assert cache.invalidate_by_prefix("model1/ns1/variant1/") == 2
    assert cache.get("model1/ns1/variant2/allocation-metrics") is not None
    assert cache.invalidate_by_prefix("model1/ns1/") == 1
    assert cache.size() == 1
    assert cache.get("model2/ns1/variant1/allocation-metrics") is not None


def test_clear(cache: MemoryCache) -> None:
    cache.set("a", 1)
    cache.set("b", 2)
    cache.clear()
    assert cache.size() == 0 and cache.get("a") is None


def test_cleanup_removes_only_expired(cache: MemoryCache, clock: FakeClock) -> None:
    cache.set("old", 1, ttl=5)
    cache.set("young", 2)
    clock.advance(10)
    assert cache.cleanup() == 1
    assert cache.size() == 1 and cache.get("young") is not None


def test_maxsize_drops_expired_first_then_oldest(clock: FakeClock) -> None:
    cache = MemoryCache(ttl=30, cleanup_interval=0, clock=clock, maxsize=3)
    cache.set("expiring", 0, ttl=1)
    cache.set("a", 1)
    cache.set("b", 2)
    clock.advance(2)
    cache.set("c", 3)  # evicts the expired entry, not "a"
    assert [cache.get(k) is not None for k in ("a", "b", "c")] == [True, True, True]
    cache.set("d", 4)  # nothing expired: evicts the oldest ("a")
    assert cache.size() == 3
    assert cache.get("a") is None and cache.get("d") is not None


def test_hits_and_misses_are_counted(cache: MemoryCache) -> None:
    cache.set("k", 1)
    cache.get("k")
    cache.get("k")
    cache.get("other")
    assert (cache.hits, cache.misses) == (2, 1)


# --- immutability ------------------------------------------------------------------------------


def test_list_and_dict_are_stored_as_immutable_copies(cache: MemoryCache) -> None:
    rows = [{"pod": "p1", "kv": 0.5}]
    cache.set("k", rows)
    rows.append({"pod": "p2"})
    rows[0]["kv"] = 0.9
    entry = cache.get("k")
    assert entry is not None
    data = entry.data
    assert isinstance(data, tuple) and len(data) == 1 and data[0]["kv"] == 0.5
    with pytest.raises(TypeError):
        data[0]["kv"] = 1.0
    with pytest.raises(AttributeError):
        data.append(1)  # type: ignore[attr-defined]


def test_frozen_dataclasses_are_kept_and_cannot_be_changed(cache: MemoryCache) -> None:
    row = ReplicaMetrics("p", 0.5, 1, "va", "ns", "m")
    cache.set("k", [row])
    entry = cache.get("k")
    assert entry is not None and entry.data == (row,)
    assert entry.data[0] is row  # no copy needed for an immutable value
    with pytest.raises(FrozenInstanceError):
        entry.data[0].kv_cache_usage = 1.0  # type: ignore[misc]


@dataclass
class Mutable:
    items: list[int]


def test_mutable_objects_are_copied_in_and_out(cache: MemoryCache) -> None:
    original = Mutable([1])
    cache.set("k", original)
    original.items.append(2)
    first = cache.get("k")
    assert first is not None and first.data == Mutable([1])
    first.data.items.append(3)
    second = cache.get("k")
    assert second is not None and second.data == Mutable([1])


def test_entries_cannot_be_changed(cache: MemoryCache) -> None:
    cache.set("k", 1)
    entry = cache.get("k")
    assert entry is not None
    with pytest.raises(FrozenInstanceError):
        entry.collected_at = 0.0  # type: ignore[misc]


def test_thread_safety_under_concurrent_writers(clock: FakeClock) -> None:
    cache = MemoryCache(ttl=30, cleanup_interval=0, clock=clock, maxsize=100_000)

    def writer(n: int) -> None:
        for i in range(500):
            cache.set(f"w{n}/{i}", i)
            cache.get(f"w{n}/{i // 2}")
            if i % 50 == 0:
                cache.invalidate_by_prefix(f"w{n}/1")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(8):
        assert cache.get(f"w{n}/499") is not None
        assert cache.get(f"w{n}/0") is not None


# --- sweeper -----------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_sweeper_runs_every_cleanup_interval_and_stop_cancels_it() -> None:
    loop = asyncio.get_running_loop()
    cache = MemoryCache(ttl=5, cleanup_interval=60, clock=loop.time)
    await cache.start()
    await cache.start()  # idempotent: still a single sweeper
    cache.set("k", 1)
    await asyncio.sleep(59)
    assert cache.size() == 1  # expired at t=5, but nobody read it and no sweep ran yet
    await asyncio.sleep(2)
    assert cache.size() == 0  # the sweep at t=60 removed it
    cache.set("k2", 1)
    await asyncio.sleep(120)
    assert cache.size() == 0
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert any("metrics-cache-cleanup" in t.get_name() for t in before)
    await cache.stop()
    await cache.stop()  # idempotent
    remaining = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert not any("metrics-cache-cleanup" in t.get_name() for t in remaining)


async def test_no_sweeper_when_cleanup_interval_is_zero() -> None:
    cache = MemoryCache(ttl=5, cleanup_interval=0)
    tasks_before = asyncio.all_tasks()
    await cache.start()
    assert asyncio.all_tasks() == tasks_before
    await cache.stop()


async def test_noop_cache_never_stores() -> None:
    cache = NoOpCache()
    await cache.start()
    cache.set("k", 1)
    assert cache.get("k") is None
    assert cache.size() == 0
    assert cache.invalidate_by_prefix("") == 0
    cache.invalidate("k")
    cache.clear()
    await cache.stop()
