"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

log = logging.getLogger("kamigate")
CANCEL_RETRY_S = 0.5


async def stop_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait for them, cancelling again while one lives on: redis-py sends
    under asyncio.wait_for, which on Python 3.11 can swallow a cancellation that lands as the
    send completes, and a `while True` loop would then run on and hang the shutdown."""
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("background task ended with %r", task.exception())
