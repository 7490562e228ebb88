"""release view keyed by version, extra and build

Revision ID: b3466f996c14
Revises: 8f03a9939e7b
Create Date: 2026-11-29 11:37:36.736220
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import managed_os.db

revision: str = "b3466f996c14"
down_revision: str | None = "8f03a9939e7b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(with_extra: bool) -> None:
    """Copy the read model into a table with the new primary key (portable across SQLite and
    PostgreSQL, whose primary-key constraints cannot be altered the same way)."""
    extra = [sa.Column("extra", sa.String(length=8), server_default="", nullable=False)]
    op.create_table(
        "known_releases_new",
        sa.Column("version", sa.String(length=32), nullable=False),
        *(extra if with_extra else []),
        sa.Column("build", sa.String(length=32), nullable=False),
        sa.Column("major", sa.Integer(), nullable=False),
        sa.Column(
            "release",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", managed_os.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "version",
            *(["extra"] if with_extra else []),
            "build",
            # The old table still holds the other name until it is dropped.
            name="pk_known_releases" if with_extra else "known_releases_pkey",
        ),
    )
    if with_extra:
        # The BSI letter is in the stored release document; lift it into the key.
        letter = (
            "COALESCE(release->>'extra', '')"
            if op.get_bind().dialect.name == "postgresql"
            else "COALESCE(json_extract(release, '$.extra'), '')"
        )
        op.execute(
            "INSERT INTO known_releases_new (version, extra, build, major, release, updated_at) "
            f"SELECT version, {letter}, build, major, release, updated_at FROM known_releases"
        )
    else:
        op.execute(
            "INSERT INTO known_releases_new (version, build, major, release, updated_at) "
            "SELECT version, build, major, release, updated_at FROM known_releases "
            "WHERE extra = ''"  # the old key cannot hold a BSI beside its base build's twin
        )
    with op.batch_alter_table("known_releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_known_releases_major"))
    op.drop_table("known_releases")
    op.rename_table("known_releases_new", "known_releases")
    with op.batch_alter_table("known_releases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_known_releases_major"), ["major"], unique=False)


def upgrade() -> None:
    _rebuild(with_extra=True)


def downgrade() -> None:
    _rebuild(with_extra=False)
