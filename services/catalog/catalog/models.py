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
    Column("extra", String(8), nullable=False),  # "" = not a BSI
    Column("build", String(32), nullable=False),  # "" = build unknown
    Column("prerequisite_build", String(32)),
    Column("kind", String(16), nullable=False),
    Column("major", Integer, nullable=False, index=True),
    Column("minor", Integer, nullable=False),
    Column("patch", Integer, nullable=False),
    Column("release_date", Date),
    Column("expiration_date", Date),
    Column("supported_devices", JsonDoc, nullable=False),
    Column("devices_known", Boolean, nullable=False, server_default="0"),
    Column("listed_by_apple", Boolean),
    Column("cves", Integer),
    Column("exploited_cves", JsonDoc),
    Column("security_info", Text),
    Column("sources", JsonDoc, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("version", "extra", "build", name="uq_releases_key"),
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
    # What the source said last time it was readable (kept through failures), so a sync of
    # one source can merge with the other's last good view.
    Column("last_modified", Text),
    Column("body_sha256", String(64)),
    # A GDMF body that would drop most listed builds is held until it is seen twice.
    Column("held_sha256", String(64)),
    Column("observations", JsonDoc),
    Column("releases_listed", Integer, nullable=False, server_default="0"),
    Column("last_changed", UtcDateTime),
    Column("used_url", Text),
    Column("next_due", UtcDateTime),
)

# SOFA's map of board id (what GDMF and softwareupdate.device-id use) to model and name.
board_devices = Table(
    "board_devices",
    metadata,
    Column("board_id", String(64), primary_key=True),
    Column("model_identifier", String(64)),
    Column("marketing_name", Text),
)
