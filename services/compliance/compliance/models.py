"""Compliance tables.

`devices` is narrow on purpose (one short row per Mac: its judged state and what filters and
summaries read), so a summary over 100,000 Macs scans a few megabytes; the inputs the rules
judge (facts, last status, expected enforcements) live beside it in `device_inputs`.
"""

from __future__ import annotations

from sqlalchemy import Column, Date, Index, Integer, MetaData, String, Table, Text

from managed_os.db import BigId, JsonAsWritten, JsonDoc, UtcDateTime, add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

devices = Table(
    "devices",
    metadata,
    Column("enrollment_id", String(200), primary_key=True),
    Column("blueprint_id", String(36)),
    Column("time_zone", String(64)),
    Column("os_version", String(32)),
    Column("os_major", Integer),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("target_version", String(32)),
    Column("deadline", String(19)),  # device-local, as sent in TargetLocalDateTime
    Column("due_at", UtcDateTime),  # the UTC instant the deadline passes for this Mac
    Column("state_since", UtcDateTime, nullable=False),
    # When the state may change with no event (a deadline or the stale window); the sweep
    # reads this index, never the whole table.
    Column("next_check_at", UtcDateTime, index=True),
    Column("last_report_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    # Digest of the stored inputs document (`device_inputs`) less its report time, with the
    # report's hour: a report that changes nothing else within the hour leaves the document
    # as it is (most reports of a fleet between updates); `last_report_at` here is the time.
    Column("inputs_digest", String(32)),
    Index("ix_devices_blueprint_state_since", "blueprint_id", "state", "state_since"),
    Index("ix_devices_state", "state", "state_since"),
    # Room for in-place (HOT) updates: every report rewrites the row (see the migrations).
    postgresql_with={"fillfactor": 50},
)

device_inputs = Table(
    "device_inputs",
    metadata,
    Column("enrollment_id", String(200), primary_key=True),
    # compliance.rules.DeviceInputs; its `last_report_at` may be up to an hour behind the
    # judged row's, which is the one read (see `inputs_digest`)
    Column("inputs", JsonAsWritten, nullable=False),
    postgresql_with={"fillfactor": 50},
)

# One row per (Mac, managed item of its blueprint).
device_items = Table(
    "device_items",
    metadata,
    Column("enrollment_id", String(200), primary_key=True),
    Column("item_id", String(36), primary_key=True),
    Column("blueprint_id", String(36)),
    Column("item_major", Integer),
    Column("os_version", String(32)),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("target_version", String(32)),
    Column("deadline", String(19)),
    Column("due_at", UtcDateTime),
    Column("state_since", UtcDateTime, nullable=False),
    Index("ix_device_items_item_state_since", "item_id", "state", "state_since"),
    Index("ix_device_items_major_state_since", "item_major", "state", "state_since"),
    postgresql_with={"fillfactor": 50},
)

# The items of each blueprint, from PolicyPublished. `reevaluate` asks the sweep to judge the
# blueprint's Macs again (an item appeared, went, or changed which Macs it supports).
blueprints = Table(
    "blueprints",
    metadata,
    Column("blueprint_id", String(36), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("items", JsonDoc, nullable=False),
    Column("reevaluate", Integer, nullable=False, default=0),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Running counts behind the summaries, kept by each transaction that changes a state (and
# rebuilt from the rows with every snapshot): scope 'fleet' (key ''), 'blueprint' (key: its
# id, '-' for none), 'item' (key: item id) or 'major' (key: '26'); dim 'state' or 'version'.
counts = Table(
    "counts",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("key", String(36), primary_key=True),
    Column("dim", String(8), primary_key=True),
    Column("value", String(32), primary_key=True),
    Column("n", Integer, nullable=False),
)

# Every state change, with its time and cause (item_id '' = the Mac's overall state).
state_changes = Table(
    "state_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("enrollment_id", String(200), nullable=False),
    Column("item_id", String(36), nullable=False),
    Column("previous", String(16)),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("cause", String(200), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_state_changes_device_at", "enrollment_id", "at"),
)

# Devices per state per blueprint, once a day (the day's last snapshot wins); blueprint_id
# '' is the whole fleet.
daily_counts = Table(
    "daily_counts",
    metadata,
    Column("day", Date, primary_key=True),
    Column("blueprint_id", String(36), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("devices", Integer, nullable=False),
)
