"""the per-blueprint, per-item and per-major state indexes carry `state_since`

A summary lists the overdue and failed Macs of its scope, longest first, 50 of them. Over
(blueprint, state), (item, state) or (major, state) PostgreSQL fetched every Mac of the scope in
that state from the table and sorted them all for the first 50: a fifth of a 100,000-Mac fleet
per list in the benchmark, and the time grew with the table's pages. With `state_since` next in
the index the first 50 are read in order and the scan stops. `state_since` changes only with
the state, which is in these indexes already: a write adds no index entry it did not add before.

The new indexes are all built before the old ones go, the drops last: writes to `devices`
and `device_items` wait for the builds (1.4 s per index over a million item rows here): a
table's lock is held from its first build to the commit, so writes to `devices` wait for all
three, about 4 s for a million Macs with one item each. Reads wait only for the drops, just
before the commit (each drop holds its table exclusively until then). Locks are waited for at most
10 s (re-run the Job if it gave up).

Revision ID: 4a9d2e6b8c13
Revises: 8e3a5c1f7b92
Create Date: 2026-11-30 04:10:00
"""

from collections.abc import Sequence

from alembic import op

from managed_os.migrations import limit_lock_waits

revision: str = "4a9d2e6b8c13"
down_revision: str | None = "8e3a5c1f7b92"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (old name, new name, table, scope column)
INDEXES = (
    ("ix_devices_blueprint_state", "ix_devices_blueprint_state_since", "devices", "blueprint_id"),
    ("ix_device_items_item_state", "ix_device_items_item_state_since", "device_items", "item_id"),
    (
        "ix_device_items_major_state",
        "ix_device_items_major_state_since",
        "device_items",
        "item_major",
    ),
)


def upgrade() -> None:
    limit_lock_waits()
    for _, new, table, scope in INDEXES:
        op.create_index(new, table, [scope, "state", "state_since"])
    for old, _, table, _ in INDEXES:
        op.drop_index(old, table_name=table)


def downgrade() -> None:
    limit_lock_waits()
    for old, _, table, scope in INDEXES:
        op.create_index(old, table, [scope, "state"])
    for _, new, table, _ in INDEXES:
        op.drop_index(new, table_name=table)
