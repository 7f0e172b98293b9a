"""Small asyncio helpers shared by the operator's background loops."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished.

    ``asyncio.wait`` (rather than awaiting the task) never re-raises the task's own CancelledError,
    so a cancellation of the caller itself still propagates instead of being swallowed.
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
