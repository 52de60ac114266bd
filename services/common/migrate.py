"""Applies the numbered SQL migrations in services/common/migrations, once each."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.common.config import DEFAULT_DATABASE_URL

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x48414E444F4646  # "HANDOFF": one migrator at a time across replicas

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One file: its version number, name and SQL."""

    version: int
    name: str
    sql: str


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations in version order; file names are NNNN_name.sql."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append(Migration(int(number), name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


async def apply_migrations(conn: asyncpg.Connection) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied."""
    # Lock first: concurrent CREATE TABLE IF NOT EXISTS can still collide.
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in discover_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("applied migration", extra={"version": migration.version})
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate(dsn: str) -> list[Migration]:
    """Connect to `dsn` and apply pending migrations."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


def main() -> int:
    """Entry point of `python -m services.common.migrate` (make migrate)."""
    dsn = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    applied = asyncio.run(migrate(dsn))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to apply"
    print(f"migrations: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
