"""Device-channel tables."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, Text

from managed_os.db import JsonDoc, UtcDateTime, add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

devices = Table(
    "devices",
    metadata,
    Column("enrollment_id", String(200), primary_key=True),
    Column("blueprint_id", String(36), index=True),
    Column("serial_number", String(64)),
    Column("model", String(64)),
    Column("time_zone", String(64)),
    Column("facts", JsonDoc, nullable=False),
    Column("status", JsonDoc, nullable=False),
    Column("declarations_token", String(64), nullable=False),
    Column("manifest_changed_at", UtcDateTime, nullable=False),
    Column("last_report_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Room for in-place (HOT) updates: every status report rewrites its row (see the migration).
    postgresql_with={"fillfactor": 80},
)

# Read model of compiled policies, fed by PolicyPublished.
policies = Table(
    "policies",
    metadata,
    Column("blueprint_id", String(36), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("token", String(64), nullable=False),
    Column("candidates", JsonDoc, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Durable push queue: one row per Mac whose manifest changed and that has not been told yet.
# A newer change replaces the row (one push covers it); a sender leases rows by moving
# `next_attempt_at` forward, so a crash mid-send is retried when the lease runs out.
push_queue = Table(
    "push_queue",
    metadata,
    Column("enrollment_id", String(200), primary_key=True),
    Column("declarations_token", String(64), nullable=False),
    Column("queued_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False, index=True),
    Column("last_error", Text),
)
