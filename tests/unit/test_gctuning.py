"""wva.gctuning: the operator process's garbage-collector thresholds, and the pause during engine cycles."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from test_engine import _fresh_env, deployment, va

from wva import gctuning
from wva.gctuning import OPERATOR_GC_THRESHOLDS, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


@pytest.mark.usefixtures("restore_gc")
def test_sets_thresholds_returns_the_old_ones_and_freezes_what_is_alive() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert tune_gc() == (700, 10, 10)
    assert gc.get_threshold() == OPERATOR_GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    # cycles are still collected: the collector runs less often, it is not off
    assert gc.isenabled()

    class Node:
        ref: object

    node = Node()
    node.ref = node
    del node
    assert gc.collect() >= 1


@pytest.mark.usefixtures("restore_gc")
def test_without_freeze_nothing_is_frozen() -> None:
    gc.unfreeze()
    tune_gc((1000, 10, 10), freeze=False)
    assert gc.get_threshold() == (1000, 10, 10)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("bad", [(0, 10, 10), (700, -1, 10), (700, 10)])
def test_rejects_bad_thresholds_naming_them(bad: tuple[int, ...]) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match=str(bad[0])):
        tune_gc(bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == before


def test_paused_turns_automatic_collection_off_and_restores_the_previous_state() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gctuning.paused():
        assert not gc.isenabled()
        raise RuntimeError("a failing cycle")
    assert gc.isenabled()  # back on, even after an exception
    gc.disable()
    try:
        with gctuning.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # someone else had turned it off: it stays off
    finally:
        gc.enable()


async def test_the_engine_pauses_the_collector_during_a_cycle_only() -> None:
    engine, inventory, collector, _kube = _fresh_env()
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = [0.6, 0.6]
    seen: list[bool] = []
    collect = collector.collect_replica_metrics

    async def watching(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return await collect(*args)

    collector.collect_replica_metrics = watching  # type: ignore[method-assign]
    await engine.run_cycle()
    assert seen == [False] and gc.isenabled()
    engine.pause_gc = False
    await engine.run_cycle()
    assert seen == [False, True]


async def test_a_long_cycle_gets_automatic_collection_back() -> None:
    engine, inventory, collector, _kube = _fresh_env()
    inventory.apply_variant(va("v"))
    inventory.apply_deployment(deployment("v", 2))
    collector.kv["v"] = [0.6, 0.6]
    engine.gc_pause_limit = 0.05
    seen: list[bool] = []
    collect = collector.collect_replica_metrics

    async def slow(*args: Any) -> Any:  # a cycle held up by a slow Prometheus
        seen.append(gc.isenabled())
        await asyncio.sleep(0.2)
        seen.append(gc.isenabled())
        return await collect(*args)

    collector.collect_replica_metrics = slow  # type: ignore[method-assign]
    await engine.run_cycle()
    assert seen == [False, True] and gc.isenabled()
