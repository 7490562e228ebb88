"""outbox.envelope: json, not jsonb

The envelope is written and read whole, never queried inside and never indexed. jsonb parsed
it into its binary form on every write and printed it back as text on every read; json keeps
the text as written (every service's outbox, see `managed_os.db.JsonAsWritten`; compliance's
migration 7b1e4c9d2f60 has the figures). The previous release keeps working beside this one
during a rolling update: it writes jsonb values, which PostgreSQL converts to json on
assignment, and its driver decodes json as it decodes jsonb (a relay statement it prepared
before the change fails once, and the pass is retried). The table is rewritten under an
exclusive lock (it holds only events not yet relayed). The downgrade converts it back.

Revision ID: 4e8a1f3c7d25
Revises: af2115e7baaf
Create Date: 2026-11-30 01:20:00
"""

from collections.abc import Sequence

from managed_os.migrations import set_json_type

revision: str = "4e8a1f3c7d25"
down_revision: str | None = "af2115e7baaf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    set_json_type([("outbox", "envelope")], "json")


def downgrade() -> None:
    set_json_type([("outbox", "envelope")], "jsonb")
