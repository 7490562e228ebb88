"""devices, device_items, device_inputs: leave half of each page free

A status report during an update rewrites its Mac's judged row, item rows and inputs. An
update is HOT (in place, no index entries) only when no indexed column changed and the new
version fits on the same page. At fillfactor 80 (`devices`, `device_inputs`) and 100
(`device_items`) most rewrites found no room: over 40,000 updates-stream events for 20,000
Macs (one connection, pg_stat_statements), HOT updates were 23 % of `devices`, 34 % of
`device_inputs` and 0.4 % of `device_items`; at 50, 49 %, 100 % and 49 % (every update that
changes no state). The three upserts took 30.0 -> 21.0 us of PostgreSQL time per event (all
the batch's statements 55.3 -> 46.5; two runs each). With six batches at once (the served
benchmark) fewer found room: 30 %, 22 % and 72 %. After that run the tables were no bigger
(without vacuum, rows moved off full pages had left their dead versions behind), but freshly
written rows fill pages only to half: a newly enrolled fleet's tables are up to twice the size.
Applies to pages written from now on; `VACUUM FULL` (or pg_repack) repacks existing ones.

Revision ID: 8e3a5c1f7b92
Revises: 7b1e4c9d2f60
Create Date: 2026-11-30 03:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "8e3a5c1f7b92"
down_revision: str | None = "7b1e4c9d2f60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("devices", "device_items", "device_inputs")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE devices SET (fillfactor = 80)")
        op.execute("ALTER TABLE device_inputs SET (fillfactor = 80)")
        op.execute("ALTER TABLE device_items RESET (fillfactor)")
