"""build_cache_key and Cache: collision freedom, exact TTL expiry, bounds, cleanup, threads, lifecycle."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_v2_support import wait_until

from fakes import FakeClock
from wva.collector.v2 import Cache, MetricResult, build_cache_key


def result(name: str = "q", error: str | None = None) -> MetricResult:
    return MetricResult(query_name=name, values=[], collected_at=0.0, error=error)


# --- keys ----------------------------------------------------------------------------------------


def test_key_format() -> None:
    assert build_cache_key("kv_cache_usage", {}) == "kv_cache_usage"
    assert build_cache_key("kv_cache_usage", None) == "kv_cache_usage"
    assert (
        build_cache_key("kv_cache_usage", {"namespace": "llm", "modelID": "meta/llama"})
        == "kv_cache_usage:modelID=meta/llama,namespace=llm"
    )


def test_key_separators_are_percent_encoded() -> None:
    # Upstream gives both of these "q:a=1,b=2".
    assert build_cache_key("q", {"a": "1,b=2"}) == "q:a=1%2Cb%3D2"
    assert build_cache_key("q", {"a": "1", "b": "2"}) == "q:a=1,b=2"
    assert build_cache_key("q", {"a": "%2C"}) == "q:a=%252C"
    assert build_cache_key("q:a=1", {}) == "q%3Aa%3D1"


params_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=8), params_maps, st.text(max_size=8), params_maps)
def test_different_inputs_never_share_a_key(n1: str, p1: dict[str, str], n2: str, p2: dict[str, str]) -> None:
    if (n1, p1) != (n2, p2):
        assert build_cache_key(n1, p1) != build_cache_key(n2, p2)


@settings(max_examples=200, deadline=None)
@given(params_maps, params_maps)
def test_param_maps_never_collide_for_one_query(p1: dict[str, str], p2: dict[str, str]) -> None:
    assert (build_cache_key("kv_cache_usage", p1) == build_cache_key("kv_cache_usage", p2)) == (p1 == p2)


# --- cache ---------------------------------------------------------------------------------------


def test_entry_expires_strictly_after_its_ttl() -> None:
    clock = FakeClock(100.0)
    cache = Cache(default_ttl=30.0, clock=clock)
    stored = cache.set("k", result())
    assert (stored.cached_at, stored.expires_at) == (100.0, 130.0)
    clock.now = 130.0
    got = cache.get("k")
    assert got is not None and got.result == result()
    clock.now = 130.000001
    assert cache.get("k") is None


def test_per_entry_ttl_and_zero_or_none_mean_default() -> None:
    clock = FakeClock(0.0)
    cache = Cache(default_ttl=10.0, clock=clock)
    cache.set("short", result("short"), ttl=1.0)
    cache.set("long", result("long"), ttl=100.0)
    cache.set("zero", result("zero"), ttl=0)
    cache.set("none", result("none"))
    clock.now = 5.0
    assert cache.get("short") is None
    assert all(cache.get(k) is not None for k in ("long", "zero", "none"))
    clock.now = 10.5
    assert cache.get("zero") is None and cache.get("none") is None
    assert cache.get("long") is not None
    with pytest.raises(ValueError):
        cache.set("neg", result(), ttl=-1.0)


def test_set_replaces_and_restarts_ttl() -> None:
    clock = FakeClock(0.0)
    cache = Cache(default_ttl=10.0, clock=clock)
    cache.set("k", result("old"))
    clock.now = 8.0
    cache.set("k", result("new"))
    clock.now = 15.0
    got = cache.get("k")
    assert got is not None and got.result.query_name == "new" and got.cached_at == 8.0


def test_error_results_are_cached_like_any_other() -> None:
    cache = Cache(clock=FakeClock())
    cache.set("k", result(error="boom"))
    got = cache.get("k")
    assert got is not None and got.result.has_error and got.result.error == "boom"


def test_bounded_size_evicts_least_recently_used() -> None:
    clock = FakeClock(0.0)
    cache = Cache(default_ttl=100.0, maxsize=3, clock=clock)
    for key in ("a", "b", "c"):
        cache.set(key, result(key))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.set("d", result("d"))
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [k for k in "acd" if cache.get(k) is not None] == ["a", "c", "d"]


def test_expired_entries_make_room_before_live_ones_are_evicted() -> None:
    clock = FakeClock(0.0)
    cache = Cache(default_ttl=100.0, maxsize=3, clock=clock)
    cache.set("live1", result(), ttl=100.0)
    cache.set("dying", result(), ttl=1.0)
    cache.set("live2", result(), ttl=100.0)
    clock.now = 2.0
    cache.set("new", result())
    assert all(cache.get(k) is not None for k in ("live1", "live2", "new"))


def test_cleanup_removes_only_expired_entries() -> None:
    clock = FakeClock(0.0)
    cache = Cache(default_ttl=10.0, clock=clock)
    for i in range(5):
        cache.set(f"short{i}", result(), ttl=1.0)
    cache.set("long", result(), ttl=50.0)
    clock.now = 1.0
    assert cache.cleanup() == 0
    clock.now = 1.5
    assert cache.cleanup() == 5
    assert len(cache) == 1 and cache.get("long") is not None


def test_delete_and_clear() -> None:
    cache = Cache(clock=FakeClock())
    cache.set("a", result())
    cache.set("b", result())
    assert cache.delete("a") is True and cache.delete("a") is False
    assert cache.get("a") is None and len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Cache(default_ttl=-1)
    with pytest.raises(ValueError):
        Cache(maxsize=0)


def test_concurrent_set_and_get_from_threads() -> None:
    cache = Cache(default_ttl=60.0, maxsize=100_000)
    n_threads, per_thread = 8, 500
    barrier = threading.Barrier(n_threads)
    errors: list[str] = []

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            key = f"t{t}-{i}"
            cache.set(key, result(key))
            got = cache.get(key)
            if got is None or got.result.query_name != key:
                errors.append(key)
            cache.get(f"t{(t + 1) % n_threads}-{i}")  # read others' keys concurrently

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(cache) == n_threads * per_thread
    for t in range(n_threads):
        for i in range(0, per_thread, 50):
            got = cache.get(f"t{t}-{i}")
            assert got is not None and got.result.query_name == f"t{t}-{i}"


class CountingCache(Cache):
    """Records what each cleanup removed, so the background sweep is observable."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.removed: list[int] = []

    def cleanup(self) -> int:
        removed = super().cleanup()
        self.removed.append(removed)
        return removed


async def test_background_cleanup_runs_and_stops_cleanly() -> None:
    clock = FakeClock(0.0)
    cache = CountingCache(default_ttl=1.0, cleanup_interval=0.01, clock=clock)
    await cache.start()
    first_task = cache._task
    await cache.start()  # a second start is harmless: still the same task
    assert cache._task is first_task
    try:
        assert cache.running
        cache.set("a", result())
        cache.set("b", result(), ttl=100.0)
        await wait_until(lambda: len(cache.removed) >= 2)
        assert sum(cache.removed) == 0  # nothing expired yet
        clock.now = 2.0
        # Nothing reads "a": only the background sweep removes it.
        await wait_until(lambda: sum(cache.removed) == 1)
        assert cache.get("b") is not None
    finally:
        await cache.stop()
    assert not cache.running and first_task is not None and first_task.cancelled()
    await cache.stop()  # idempotent


def test_zero_cleanup_interval_starts_nothing() -> None:
    async def run() -> bool:
        cache = Cache(cleanup_interval=0)
        await cache.start()
        return cache.running

    assert asyncio.run(run()) is False
