"""Writes one event to an outbox, commits, reports it, then waits to be killed (SIGKILL).

usage: python -m tests.support.crash_writer <database-url> <event-id> <topic>
"""

from __future__ import annotations

import asyncio
import sys

from managed_os.cloudevents import CloudEvent
from tests.support.backends import ProbeUnitOfWork, inbox_table, outbox_table, sql_engine


async def main(url: str, event_id: str, topic: str) -> None:
    async with sql_engine(url) as engine:
        async with ProbeUnitOfWork(engine, outbox_table, inbox_table) as uow:
            await uow.effects.add("state change")
            ev = CloudEvent(type="test.crash.v1", source="/test", subject="k", data={}, id=event_id)
            await uow.outbox.add(topic, ev)
            await uow.commit()
        print("committed", flush=True)
        await asyncio.sleep(3600)  # the relay would run here; the test kills us first


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
