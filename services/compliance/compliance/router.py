"""Compliance REST API: summaries, devices (filtered, cursor-paginated), one device with its
history, the daily trend, and a streamed CSV export."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from compliance.rules import STATES, State
from managed_os.app import Ctx, scope
from managed_os.errors import InvalidInput, NotFound

router = APIRouter(prefix="/v1", tags=["compliance"])
READ = scope("compliance:read")
LIST_LIMIT = 50  # overdue / failed Macs listed in a summary

BlueprintQ = Annotated[str | None, Query(max_length=36, description="Only this blueprint")]
ItemQ = Annotated[str | None, Query(max_length=36, description="Per item of this id")]
MajorQ = Annotated[int | None, Query(ge=11, le=99, description="Items of this macOS major")]


class Listed(BaseModel):
    enrollment_id: str
    reason: str
    target_version: str | None
    deadline: str | None
    state_since: datetime


class Summary(BaseModel):
    scope: dict[str, Any]
    total: int
    counts: dict[str, int]
    percent_up_to_date: float | None
    versions: dict[str, int]
    overdue: list[Listed]
    failed: list[Listed]


class DeviceRow(BaseModel):
    enrollment_id: str
    blueprint_id: str | None
    os_version: str | None
    os_major: int | None
    state: State
    reason: str
    target_version: str | None
    deadline: str | None
    due_at: datetime | None
    state_since: datetime
    last_report_at: datetime | None


class DevicePage(BaseModel):
    items: list[DeviceRow]
    next_cursor: str | None


class ItemState(BaseModel):
    item_id: str
    item_major: int | None
    state: State
    reason: str
    target_version: str | None
    deadline: str | None
    due_at: datetime | None
    state_since: datetime


class Change(BaseModel):
    item_id: str | None
    previous: str | None
    state: str
    reason: str
    cause: str
    at: datetime


class DeviceDetail(DeviceRow):
    time_zone: str | None
    build_version: str | None
    install_state: str | None
    pending_version: str | None
    failure_count: int
    failure_reason: str | None
    items: list[ItemState]
    history: list[Change]


class TrendDay(BaseModel):
    day: date
    counts: dict[str, int]
    percent_up_to_date: float | None


class Trend(BaseModel):
    blueprint_id: str | None
    days: list[TrendDay]


def percent_up_to_date(counts: dict[str, int]) -> float | None:
    """Share of managed Macs (all but `not_managed`) that are up to date."""
    managed = sum(counts.values()) - counts.get("not_managed", 0)
    return round(100 * counts.get("up_to_date", 0) / managed, 1) if managed else None


@router.get("/summary", dependencies=[READ], summary="Counts per state, versions, who is late")
async def summary(
    ctx: Ctx, blueprint_id: BlueprintQ = None, item_id: ItemQ = None, major: MajorQ = None
) -> Summary:
    """The fleet, one blueprint, or (with `item_id` / `major`) one managed item: Macs per
    state, percent up to date (of managed Macs), OS versions, and the overdue and failed
    Macs with their reasons (longest first, at most 50 each)."""
    where = {"blueprint_id": blueprint_id, "item_id": item_id, "major": major}
    given = {k: v for k, v in where.items() if v is not None}
    async with ctx.uow() as uow:
        if len(given) <= 1:  # the running counts answer these without a scan
            scope_name = {"blueprint_id": "blueprint", "item_id": "item", "major": "major"}
            name, value = next(iter(given.items()), ("fleet", ""))
            by_state, versions = await uow.store.read_counts(
                scope_name.get(name, "fleet"), str(value)
            )
        else:
            by_state, versions = await uow.store.counts(**where)
        overdue = await uow.store.in_state("overdue", LIST_LIMIT, **where)
        failed = await uow.store.in_state("failed", LIST_LIMIT, **where)
    counts: dict[str, int] = {s: by_state.get(s, 0) for s in STATES}
    return Summary(
        scope={k: v for k, v in where.items() if v is not None} or {"fleet": True},
        total=sum(counts.values()),
        counts=counts,
        percent_up_to_date=percent_up_to_date(counts),
        versions=dict(sorted(versions.items(), key=lambda kv: -kv[1])),
        overdue=[Listed.model_validate(r) for r in overdue],
        failed=[Listed.model_validate(r) for r in failed],
    )


def _cursor(enrollment_id: str) -> str:
    return base64.urlsafe_b64encode(enrollment_id.encode()).decode()


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        after = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = None
    if after is None or "\x00" in after or _cursor(after) != cursor:
        raise InvalidInput("cursor is not one this API returned")
    return after


StateQ = Annotated[State | None, Query(description="Only Macs in this overall state")]
OsMajorQ = Annotated[int | None, Query(ge=11, le=99, description="Macs on this macOS major")]
VersionQ = Annotated[str | None, Query(max_length=32, description="Macs on this exact version")]


@router.get("/devices", dependencies=[READ], summary="Macs and their state, filtered")
async def list_devices(
    ctx: Ctx,
    state: StateQ = None,
    blueprint_id: BlueprintQ = None,
    major: OsMajorQ = None,
    version: VersionQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> DevicePage:
    """Ordered by enrollment id; pass `next_cursor` back as `cursor` for the next page."""
    async with ctx.uow() as uow:
        query = uow.store.device_query(
            state=state,
            blueprint_id=blueprint_id,
            major=major,
            version=version,
            after=_after(cursor),
        )
        rows = await uow.store.page(query, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DevicePage(
        items=[DeviceRow.model_validate(r) for r in rows],
        next_cursor=_cursor(rows[-1]["enrollment_id"]) if more and rows else None,
    )


@router.get("/devices/{enrollment_id}", dependencies=[READ], summary="One Mac, per item")
async def get_device(
    ctx: Ctx, enrollment_id: str, history: Annotated[int, Query(ge=0, le=1000)] = 100
) -> DeviceDetail:
    """State, target, deadline, install state and failure reason, per item, and the most
    recent state changes (newest first)."""
    async with ctx.uow() as uow:
        found = await uow.store.device(enrollment_id)
        changes = await uow.store.history(enrollment_id, history) if found else []
    if found is None:
        raise NotFound(f"no compliance record for device {enrollment_id}")
    inputs, row, items = found
    su = inputs.softwareupdate
    return DeviceDetail(
        **row,
        build_version=inputs.facts.effective_build,
        install_state=su.install_state,
        pending_version=su.pending_version,
        failure_count=su.failure_count,
        failure_reason=su.failure_reason,
        items=[ItemState.model_validate(i) for i in items],
        history=[Change.model_validate({**c, "item_id": c["item_id"] or None}) for c in changes],
    )


@router.get("/trend", dependencies=[READ], summary="Devices per state per day")
async def trend(
    ctx: Ctx, blueprint_id: BlueprintQ = None, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> Trend:
    """One entry per day a snapshot exists (taken hourly; the day's last one wins), for the
    fleet or one blueprint."""
    since = ctx.clock.now().date() - timedelta(days=days - 1)
    async with ctx.uow() as uow:
        rows = await uow.store.trend(blueprint_id or "", since)
    per_day: dict[date, dict[str, int]] = {}
    for day, state, n in rows:
        per_day.setdefault(day, dict.fromkeys(STATES, 0))[state] = n
    return Trend(
        blueprint_id=blueprint_id,
        days=[
            TrendDay(day=d, counts=c, percent_up_to_date=percent_up_to_date(c))
            for d, c in sorted(per_day.items())
        ],
    )


CSV_PAGE = 1000
CSV_COLUMNS = [
    "enrollment_id",
    "blueprint_id",
    "state",
    "reason",
    "os_version",
    "target_version",
    "deadline",
    "due_at",
    "state_since",
    "last_report_at",
]


@router.get(
    "/export.csv",
    dependencies=[READ],
    summary="Every Mac's state as CSV (streamed)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, one row per Mac"}},
)
async def export_csv(
    ctx: Ctx,
    state: StateQ = None,
    blueprint_id: BlueprintQ = None,
    major: OsMajorQ = None,
    version: VersionQ = None,
) -> StreamingResponse:
    """Streamed page by page (1,000 Macs per query), so memory stays flat for any fleet. The
    first page is read before the response starts, so a failure there is an error status,
    not an empty 200; a failure on a later page cuts the stream short (the client sees an
    incomplete transfer, not a clean end)."""

    async def page(after: str | None) -> list[dict[str, Any]]:
        async with ctx.uow() as uow:
            query = uow.store.device_query(
                state=state, blueprint_id=blueprint_id, major=major, version=version, after=after
            )
            return await uow.store.page(query, CSV_PAGE)

    first = await page(None)

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        current = first
        while True:
            for r in current:
                writer.writerow([_csv_value(r[c]) for c in CSV_COLUMNS])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(current) < CSV_PAGE:
                return
            current = await page(current[-1]["enrollment_id"])

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="compliance.csv"'},
    )


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    # Cells a spreadsheet would run as a formula are quoted as text.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
