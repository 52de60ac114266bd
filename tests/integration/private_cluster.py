"""A PostgreSQL cluster of the tests' own, which they may restart, crash and fill up.

Fault tests terminate backends, restart the server and use up its connections; on the
shared server at 127.0.0.1:5432 that would break every other test running against it. This
one runs Debian's (or any `pg_ctl` found) binaries on a free loopback port, with its data
and socket in a temporary folder, and is removed when the tests are done.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from services.common.migrate import migrate

MAX_CONNECTIONS = 40


def _bin_dir() -> Path | None:
    """The newest PostgreSQL bin folder that has initdb and pg_ctl, if any."""
    if named := os.environ.get("HANDOFF_TEST_PG_BIN"):
        return Path(named)
    found = shutil.which("pg_ctl")
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    if found:
        candidates.append(str(Path(found).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _version(folder: str) -> float:
    try:
        return float(Path(folder).parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateCluster:
    """initdb + pg_ctl in a temporary folder; `dsn` reaches its database `handoff`."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        # Not under /root or /tmp's private namespaces: the server runs as `postgres`.
        self._root = Path(tempfile.mkdtemp(prefix="handoff-pg-", dir="/var/tmp"))
        self.data = self._root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self.log = self._root / "server.log"

    @property
    def admin_dsn(self) -> str:
        """The maintenance database, as the superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        """Handoff's database on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/handoff"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self._bin / args[0]), *args[1:]]
        if self._as_postgres:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60)

    def create(self) -> None:
        """initdb, start, create and migrate the database `handoff`."""
        if self._as_postgres:
            shutil.chown(self._root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._root}'",
            "max_connections": str(MAX_CONNECTIONS),
            "superuser_reserved_connections": "0",
            "fsync": "off",  # a test cluster: crash recovery still replays the WAL
            "shared_buffers": "32MB",
            "deadlock_timeout": "100ms",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.start()

        async def prepare() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute("CREATE DATABASE handoff")
            finally:
                await conn.close()
            await migrate(self.dsn)

        asyncio.run(prepare())

    def start(self, *, wait: bool = True) -> None:
        """Start the server (pg_ctl start); with `wait`, until it accepts connections."""
        args = ["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-s"]
        self._run(*args, "-w" if wait else "-W", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast`, `immediate` (a crash: recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-s", "-m", mode, "-w", "stop", check=False)

    def stop_smart_without_waiting(self) -> None:
        """Begin a smart shutdown: it waits for open sessions, refusing new ones."""
        self._run("pg_ctl", "-D", str(self.data), "-s", "-m", "smart", "-W", "stop")

    def wait_until_stopped(self, timeout_s: float = 30.0) -> None:
        """Block until the server has stopped (its postmaster.pid is gone)."""
        deadline = time.monotonic() + timeout_s
        while (self.data / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the private cluster did not stop: {self.log}")
            time.sleep(0.05)

    def set_standby(self, standby: bool) -> None:
        """While stopped: start next as a standby that answers every connection with
        57P03 ("not accepting connections"), as a server in recovery does, for as long
        as the test needs; or as a primary again."""
        signal = self.data / "standby.signal"
        conf = self.data / "postgresql.auto.conf"
        if standby:
            conf.write_text("hot_standby = off\n", encoding="utf-8")
            signal.touch()
            if self._as_postgres:
                shutil.chown(signal, "postgres", "postgres")
        else:
            signal.unlink(missing_ok=True)
            conf.write_text("", encoding="utf-8")

    async def wait_until_accepting(self, timeout_s: float = 30.0) -> None:
        """Return once the server answers a query."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = await asyncpg.connect(self.admin_dsn, timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the private cluster did not come back: {self.log}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            return

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)


def private_cluster_bin() -> Path | None:
    """Where the binaries for a private cluster are, or None when this machine has none."""
    return _bin_dir()


class StandbyCluster(PrivateCluster):
    """A hot standby of a private cluster: pg_basebackup of it, streaming its WAL."""

    def __init__(self, primary: PrivateCluster) -> None:
        super().__init__(primary._bin)
        self._primary = primary

    def create(self) -> None:
        """Copy the primary (pg_basebackup -R writes the standby's connection settings),
        then start as a hot standby on its own port."""
        if self._as_postgres:
            shutil.chown(self._root, "postgres", "postgres")
        self._run(
            "pg_basebackup", "-D", str(self.data), "-h", "127.0.0.1",
            "-p", str(self._primary.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "unix_socket_directories": f"'{self._root}'",
            "hot_standby": "on",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.start()
