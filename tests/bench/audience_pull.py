"""Audience pull benchmark: the scheduler's refresher pulling an audience of 1,000,000
plain emails from a folder on a local OpenSSH sshd (read over SFTP, gzip and plain,
hashed twice in Python, COPied into staging, merged in one transaction, replacing), beside
what its parts alone take in the same run:

- reading the same file over the same SFTP session code, unparsed (the transfer);
- raw `copy_records_to_table` of as many precomputed hash pairs (PostgreSQL alone);
- a second pull of the same files into the now full audience (the replace's merge, with
  nothing new to insert).
Needs root (sshd with a chrooted user); `python -m tests.bench audience_pull`.
"""

from __future__ import annotations

import gzip
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.common.audiences.sources import SftpFolderSettings, SourceSpec
from services.common.audiences.store import AudienceStorePg, PullStorePg
from services.common.db import create_pool
from services.common.egress import EgressPolicy
from services.common.migrate import migrate
from services.common.secrets import SecretBox, connection_secret_context, new_key_entry
from services.delivery.transports.sftp import SftpSecrets, SftpSettings, SftpTransport
from services.scheduler.audiences.readers import source_readers
from services.scheduler.audiences.refresher import AudienceRefresher
from services.scheduler.connections.model import SftpConfig
from tests.bench.audiences import _raw_copy
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow
from tests.integration.sftp_servers import OpenSshSftp, openssh_sftp, sshd_available

TOTAL_LINES = 1_000_000
LOOPBACK = EgressPolicy.from_env({"HANDOFF_EGRESS_ALLOW": "127.0.0.0/8"})


def _write_files(sshd: OpenSshSftp, folder: str) -> int:
    """Half the people in a plain file, half in a gzip one; the bytes on disk."""
    path = sshd.chroot / sshd.upload.lstrip("/") / folder
    path.mkdir()
    half = TOTAL_LINES // 2
    lines = "".join(f"Person.{i}@Example.com\n" for i in range(half)).encode()
    (path / "people-1.txt").write_bytes(lines)
    more = "".join(f"Person.{i}@Example.com\n" for i in range(half, TOTAL_LINES)).encode()
    (path / "people-2.txt.gz").write_bytes(gzip.compress(more, compresslevel=6))
    owner = path.parent.stat()
    for item in (path, *path.iterdir()):
        os.chown(item, owner.st_uid, owner.st_gid)
    return len(lines) + len(more)


async def _raw_read(sshd: OpenSshSftp, folder: str) -> float:
    """Seconds to read the plain file (half the people) over SFTP, unparsed, doubled."""
    settings = SftpSettings(
        host="127.0.0.1", username=sshd.user, host_key=sshd.host_key_line, port=sshd.port,
        remote_dir=f"{sshd.upload}/{folder}",
    )  # fmt: skip
    async with SftpTransport(settings, SftpSecrets(password=sshd.password), LOOPBACK) as sftp:
        started = time.perf_counter()
        size = 0
        async for chunk in sftp.read_file("people-1.txt"):
            size += len(chunk)
        seconds = time.perf_counter() - started
    assert size > 0
    return 2 * seconds


async def _pull(refresher: AudienceRefresher) -> float:
    started = time.perf_counter()
    [outcome] = await refresher.tick()
    seconds = time.perf_counter() - started
    assert outcome.ok, outcome
    assert outcome.member_count == TOTAL_LINES, outcome
    return seconds


async def _setup(pool: asyncpg.Pool, box: SecretBox, sshd: OpenSshSftp, folder: str) -> None:
    account, connection = uuid.uuid4(), uuid.uuid4()
    await pool.execute("INSERT INTO accounts (id, name) VALUES ($1, 'Bench')", account)
    config = SftpConfig(
        host="127.0.0.1", port=sshd.port, username=sshd.user, host_key=sshd.host_key_line
    )
    sealed = {
        "password": box.seal(sshd.password, connection_secret_context(connection, "password"))
    }
    await pool.execute(
        "INSERT INTO connections (id, account_id, name, kind, settings, secrets) "
        "VALUES ($1, $2, 'bench', 'sftp', $3, $4)",
        connection, account, config.to_json(), sealed,
    )  # fmt: skip
    spec = SourceSpec(
        "sftp_folder", connection, SftpFolderSettings(f"{sshd.upload}/{folder}", "people-*"), 900
    )
    made = await AudienceStorePg(pool).create(
        uuid.uuid4(), account, "pulled", "include", pulled=spec
    )
    assert made is not None


async def run(dsn: str) -> list[BenchRow]:
    """Create a scratch database and an sshd, measure, drop them; the table rows."""
    if not sshd_available():
        return [BenchRow("audience pull bench skipped: needs root and openssh-server", 0, "-")]
    box = SecretBox.from_env({"HANDOFF_SECRET_KEYS": new_key_entry("bench")})
    folder = f"bench-{uuid.uuid4().hex[:8]}"
    async with scratch_database(dsn, "audience_pull") as scratch:
        await migrate(scratch)
        with openssh_sftp() as sshd:
            size = _write_files(sshd, folder)
            async with create_pool(scratch, min_size=1, max_size=4) as pool:
                await _setup(pool, box, sshd, folder)
                clock = [datetime.now(UTC) + timedelta(seconds=1)]
                refresher = AudienceRefresher(
                    PullStorePg(pool), AudienceStorePg(pool), box, LOOPBACK, source_readers(),
                    now=lambda: clock[0],
                )  # fmt: skip
                first = await _pull(refresher)
                clock[0] += timedelta(seconds=901)
                again = await _pull(refresher)
            raw_read = await _raw_read(sshd, folder)
        raw_copy = await _raw_copy(scratch, TOTAL_LINES)
    return [
        BenchRow(f"pull {TOTAL_LINES:,} plain emails from an SFTP folder (2 files, 1 gzip)",
                 TOTAL_LINES / first, "lines/s", "raw COPY of precomputed hashes",
                 TOTAL_LINES / raw_copy),
        BenchRow(f"the same pull, {size / 2**20:.0f} MiB", TOTAL_LINES / first, "lines/s",
                 "SFTP read of the files, unparsed", TOTAL_LINES / raw_read),
        BenchRow("a second pull of the same files (replace, nothing new)",
                 TOTAL_LINES / again, "lines/s", "the first pull", TOTAL_LINES / first),
    ]  # fmt: skip
