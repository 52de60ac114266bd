"""Migrating an empty database yields the schema the ingest code expects, and only once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.common.migrate import discover_migrations, migrate
from tests.conftest import with_database

ACCOUNT_COLUMNS = {
    "id": "uuid",
    "name": "text",
    "time_zone": "text",
    "status": "text",
    "created_at": "timestamp with time zone",
    "archived_at": "timestamp with time zone",
}
CAMPAIGN_COLUMNS = ACCOUNT_COLUMNS.copy()
del CAMPAIGN_COLUMNS["time_zone"]
CAMPAIGN_COLUMNS["account_id"] = "uuid"


@pytest.fixture
async def empty_database(admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a brand-new database with nothing in it."""
    name = f"handoff_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(admin_dsn, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def migrated(empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database migrated from empty."""
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        yield conn
    finally:
        await conn.close()


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, tuple[str, bool]]:
    rows = await conn.fetch(
        """SELECT column_name, data_type, is_nullable = 'YES' AS nullable
             FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = $1""",
        table,
    )
    return {r["column_name"]: (r["data_type"], r["nullable"]) for r in rows}


async def test_migrating_an_empty_database_applies_every_migration_once(
    empty_database: str,
) -> None:
    applied = await migrate(empty_database)

    assert [m.version for m in applied] == [m.version for m in discover_migrations()]
    assert applied[0].version == 1
    conn = await asyncpg.connect(empty_database)
    try:
        recorded = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in recorded] == [m.version for m in applied]


async def test_migrating_twice_is_a_no_op(empty_database: str) -> None:
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        before = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2"
        )

        assert await migrate(empty_database) == []

        after = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        assert after == before
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            discover_migrations()
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("table", "expected"), [("accounts", ACCOUNT_COLUMNS), ("campaigns", CAMPAIGN_COLUMNS)]
)
async def test_account_tables_have_the_columns_the_code_reads(
    migrated: asyncpg.Connection, table: str, expected: dict[str, str]
) -> None:
    columns = await _columns(migrated, table)

    assert {name: kind for name, (kind, _) in columns.items()} == expected
    assert {name for name, (_, null) in columns.items() if null} == {"archived_at"}


async def test_partner_referral_id_is_unique_per_account(migrated: asyncpg.Connection) -> None:
    definition = await migrated.fetchval(
        """SELECT pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = 'referrals'::regclass AND conname = 'referrals_partner_id_key'"""
    )

    assert definition == "UNIQUE (account_id, partner_referral_id)"


async def test_seq_defaults_to_the_function_that_takes_a_transaction_id_first(
    migrated: asyncpg.Connection,
) -> None:
    default = await migrated.fetchval(
        """SELECT column_default FROM information_schema.columns
            WHERE table_name = 'referrals' AND column_name = 'seq'"""
    )
    primary_key = await migrated.fetchval(
        """SELECT pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = 'referrals'::regclass AND contype = 'p'"""
    )

    assert default == "referral_next_seq()"
    assert primary_key == "PRIMARY KEY (seq)"


async def test_watermark_functions_exist_with_their_signatures(
    migrated: asyncpg.Connection,
) -> None:
    rows = await migrated.fetch(
        """SELECT p.proname, pg_get_function_result(p.oid) AS result,
                  pg_get_function_arguments(p.oid) AS arguments, p.provolatile::text AS volatility
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public'
              AND p.proname IN ('safe_referral_watermark', 'referral_next_seq')"""
    )

    assert {(r["proname"], r["result"], r["arguments"], r["volatility"]) for r in rows} == {
        ("safe_referral_watermark", "bigint", "", "v"),
        ("referral_next_seq", "bigint", "", "v"),
    }
    assert await migrated.fetchval("SELECT safe_referral_watermark()") == 0
