"""wva.gctuning: the operator process's garbage-collector thresholds."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

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
