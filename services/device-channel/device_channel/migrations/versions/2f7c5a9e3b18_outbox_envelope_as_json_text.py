"""outbox.envelope: json, not jsonb

The envelope is written and read whole: kept as written (`managed_os.db.JsonAsWritten`), as in
every service's outbox. Compliance's migration 7b1e4c9d2f60 gives the reasons, the figures
and what a replica of the previous release sees meanwhile. The downgrade converts it back.

Revision ID: 2f7c5a9e3b18
Revises: c3d1f0a9b2e4
Create Date: 2026-11-30 01:20:00
"""

from collections.abc import Sequence

from managed_os.migrations import set_json_type

revision: str = "2f7c5a9e3b18"
down_revision: str | None = "c3d1f0a9b2e4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    set_json_type([("outbox", "envelope")], "json")


def downgrade() -> None:
    set_json_type([("outbox", "envelope")], "jsonb")
