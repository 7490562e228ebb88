"""Deadline arithmetic (DESIGN.md): `1d`/`2d` days, `1w`–`3w` weeks of 7 days, `1mo`–`3mo`
calendar months clamped to the month's end (2026-01-31 + 1mo = 2026-02-28); `at` is HH:MM,
device-local. Deadlines are naive datetimes: the Mac reads them in its own time zone."""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta

WITHIN_DAYS = {"1d": 1, "2d": 2, "1w": 7, "2w": 14, "3w": 21}
WITHIN_MONTHS = {"1mo": 1, "2mo": 2, "3mo": 3}


def add_within(day: date, within: str) -> date:
    if within in WITHIN_DAYS:
        return day + timedelta(days=WITHIN_DAYS[within])
    months = WITHIN_MONTHS[within]
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def at_local(day: date, at: str) -> datetime:
    hour, minute = (int(x) for x in at.split(":"))
    return datetime.combine(day, time(hour, minute))


def shown(deadline: datetime) -> str:
    return f"{deadline:%Y-%m-%d %H:%M} local"
