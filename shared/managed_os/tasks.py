"""Background tasks: one way for the whole suite to loop them and to stop them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any] | None, grace: float = 0.0) -> None:
    """Give `task` up to `grace` seconds to finish by itself (its owner has asked it to), then
    cancel it and wait until it is gone. Waiting first lets a unit of work in flight commit or
    roll back whole instead of being cancelled mid-transaction."""
    if task is None:
        return
    if grace > 0 and not task.done():
        await asyncio.wait({task}, timeout=grace)
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def every(seconds: float, what: str, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` now and then every `seconds` after it ends, forever (a service loop: the
    scheduler, the push worker, the sweep). A failing step is logged and tried again at the
    next turn; only cancellation stops the loop."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; will retry", what)
        await asyncio.sleep(seconds)
