"""devices: leave a fifth of each page free

Every status report rewrites its Mac's row. With full pages (rows loaded in bulk fill them) each
rewrite moves the row to another page and adds entries to both of its indexes; with room on the
page PostgreSQL updates it in place (a HOT update: no index entries, less WAL). Measured on a
100,000-Mac fleet under the status benchmark: 36 % of updates HOT at the default fillfactor,
100 % at 80. Applies to pages written from now on (a VACUUM FULL repacks existing ones).

Revision ID: c3d1f0a9b2e4
Revises: b948ea6af917
Create Date: 2026-11-29 17:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c3d1f0a9b2e4"
down_revision: str | None = "b948ea6af917"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE devices SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE devices RESET (fillfactor)")
