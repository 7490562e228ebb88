"""Compliance tables."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table

from managed_os.db import JsonDoc, UtcDateTime, add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

device_states = Table(
    "device_states",
    metadata,
    Column("enrollment_id", String(200), primary_key=True),
    Column("blueprint_id", String(36), index=True),
    Column("facts", JsonDoc, nullable=False),
    Column("softwareupdate", JsonDoc, nullable=False),
    Column("declarations", JsonDoc, nullable=False),
    Column("expected", JsonDoc, nullable=False),
    Column("last_report_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
)
