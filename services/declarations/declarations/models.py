"""Declarations tables."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from managed_os.db import JsonDoc, UtcDateTime, add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

blueprints = Table(
    "blueprints",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

library_items = Table(
    "library_items",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("major", Integer, nullable=False),
    Column("label", String(200), nullable=False),
    Column("installation_method", String(32), nullable=False),
    Column("version_enforcement", JsonDoc, nullable=False),
    Column("bsi_enforcement", JsonDoc, nullable=False),
    Column("upgrade_enforced_since", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

assignments = Table(
    "item_assignments",
    metadata,
    Column(
        "item_id", String(36), ForeignKey("library_items.id", ondelete="CASCADE"), primary_key=True
    ),
    Column(
        "blueprint_id",
        String(36),
        ForeignKey("blueprints.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("major", Integer, nullable=False),
    UniqueConstraint("blueprint_id", "major", name="uq_assignment_blueprint_major"),
)

policy_revisions = Table(
    "policy_revisions",
    metadata,
    Column("blueprint_id", String(36), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("token", String(64), nullable=False),
    Column("candidates", JsonDoc, nullable=False),
    # Item summaries for compliance (PolicyPublished.items); empty before they existed.
    Column("items", JsonDoc, nullable=False, server_default="[]"),
    Column("created_at", UtcDateTime, nullable=False),
)

# Read model of the catalog, fed by ReleasePublished / ReleaseUpdated.
known_releases = Table(
    "known_releases",
    metadata,
    Column("version", String(32), nullable=False),
    Column("extra", String(8), nullable=False, server_default=""),  # "" = not a BSI
    Column("build", String(32), nullable=False),  # "" = build unknown
    Column("major", Integer, nullable=False, index=True),
    Column("release", JsonDoc, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("version", "extra", "build", name="pk_known_releases"),
)

# Self-service upgrade requests: configuration (they compile into per-device declarations)
# and the audit trail of who asked for what.
self_service_requests = Table(
    "self_service_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("item_id", String(36), nullable=False, index=True),  # no FK: the audit outlives it
    Column("enrollment_id", String(200), nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("deadline", String(19), nullable=False),  # device-local YYYY-MM-DDTHH:MM:SS
    Column("requested_by", String(200), nullable=False),
)
