"""A PostgreSQL for laptops and fresh machines: the one at 127.0.0.1:5432, or pgserver's."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Outside /root on purpose: pgserver as root opens up every parent folder of its data.
DEFAULT_HOME = "/var/tmp/handoff"  # noqa: S108 - local development database only


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def is_reachable(dsn: str) -> bool:
    """True when a server answers at `dsn`."""
    return asyncio.run(_reachable(dsn))


def start_pgserver(home: Path | None = None) -> str:
    """Start (or reuse) a pgserver PostgreSQL under $HANDOFF_HOME; return its admin DSN.

    The server keeps running after this process exits, so the next start is instant.
    """
    home = home or Path(os.environ.get("HANDOFF_HOME", DEFAULT_HOME))
    pylib = home / "pylib"
    # First on the path: a pgserver in a site-packages under /root must never be the one
    # that runs, since as root it opens up every parent folder of its binaries.
    if pylib.exists() and sys.path[:1] != [str(pylib)]:
        sys.path.insert(0, str(pylib))
    try:
        import pgserver
    except ImportError as exc:
        raise RuntimeError(
            f"no DATABASE_URL and pgserver is not installed in {pylib}: run `make setup`"
        ) from exc
    origin = Path(str(pgserver.__file__)).resolve()
    if not origin.is_relative_to(pylib.resolve()):
        raise RuntimeError(
            f"pgserver would run from {origin.parent}, not {pylib}; as root it would open up "
            "every parent folder of its binaries: run `make setup`"
        )
    data = home / "pgdata"
    data.parent.mkdir(parents=True, exist_ok=True)
    module: Any = pgserver  # untyped, and absent from site-packages on purpose
    get_server = module.get_server
    server = get_server(str(data), cleanup_mode=None)
    return str(server.get_uri())


def resolve_admin_dsn() -> str:
    """DATABASE_URL if set, else PostgreSQL at 127.0.0.1:5432, else a pgserver one."""
    if dsn := os.environ.get("DATABASE_URL"):
        return dsn
    if is_reachable(LOCAL_DSN):
        return LOCAL_DSN
    return start_pgserver()
