"""Garbage-collector thresholds for the operator process.

At scale one engine cycle allocates on the order of 10^5 objects (parsed samples and per-model results)
that stay alive until the next cycle replaces them. With CPython's default thresholds (700, 10, 10)
that sets off dozens of young and several full collections per cycle, and every full collection walks
the whole heap: at 1000 VAs about a fifth of the cycle's CPU time (``make bench`` measures it). Higher
thresholds keep the same collector, so reference cycles are still freed, but run it far less often.
Objects that exist once the operator has started (modules, the handler registry) are moved out of
the collector's reach with ``gc.freeze()``, so full collections no longer walk them either.

During an engine cycle the collector is paused (:func:`paused`): at 10,000 models the cycle's batch
(140,000 decoded series) lives through the whole cycle, and every collection the cycle's allocations
set off walked it again, 200 ms of a 1.2 s cycle. Reference counting still frees the cycle's garbage
at once; what it cannot free (reference cycles) waits for the first collection after the cycle,
which only walks what the cycle left alive. A cycle that runs long (5 s by default) gets automatic
collection back for the rest of it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

__all__ = ["OPERATOR_GC_THRESHOLDS", "paused", "tune_gc"]

OPERATOR_GC_THRESHOLDS = (50_000, 20, 100)
"""(young, middle, old): allocations before a young collection; young (middle) collections before a middle (old) one."""


def tune_gc(thresholds: tuple[int, int, int] = OPERATOR_GC_THRESHOLDS, *, freeze: bool = True) -> tuple[int, int, int]:
    """Apply ``thresholds`` (and freeze what is alive now when ``freeze``); returns the previous thresholds."""
    if len(thresholds) != 3 or any(t < 1 for t in thresholds):
        raise ValueError(f"GC thresholds must be three positive integers, got {thresholds!r}")
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    if freeze:
        gc.collect()
        gc.freeze()
    return (previous[0], previous[1], previous[2])


@contextlib.contextmanager
def paused() -> Iterator[Callable[[], None]]:
    """No automatic collection inside the block; the collector's previous state (on or off) after it.

    Yields ``resume``, which turns automatic collection back on early (if it was on before): the
    engine calls it when a cycle runs long (an outage, a fallback to per-model queries), so that the
    reference cycles of a long cycle's errors are collected as usual instead of piling up."""
    was_enabled = gc.isenabled()
    gc.disable()

    def resume() -> None:
        if was_enabled:
            gc.enable()

    try:
        yield resume
    finally:
        resume()
