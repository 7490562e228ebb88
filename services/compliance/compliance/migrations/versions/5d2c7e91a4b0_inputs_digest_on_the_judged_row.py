"""devices.inputs_digest: the stored inputs document's digest

A status report rewrote its Mac's inputs document (`device_inputs`, about 750 bytes) even when
nothing in it but the report time had changed, the usual report of a fleet between updates.
The judged row now keeps a digest of the document less its report time, with the report's
hour: a report with the same digest leaves the document as it is, so the document's time is
at most an hour behind the row's `last_report_at`, which is the one read. Rows written before
have none, so their next report writes the document once.

The previous release keeps working beside this one during a rolling update, within an hour's
bounds: it reads the report time from the document (under an hour old, so it may call a Mac
stale up to an hour early), and it writes documents without the digest, so until the hour
turns this release may leave such a document standing when a later report returns to the
inputs the digest names. The downgrade only drops the column (the documents keep a time).

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
