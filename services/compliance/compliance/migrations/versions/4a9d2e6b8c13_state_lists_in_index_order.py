"""the per-blueprint, per-item and per-major state indexes carry `state_since`

A summary lists the overdue and failed Macs of its scope, longest first, 50 of them. Over
(blueprint, state), (item, state) or (major, state) PostgreSQL fetched every Mac of the scope in
that state from the table and sorted them all for the first 50: a fifth of a 100,000-Mac fleet
per list in the benchmark, and the time grew with the table's pages. With `state_since` next in
the index the first 50 are read in order and the scan stops. `state_since` changes only with
the state, which is in these indexes already: a write adds no index entry it did not add before.

Revision ID: 4a9d2e6b8c13
Revises: 8e3a5c1f7b92
Create Date: 2026-11-30 04:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "4a9d2e6b8c13"
down_revision: str | None = "8e3a5c1f7b92"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_devices_blueprint_state", "devices", "blueprint_id"),
    ("ix_device_items_item_state", "device_items", "item_id"),
    ("ix_device_items_major_state", "device_items", "item_major"),
)


def upgrade() -> None:
    for name, table, scope in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [scope, "state", "state_since"])


def downgrade() -> None:
    for name, table, scope in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [scope, "state"])
