"""Stopping background tasks: one way for the whole suite."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


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
