"""Instant queries against Prometheus for collector v1: off the event loop, bounded, retried, timed out.

``prometheus-api-client`` is blocking, so each call runs through a :class:`BlockingRunner` (a worker
thread by default). A semaphore bounds how many calls are in flight; each query is retried with
exponential backoff (upstream: 5 attempts, 0.5/1/2/4 s, 10 % jitter) inside one overall timeout.
When the timeout ends the retries, the last query error is raised if there was one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class PromClient(Protocol):
    """The part of ``prometheus_api_client.PrometheusConnect`` the collector uses."""

    def custom_query(self, query: str) -> Any: ...


class BlockingRunner(Protocol):
    """Runs a blocking callable without blocking the event loop and returns its result."""

    def __call__(self, fn: Callable[[], _T], /) -> Awaitable[_T]: ...


async def run_in_thread(fn: Callable[[], _T]) -> _T:
    """The default :class:`BlockingRunner`: the event loop's default thread pool."""
    return await asyncio.to_thread(fn)


@dataclass(frozen=True, slots=True)
class QueryPolicy:
    """Timeout (seconds, per query including retries), retry schedule and concurrency bound."""

    timeout: float = 10.0
    attempts: int = 5
    initial_backoff: float = 0.5
    backoff_factor: float = 2.0
    jitter: float = 0.1
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    def backoff(self, retry: int, rand: float) -> float:
        """Delay before retry number ``retry`` (0-based); ``rand`` in [0, 1) spreads it by ``jitter``."""
        base = self.initial_backoff * self.backoff_factor**retry
        return base + base * self.jitter * rand


class PromQueryRunner:
    """Executes instant PromQL queries and returns the raw ``result`` payload of the HTTP API."""

    def __init__(
        self,
        prom: PromClient,
        policy: QueryPolicy | None = None,
        run_blocking: BlockingRunner = run_in_thread,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._prom = prom
        self.policy = policy or QueryPolicy()
        self._run_blocking = run_blocking
        self._rand = rand
        # created on first use, per event loop: a constructor must not need a running loop
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.policy.max_concurrency))
        return self._slots[1]

    async def _call_once(self, promql: str) -> Any:
        async with self._semaphore():
            return await self._run_blocking(lambda: self._prom.custom_query(promql))

    async def query(self, promql: str, timeout: float | None = None) -> Any:
        """Run ``promql`` as an instant query. Raises the last error, or TimeoutError if none was seen."""
        limit = self.policy.timeout if timeout is None else timeout
        last_error: Exception | None = None
        try:
            async with asyncio.timeout(limit if limit > 0 else None):
                for attempt in range(self.policy.attempts):
                    try:
                        return await self._call_once(promql)
                    except Exception as err:
                        last_error = err
                        if attempt + 1 >= self.policy.attempts:
                            raise
                        delay = self.policy.backoff(attempt, self._rand())
                        logger.debug(
                            "prometheus query failed, retrying in %.2fs (attempt %d/%d): %s: %s",
                            delay, attempt + 1, self.policy.attempts, promql, err,
                        )
                        await asyncio.sleep(delay)
        except TimeoutError:
            if last_error is not None:
                raise last_error from None
            raise TimeoutError(f"prometheus query timed out after {limit:g}s") from None
        raise AssertionError("unreachable")  # pragma: no cover
