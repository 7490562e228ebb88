from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra import PgDatabases, ensure_postgres, tansu_broker


@pytest.fixture(scope="session")
def pg() -> Iterator[PgDatabases]:
    """Factory of fresh PostgreSQL databases: `pg.create()` returns an asyncpg URL."""
    ensure_postgres()
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a real Kafka-protocol broker (Tansu) for this session."""
    with tansu_broker() as bootstrap:
        yield bootstrap
