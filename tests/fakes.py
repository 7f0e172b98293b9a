"""Test doubles shared across test modules."""

from __future__ import annotations


class FakeClock:
    """A settable clock (seconds), callable like ``time.monotonic``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
