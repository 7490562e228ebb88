"""Group commit for status reports.

Every report must be durable (device row and outbox event committed) before the Mac gets its
200. Committing each in its own transaction costs a handful of database round trips per report;
here the reports that arrive while a transaction is in flight wait for the next one, which
writes them all (`service.ingest_statuses`), in arrival order, then answers each. At most
`writers` transactions run at once, each with at most `batch_size` reports.

If a transaction fails, its reports are retried one per transaction, so one bad report (say a
first-contact insert racing another replica) fails only its own request, with its own error.

With `unlocked` (PostgreSQL), a batch is first offered to it: it stores the reports of the
devices it can without a transaction of its own (`service.ingest_statuses_unlocked`) and says
which; only the rest go through `apply`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from managed_os import ddm

log = logging.getLogger(__name__)

Item = tuple[str, ddm.StatusReport]


class AlreadyCommitted(Exception):
    """`apply` failed after its commit (say while closing the connection): the reports are
    stored, so they are answered as such and never applied again."""


Apply = Callable[[Sequence[Item]], Awaitable[None]]
Unlocked = Callable[[Sequence[Item]], Awaitable[set[str]]]


class StatusWriter:
    def __init__(
        self,
        apply: Apply,
        *,
        unlocked: Unlocked | None = None,
        batch_size: int = 64,
        writers: int = 1,
    ) -> None:
        """`apply(items)` writes and commits `items` in one transaction; `unlocked(items)`
        stores what it can and returns the enrollment ids whose reports it stored."""
        self.apply, self.unlocked = apply, unlocked
        self.batch_size, self.writers = batch_size, writers
        self._queue: list[tuple[Item, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run
        self._running = 0
        self.transactions = self.reports = 0  # committed

    async def write(self, enrollment_id: str, report: ddm.StatusReport) -> None:
        """Returns once the report is committed; raises what its transaction raised."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append(((enrollment_id, report), done))
        if self._running < self.writers:
            self._running += 1
            task = asyncio.create_task(self._drain(), name="device-channel-status-writer")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.batch_size]
                del self._queue[: self.batch_size]
                try:
                    await self._commit(batch)
                except BaseException:  # cancelled at shutdown: nobody may wait forever
                    for _, done in (*batch, *self._queue):
                        if not done.done():
                            done.set_exception(ConnectionError("status writer stopped"))
                    self._queue.clear()
                    raise
        finally:
            # No await between the empty queue and this: a report queued after it finds no
            # writer running and starts one (a done-callback would run too late).
            self._running -= 1

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        if self.unlocked is not None:
            try:
                stored = await self.unlocked([item for item, _ in batch])
            except Exception as exc:  # raised only when it stored nothing
                log.warning("unlocked status write failed", extra={"error": repr(exc)})
                stored = set()
            if stored:
                done = [one for one in batch if one[0][0] in stored]
                self._answer(done)
                batch = [one for one in batch if one[0][0] not in stored]
            if not batch:
                return
        await self._locked(batch)

    async def _locked(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        try:
            await self.apply([item for item, _ in batch])
        except AlreadyCommitted as exc:
            log.warning("status batch failed after its commit", extra={"error": repr(exc)})
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():  # its request may have gone away
                    batch[0][1].set_exception(exc)
                return
            log.warning(
                "status batch failed; retrying its reports one by one",
                extra={"reports": len(batch), "error": repr(exc)},
            )
            for one in batch:
                await self._locked([one])
            return
        self._answer(batch)

    def _answer(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        self.transactions += 1
        self.reports += len(batch)
        for _, done in batch:
            if not done.done():
                done.set_result(None)
