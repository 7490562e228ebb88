"""device_inputs.inputs and outbox.envelope: json, not jsonb

Both are documents written and read whole, never queried inside and never indexed. jsonb
parsed each into its binary form on every write and printed it back as text on every read;
json keeps the text as written. On the compliance benchmark's updates stream (alternating
runs, `python -m bench.compliance`) PostgreSQL's CPU per event went 56 / 53 / 42 -> 44 / 42 /
38 us, and the consumer 13,761 / 13,035 / 15,667 -> 16,291 / 15,406 / 17,214 events/s.

The previous release keeps working beside this one during a rolling update: it writes jsonb
values, which PostgreSQL converts to json on assignment, and its driver decodes json columns
as it decodes jsonb. Its statements prepared before the change that read these columns fail
once ("cached plan must not change result type"); the driver drops its cache, and the batch
or relay pass is retried. Both tables are rewritten under an exclusive lock (0.54 s for
100,000 Macs' inputs; waited for at most 10 s), while consumers wait. The downgrade converts
them back (a document holding a NUL escape, which json takes and jsonb refuses, would stop
it; this suite's consumers skip such events).

Revision ID: 7b1e4c9d2f60
Revises: 5d2c7e91a4b0
Create Date: 2026-11-30 01:20:00
"""

from collections.abc import Sequence

from managed_os.migrations import set_json_type

revision: str = "7b1e4c9d2f60"
down_revision: str | None = "5d2c7e91a4b0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [("device_inputs", "inputs"), ("outbox", "envelope")]


def upgrade() -> None:
    set_json_type(COLUMNS, "json")


def downgrade() -> None:
    set_json_type(COLUMNS, "jsonb")
