"""Every named query in every services/**/sql/*.sql file prepares against the migrated schema,
so a migration that drops or renames something a query uses breaks a test, not a deploy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common.db import load_queries

pytestmark = pytest.mark.integration

SERVICES = Path(__file__).resolve().parents[2] / "services"
QUERY_FILES = sorted(SERVICES.glob("**/sql/*.sql"))
# Queries that set up per-connection state other queries of the same file need: the ingest
# store creates its staging table (a temp table) on each connection before using it.
SETUP_QUERIES = ("create_referral_staging",)


def _named_queries() -> list[tuple[Path, str]]:
    return [(path, name) for path in QUERY_FILES for name in load_queries(path)]


def _query_id(value: object) -> str:
    return str(value.relative_to(SERVICES)) if isinstance(value, Path) else str(value)


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to a freshly migrated database."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def test_every_service_query_file_is_found_and_names_its_queries() -> None:
    found = {str(path.relative_to(SERVICES)) for path in QUERY_FILES}
    assert {
        "common/sql/referral_rows.sql",
        "ingest/sql/queries.sql",
        "scheduler/sql/layouts.sql",
    } <= found
    assert all(load_queries(path) for path in QUERY_FILES), "a query file without named queries"


@pytest.mark.parametrize(("path", "name"), _named_queries(), ids=_query_id)
async def test_every_named_query_prepares_against_the_migrated_schema(
    connection: asyncpg.Connection, path: Path, name: str
) -> None:
    queries = load_queries(path)
    for setup in SETUP_QUERIES:
        if setup in queries:
            await connection.execute(queries[setup])

    statement = await connection.prepare(queries[name])

    assert statement.get_parameters() is not None
