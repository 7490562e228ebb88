"""devices.inputs_digest: the stored inputs document's digest

A status report rewrote its Mac's inputs document (`device_inputs`, about 750 bytes) even when
nothing in it but the report time had changed, the usual report of a fleet between updates.
The document now leaves the report time to `devices.last_report_at`, and the judged row keeps
the digest of the document as stored: a report whose document has the same digest leaves it
as it is. Rows written before have none, so their next report writes the document once.

Revision ID: 5d2c7e91a4b0
Revises: 3cb635867f2b
Create Date: 2026-11-29 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d2c7e91a4b0"
down_revision: str | None = "3cb635867f2b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("inputs_digest", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("inputs_digest")
