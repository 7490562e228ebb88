"""Catalog tables."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from managed_os.db import BigId, JsonDoc, UtcDateTime, add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

releases = Table(
    "releases",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(32), nullable=False),
    Column("extra", String(8)),
    Column("build", String(32), nullable=False),
    Column("prerequisite_build", String(32)),
    Column("kind", String(16), nullable=False),
    Column("major", Integer, nullable=False, index=True),
    Column("minor", Integer, nullable=False),
    Column("patch", Integer, nullable=False),
    Column("release_date", Date),
    Column("expiration_date", Date),
    Column("supported_devices", JsonDoc, nullable=False),
    Column("sources", JsonDoc, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("version", "build", name="uq_releases_version_build"),
)

sources = Table(
    "sources",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("last_attempt", UtcDateTime),
    Column("last_success", UtcDateTime),
    Column("last_error", Text),
    Column("ok", Boolean, nullable=False, default=False),
    Column("etag", Text),
)
