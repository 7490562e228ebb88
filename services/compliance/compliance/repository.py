"""Compliance storage: judged states, their inputs, blueprint items, history, daily counts.

Writes are batched (one statement per table per consumed batch); reads for the API use
keyset pagination and the narrow `devices` table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    String,
    Table,
    and_,
    cast,
    delete,
    func,
    literal,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from compliance.models import (
    blueprints,
    counts,
    daily_counts,
    device_inputs,
    device_items,
    devices,
    state_changes,
)
from compliance.rules import DeviceInputs
from managed_os.db import bulk_write, hold_sqlite_writes, records
from managed_os.policy import PolicyItem
from managed_os.uow import SqlUnitOfWork

_CHUNK = 1000


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class ComplianceStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"

    def _insert(self, table: Table) -> Any:
        return (pg_insert if self.postgres else sqlite_insert)(table)

    async def _upsert(self, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
        await bulk_write(self.conn, table, rows, keys)

    def _among(self, column: Any, values: Sequence[str]) -> Any:
        """`column IN values`; on PostgreSQL one array parameter, so a batch of any size is
        one prepared statement, not one per list length. The array is unnested into a
        semi-join rather than compared with `= ANY`: once the prepared statement switches to
        a generic plan, `= ANY($1)` cannot hash its array and may be planned as a sequential
        scan testing every row against every id (seconds per batch on a large fleet); the
        join probes the primary key once per id."""
        if self.postgres:
            ids = func.unnest(cast(literal(list(values), ARRAY(String)), ARRAY(String)))
            return column.in_(select(ids).scalar_subquery())
        return column.in_(values)

    # ---- devices ---------------------------------------------------------------------------

    async def load(
        self, ids: Sequence[str], *, inputs_of: set[str] | None = None, lock: bool = True
    ) -> dict[str, tuple[DeviceInputs | None, dict[str, Any], dict[str, dict[str, Any]]]]:
        """Judged row, item rows and (for the ids in `inputs_of`, default all) the inputs of
        these Macs; rows are held for update (on PostgreSQL in id order, so concurrent writers
        cannot deadlock; on SQLite the database's write lock)."""
        out: dict[str, tuple[DeviceInputs | None, dict[str, Any], dict[str, dict[str, Any]]]] = {}
        if lock:
            await hold_sqlite_writes(self.conn)
        for chunk in _chunks(sorted(ids)):
            query = (
                select(devices)
                .where(self._among(devices.c.enrollment_id, chunk))
                .order_by(devices.c.enrollment_id)
            )
            if lock and self.postgres:
                query = query.with_for_update()
            for data in records(await self.conn.execute(query)):
                out[data["enrollment_id"]] = (None, data, {})
            items = select(device_items).where(self._among(device_items.c.enrollment_id, chunk))
            for data in records(await self.conn.execute(items)):
                if data["enrollment_id"] in out:
                    out[data["enrollment_id"]][2][data["item_id"]] = data
            wanted = [e for e in chunk if e in out and (inputs_of is None or e in inputs_of)]
            if wanted:
                query = select(device_inputs).where(
                    self._among(device_inputs.c.enrollment_id, wanted)
                )
                for row in await self.conn.execute(query):
                    _, data, its = out[row.enrollment_id]
                    # The judged row has the report time (the document's may be older).
                    doc = {**row.inputs, "last_report_at": data["last_report_at"]}
                    out[row.enrollment_id] = (DeviceInputs.model_validate(doc), data, its)
        return out

    async def save(
        self,
        device_rows: list[dict[str, Any]],
        inputs: list[dict[str, Any]],
        item_rows: list[dict[str, Any]],
        gone_items: list[tuple[str, str]],
    ) -> None:
        """Upsert judged rows, inputs ({enrollment_id, inputs: JSON document}) and item
        rows; delete the item rows of items a Mac no longer has."""
        await self._upsert(devices, device_rows, ["enrollment_id"])
        await self._upsert(device_inputs, inputs, ["enrollment_id"])
        await self._upsert(device_items, item_rows, ["enrollment_id", "item_id"])
        for chunk in _chunks(gone_items):
            for enrollment_id, item_id in chunk:
                await self.conn.execute(
                    delete(device_items).where(
                        device_items.c.enrollment_id == enrollment_id,
                        device_items.c.item_id == item_id,
                    )
                )

    async def forget(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids)):
            for table in (devices, device_inputs, device_items):
                await self.conn.execute(delete(table).where(table.c.enrollment_id.in_(chunk)))

    async def defer(self, ids: Sequence[str], until: datetime) -> None:
        """Look at these Macs again later (they could not be judged now)."""
        for chunk in _chunks(list(ids)):
            await self.conn.execute(
                update(devices)
                .where(self._among(devices.c.enrollment_id, chunk))
                .values(next_check_at=until)
            )

    async def due(self, now: datetime, limit: int) -> list[str]:
        """Macs whose state may have changed with time, oldest first; on PostgreSQL rows
        another sweeper or a consumer holds are skipped, not waited for."""
        query = (
            select(devices.c.enrollment_id)
            .where(devices.c.next_check_at <= now)
            .order_by(devices.c.next_check_at)
            .limit(limit)
        )
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        return list((await self.conn.execute(query)).scalars())

    async def add_changes(self, rows: list[dict[str, Any]]) -> None:
        await bulk_write(self.conn, state_changes, rows)

    async def history(self, enrollment_id: str, limit: int) -> list[dict[str, Any]]:
        query = (
            select(state_changes)
            .where(state_changes.c.enrollment_id == enrollment_id)
            .order_by(state_changes.c.at.desc(), state_changes.c.id.desc())
            .limit(limit)
        )
        return records(await self.conn.execute(query))

    # ---- blueprints ------------------------------------------------------------------------

    async def items_of(self, blueprint_ids: Iterable[str]) -> dict[str, list[PolicyItem]]:
        ids = sorted(set(blueprint_ids))
        out: dict[str, list[PolicyItem]] = {}
        for chunk in _chunks(ids):
            query = select(blueprints.c.blueprint_id, blueprints.c["items"]).where(
                blueprints.c.blueprint_id.in_(chunk)
            )
            for row in await self.conn.execute(query):
                out[row[0]] = [PolicyItem.model_validate(i) for i in row[1]]
        return out

    async def put_blueprint(
        self, blueprint_id: str, revision: int, items: list[PolicyItem], now: datetime
    ) -> bool:
        """Store a blueprint's items unless the same or a newer revision is already stored;
        True if stored (the sweep then judges its Macs again). One conditional upsert, so
        two writers (the consumer and the start-up bootstrap) cannot put an older revision
        over a newer one."""
        stmt = self._insert(blueprints).values(
            blueprint_id=blueprint_id,
            revision=revision,
            items=[i.model_dump(mode="json") for i in items],
            reevaluate=1,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["blueprint_id"],
            set_={c: stmt.excluded[c] for c in ("revision", "items", "reevaluate", "updated_at")},
            where=blueprints.c.revision < stmt.excluded.revision,
        )
        return bool((await self.conn.execute(stmt)).rowcount)

    async def claim_reevaluations(self, now: datetime) -> list[str]:
        """Blueprints whose items changed: mark their Macs due now and clear the flag.

        The Macs of every flagged blueprint are locked in one statement, in enrollment-id
        order as a consumer batch locks its own, and the blueprints' rows only after that: a
        lock per blueprint in turn could hold one Mac while waiting for another that a
        consumer holds, and that consumer wait for the first (a deadlock)."""
        flagged = [
            (bp, revision)
            for bp, revision in await self.conn.execute(
                select(blueprints.c.blueprint_id, blueprints.c.revision)
                .where(blueprints.c.reevaluate == 1)
                .order_by(blueprints.c.blueprint_id)
            )
        ]
        if not flagged:
            return []
        ids = [bp for bp, _ in flagged]
        mine = select(devices.c.enrollment_id).where(devices.c.blueprint_id.in_(ids))
        if self.postgres:
            mine = mine.order_by(devices.c.enrollment_id).with_for_update()
        await self.conn.execute(
            update(devices)
            .where(devices.c.enrollment_id.in_(mine.scalar_subquery()))
            .values(next_check_at=now)
        )
        for bp, revision in flagged:
            # A revision stored since the read keeps its flag for the next sweep.
            await self.conn.execute(
                update(blueprints)
                .where(blueprints.c.blueprint_id == bp, blueprints.c.revision == revision)
                .values(reevaluate=0)
            )
        return ids

    # ---- running counts --------------------------------------------------------------------

    async def add_counts(self, deltas: dict[tuple[str, str, str, str], int]) -> None:
        """Apply count deltas, in key order (so concurrent transactions cannot deadlock)."""
        rows = [
            {"scope": k[0], "key": k[1], "dim": k[2], "value": k[3], "n": n}
            for k, n in sorted(deltas.items())
            if n
        ]
        if not rows:
            return
        stmt = self._insert(counts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["scope", "key", "dim", "value"],
            set_={"n": counts.c.n + stmt.excluded.n},
        )
        await self.conn.execute(stmt, rows)

    async def read_counts(self, scope: str, key: str) -> tuple[dict[str, int], dict[str, int]]:
        query = select(counts.c.dim, counts.c.value, counts.c.n).where(
            counts.c.scope == scope, counts.c.key == key, counts.c.n != 0
        )
        by: dict[str, dict[str, int]] = {"state": {}, "version": {}}
        for dim, value, n in await self.conn.execute(query):
            by[dim][value] = n
        return by["state"], by["version"]

    async def rebuild_counts(self) -> None:
        """Recount from the rows. On PostgreSQL the table is locked first: a transaction that
        already counted has committed, one that has not waits and adds its delta after."""
        if self.postgres:
            await self.conn.execute(text("LOCK TABLE counts IN EXCLUSIVE MODE"))
        await self.conn.execute(delete(counts))
        fresh: Counter[tuple[str, str, str, str]] = Counter()
        bp = func.coalesce(devices.c.blueprint_id, "-")
        version = func.coalesce(devices.c.os_version, "unknown")
        for dim, column in (("state", devices.c.state), ("version", version)):
            query = select(bp, column, func.count()).group_by(bp, column)
            for key, value, n in await self.conn.execute(query):
                fresh[("blueprint", key, dim, value)] += n
                fresh[("fleet", "", dim, value)] += n
        item_version = func.coalesce(device_items.c.os_version, "unknown")
        for dim, column in (("state", device_items.c.state), ("version", item_version)):
            query = select(device_items.c.item_id, device_items.c.item_major, column, func.count())
            query = query.group_by(device_items.c.item_id, device_items.c.item_major, column)
            for item_id, major, value, n in await self.conn.execute(query):
                fresh[("item", item_id, dim, value)] += n
                if major is not None:
                    fresh[("major", str(major), dim, value)] += n
        await self.add_counts(fresh)

    # ---- reads -----------------------------------------------------------------------------

    async def counts(
        self,
        *,
        blueprint_id: str | None = None,
        item_id: str | None = None,
        major: int | None = None,
    ) -> tuple[dict[str, int], dict[str, int]]:
        """(devices per state, devices per OS version) over the fleet, a blueprint, or one
        item / major (then per item row)."""
        table, cond = self._scope(blueprint_id, item_id, major)
        states = select(table.c.state, func.count()).where(cond).group_by(table.c.state)
        versions = select(table.c.os_version, func.count()).where(cond).group_by(table.c.os_version)
        by_state = {r[0]: r[1] for r in await self.conn.execute(states)}
        by_version = {r[0] or "unknown": r[1] for r in await self.conn.execute(versions)}
        return by_state, by_version

    def _scope(
        self, blueprint_id: str | None, item_id: str | None, major: int | None
    ) -> tuple[Table, Any]:
        if item_id is not None or major is not None:
            conds = []
            if item_id is not None:
                conds.append(device_items.c.item_id == item_id)
            if major is not None:
                conds.append(device_items.c.item_major == major)
            if blueprint_id is not None:
                conds.append(device_items.c.blueprint_id == blueprint_id)
            return device_items, and_(*conds)
        if blueprint_id is not None:
            return devices, devices.c.blueprint_id == blueprint_id
        return devices, true()

    async def in_state(
        self,
        state: str,
        limit: int,
        *,
        blueprint_id: str | None = None,
        item_id: str | None = None,
        major: int | None = None,
    ) -> list[dict[str, Any]]:
        table, cond = self._scope(blueprint_id, item_id, major)
        query = (
            select(
                table.c.enrollment_id,
                table.c.reason,
                table.c.target_version,
                table.c.deadline,
                table.c.state_since,
            )
            .where(cond, table.c.state == state)
            .order_by(table.c.state_since, table.c.enrollment_id)
            .limit(limit)
        )
        return records(await self.conn.execute(query))

    def device_query(
        self,
        *,
        state: str | None,
        blueprint_id: str | None,
        major: int | None,
        version: str | None,
        after: str | None,
    ) -> Select[Any]:
        query = select(devices).order_by(devices.c.enrollment_id)
        if state is not None:
            query = query.where(devices.c.state == state)
        if blueprint_id is not None:
            query = query.where(devices.c.blueprint_id == blueprint_id)
        if major is not None:
            query = query.where(devices.c.os_major == major)
        if version is not None:
            query = query.where(devices.c.os_version == version)
        if after is not None:
            query = query.where(devices.c.enrollment_id > after)
        return query

    async def page(self, query: Select[Any], limit: int) -> list[dict[str, Any]]:
        return records(await self.conn.execute(query.limit(limit)))

    async def device(
        self, enrollment_id: str
    ) -> tuple[DeviceInputs, dict[str, Any], list[dict[str, Any]]] | None:
        loaded = await self.load([enrollment_id], lock=False)
        if enrollment_id not in loaded:
            return None
        inputs, row, items = loaded[enrollment_id]
        assert inputs is not None
        return inputs, row, sorted(items.values(), key=lambda i: i["item_id"])

    async def per_blueprint_state(self) -> list[tuple[str | None, str, int]]:
        query = select(devices.c.blueprint_id, devices.c.state, func.count()).group_by(
            devices.c.blueprint_id, devices.c.state
        )
        return [(r[0], r[1], r[2]) for r in await self.conn.execute(query)]

    async def snapshot(self, day: date) -> int:
        """Store today's devices per state per blueprint (and for the fleet, blueprint ''),
        and recount the running counts from the rows."""
        await self.rebuild_counts()
        per = await self.per_blueprint_state()
        fleet: Counter[str] = Counter()
        for _bp, state, n in per:
            fleet[state] += n
        values = [
            {"day": day, "blueprint_id": bp, "state": state, "devices": n}
            for bp, state, n in per
            if bp
        ] + [{"day": day, "blueprint_id": "", "state": s, "devices": n} for s, n in fleet.items()]
        await self.conn.execute(delete(daily_counts).where(daily_counts.c.day == day))
        if values:
            await self.conn.execute(daily_counts.insert(), values)
        return len(values)

    async def trend(self, blueprint_id: str, since: date) -> list[tuple[date, str, int]]:
        query = (
            select(daily_counts.c.day, daily_counts.c.state, daily_counts.c.devices)
            .where(daily_counts.c.blueprint_id == blueprint_id, daily_counts.c.day >= since)
            .order_by(daily_counts.c.day)
        )
        return [(r[0], r[1], r[2]) for r in await self.conn.execute(query)]


class ComplianceUnitOfWork(SqlUnitOfWork):
    store: ComplianceStore

    def _bind(self, conn: AsyncConnection) -> None:
        self.store = ComplianceStore(conn)
