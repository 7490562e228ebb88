"""devices, device_inputs: leave a fifth of each page free

Every status report rewrites its Mac's judged row and inputs. With full pages each rewrite
moves the row to another page and adds an entry to every index of the table (four on
`devices`); with room on the page PostgreSQL updates it in place (a HOT update: no index
entries) whenever no indexed column changed, which the judged row now allows for a report that
changes no state (its `next_check_at` no longer moves forward with every report). Measured
with 50,000 steady-stream reports for 20,000 Macs: HOT updates 0 % of `devices` and 0.2 % of
`device_inputs` before, 30 % and 33 % at 80, 100 % at 50. Applies to pages written from now on.

Revision ID: 3cb635867f2b
Revises: fca0bee32f64
Create Date: 2026-11-29 21:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3cb635867f2b"
down_revision: str | None = "fca0bee32f64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("devices", "device_inputs")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
