"""The scratch database every benchmark seeds, measures and drops."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def dsn_for(admin_dsn: str, name: str) -> str:
    """`admin_dsn` pointing at the database `name` instead."""
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))


@asynccontextmanager
async def scratch_database(admin_dsn: str, label: str) -> AsyncIterator[str]:
    """A fresh, empty database for one benchmark (dropped afterwards, even when the
    benchmark fails): its DSN."""
    name = f"handoff_bench_{label}_{os.getpid()}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield dsn_for(admin_dsn, name)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
