"""The migrated `referrals` table, the staging table, the layout catalog and the row readers
agree with the referral's shape (services/common/referral_shape.py), column by column."""

from __future__ import annotations

import asyncpg
import pytest

from services.common.layouts.catalog import ROW_FIELDS
from services.common.referral_rows import QUERIES as ROW_QUERIES
from services.common.referral_shape import COLUMNS, COPY_COLUMNS, DERIVED_COLUMNS, ROW_COLUMNS
from services.ingest.store import QUERIES as INGEST_QUERIES

pytestmark = pytest.mark.integration

SHAPE = "services/common/referral_shape.py"
ROW_READERS = ("referral_rows_in_range", "latest_referral_rows")


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, tuple[str, bool]]:
    rows = await conn.fetch(
        """SELECT a.attname, t.typname, NOT a.attnotnull AS nullable
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
        table,
    )
    return {r["attname"]: (r["typname"], r["nullable"]) for r in rows}


def _compare(place: str, found: dict[str, tuple[str, bool]], names: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in found]
    unknown = [name for name in found if name not in names]
    assert not missing, f"{place} lacks columns of {SHAPE}: {missing}"
    assert not unknown, f"{place} has columns {SHAPE} does not declare: {unknown}"


async def test_the_referrals_table_the_catalog_and_the_row_readers_agree(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        table = await _columns(conn, "referrals")
        _compare(
            "the migrated referrals table (services/common/migrations)",
            table,
            ROW_COLUMNS + DERIVED_COLUMNS,
        )
        for column in COLUMNS:
            assert table[column.name] == (column.sql_type, column.nullable), column.name

        await conn.execute(INGEST_QUERIES["create_referral_staging"])
        staging = await _columns(conn, "referral_staging")
        _compare("referral_staging (ingest/sql/queries.sql)", staging, COPY_COLUMNS)
        for name, (kind, _) in staging.items():
            assert kind == table[name][0], f"referral_staging.{name} is {kind}"

        assert ROW_FIELDS == ROW_COLUMNS, "the catalog's row fields are the shape's columns"
        for name in ROW_READERS:
            statement = await conn.prepare(ROW_QUERIES[name])
            selected = tuple(a.name for a in statement.get_attributes())
            assert selected == ROW_FIELDS, f"referral_rows.sql {name} selects {selected}"
