from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra import PgDatabases, ensure_postgres, tansu_broker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by layer from their folder, so `-m "not integration and not e2e"` works."""
    for item in items:
        for layer in ("integration", "e2e"):
            if f"/tests/{layer}/" in str(item.path):
                item.add_marker(getattr(pytest.mark, layer))


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
