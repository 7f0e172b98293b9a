"""A periodic asyncio job with an owned task: started by ``start()``, cancelled and awaited by ``stop()``.

Used for the cache sweeper and the background fetcher so that neither can outlive its owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from wva.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class PeriodicJob:
    """Runs ``action`` every ``interval`` seconds (sliding: the next wait starts after a run ends).

    An exception from ``action`` is logged and the schedule continues. ``interval <= 0`` means the
    job never runs. ``start`` and ``stop`` are idempotent.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        action: Callable[[], Awaitable[None]],
        *,
        run_immediately: bool = False,
    ) -> None:
        self.name = name
        self.interval = interval
        self._action = action
        self._run_immediately = run_immediately
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.interval <= 0 or self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"wva-{self.name}")
        logger.debug("periodic job started: %s every %.3fs", self.name, self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("periodic job ended with an error: %s: %r", self.name, task.exception())
        logger.debug("periodic job stopped: %s", self.name)

    async def _loop(self) -> None:
        if not self._run_immediately:
            await asyncio.sleep(self.interval)
        while True:
            try:
                await self._action()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("periodic job failed: %s", self.name)
            await asyncio.sleep(self.interval)
