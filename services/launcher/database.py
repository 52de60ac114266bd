"""Which database `make run` uses: DATABASE_URL, or a pgserver PostgreSQL it starts itself."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import pwd
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from services.common.localdb import DEFAULT_HOME, start_pgserver

LOCAL_DATABASE = "handoff"
PGSERVER_USER = "pgserver"  # the user pgserver 0.1.4 runs PostgreSQL as when started by root


@dataclass(frozen=True)
class ChosenDatabase:
    """The DSN the services get and, for people, where it came from."""

    dsn: str
    origin: str


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or prepared; the message says which and why."""


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, safe to print or log."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    shown = f"{user}:***@{host}" if parts.password else f"{user}@{host}"
    return urlunsplit(parts._replace(netloc=shown))


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` on the server of `admin_dsn` unless it exists."""
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailableError(f"cannot connect to {redact_dsn(admin_dsn)}: {exc}") from exc
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Identifiers cannot be parameters; `name` is our constant, quoted anyway.
            quoted = name.replace('"', '""')
            await conn.execute(f'CREATE DATABASE "{quoted}"')
    except asyncpg.DuplicateDatabaseError:
        pass  # created concurrently by another `make run`
    finally:
        await conn.close()


def use_private_pgserver(home: Path) -> Path:
    """Put $HANDOFF_HOME/pylib first on sys.path and check pgserver comes from there.

    As root, pgserver opens up (chmod a+rx) every parent folder of its binaries, so a
    copy installed in a site-packages under /root must never be the one that runs.
    """
    pylib = (home / "pylib").resolve()
    if str(pylib) in sys.path:
        sys.path.remove(str(pylib))
    sys.path.insert(0, str(pylib))
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise DatabaseUnavailableError(
            f"no DATABASE_URL and pgserver is not installed in {pylib}: run `make setup`"
        )
    origin = Path(spec.origin).resolve()
    if not origin.is_relative_to(pylib):
        raise DatabaseUnavailableError(
            f"pgserver would be loaded from {origin.parent}, not from {pylib}; as root it "
            f"would open up every parent folder: run `make setup`"
        )
    return origin.parent


def start_local_database(home: Path | None = None) -> str:
    """Start (or reuse) the pgserver PostgreSQL under $HANDOFF_HOME; return its admin DSN."""
    home = home or Path(os.environ.get("HANDOFF_HOME", DEFAULT_HOME))
    use_private_pgserver(home)
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; harmless here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            return start_pgserver(home)
        except Exception as exc:  # pgserver raises assorted errors (missing, initdb, pg_ctl)
            raise DatabaseUnavailableError(f"cannot start the local PostgreSQL: {exc}") from exc


def pgserver_as_root_note(home: Path, *, euid: int | None = None) -> str:
    """What pgserver is about to do to this machine the first time it runs as root, or ''.

    As root it creates a system user `pgserver` to run PostgreSQL as, and makes every
    parent folder of its data and binaries readable and traversable by everyone.
    """
    if (os.geteuid() if euid is None else euid) != 0:
        return ""
    try:
        pwd.getpwnam(PGSERVER_USER)
    except KeyError:
        pass
    else:
        return ""  # done before; docs/operations.md describes it
    return (
        f"run: running as root: pgserver creates the system user `{PGSERVER_USER}` (useradd) "
        f"to run PostgreSQL as, and adds read and execute permission for everyone to every "
        f"parent folder of {home / 'pgdata'} and {home / 'pylib'}"
    )


async def choose_database(env: Mapping[str, str], home: Path | None = None) -> ChosenDatabase:
    """DATABASE_URL when set; otherwise database `handoff` on a pgserver started here."""
    if dsn := env.get("DATABASE_URL", "").strip():
        return ChosenDatabase(dsn=dsn, origin="DATABASE_URL")
    note = pgserver_as_root_note(home or Path(env.get("HANDOFF_HOME", DEFAULT_HOME)))
    if note:
        print(note, flush=True)
    admin = await asyncio.to_thread(start_local_database, home)
    await ensure_database(admin, LOCAL_DATABASE)
    where = parse_qs(urlsplit(admin).query).get("host", ["its data folder"])[0]
    return ChosenDatabase(
        dsn=with_database(admin, LOCAL_DATABASE),
        origin=f"local PostgreSQL (pgserver) in {where}",
    )
