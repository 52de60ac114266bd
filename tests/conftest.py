"""Shared fixtures: a migrated template database, cloned fresh for every test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.common.db import create_pool
from services.common.localdb import resolve_admin_dsn
from services.common.migrate import migrate


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def admin_dsn() -> str:
    """DSN of a database on the test server with rights to create databases."""
    return resolve_admin_dsn()


@pytest.fixture(scope="session")
def template_database(admin_dsn: str) -> Iterator[str]:
    """Name of a database migrated once per session, used as a template."""
    name = f"handoff_tpl_{os.getpid()}"
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(with_database(admin_dsn, name)))
    yield name
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"handoff_t_{uuid.uuid4().hex[:12]}"
    await _admin(admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(admin_dsn, name)
    await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on the test's own database."""
    async with create_pool(database_url, min_size=1, max_size=10) as pool:
        yield pool
