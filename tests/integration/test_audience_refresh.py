"""Audiences pulled from an SFTP folder by the scheduler's refresher, against real SFTP
servers (asyncssh's, and OpenSSH's sshd chrooted) and real PostgreSQL: the files of the
folder imported on the schedule, removals reflected on refresh, bad lines reported per
file, every failure (wrong host key, nothing listening, bad gzip, no file) recorded with
the members left as they were, and two replicas never pulling one source at once."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import asyncpg
import asyncssh
import pytest

from services.common.audiences.sources import PullContext, SourceReader
from services.common.audiences.staging import StagedRow
from services.common.audiences.store import PullStorePg
from services.scheduler.audiences.readers import source_readers
from services.scheduler.audiences.sftp_folder import read_sftp_folder
from tests.integration.audience_source_support import (
    Clock,
    asyncssh_connection,
    members,
    pulled_audience,
    refresher,
    sftp_connection,
    sha256s,
    source_row,
)
from tests.integration.layouts_support import create_account
from tests.integration.sftp_servers import (
    SFTP_PASSWORD,
    AsyncsshSftp,
    OpenSshSftp,
    asyncssh_sftp,
    fingerprint,
    openssh_sftp,
    sshd_available,
)

pytestmark = pytest.mark.integration

needs_sshd = pytest.mark.skipif(
    not sshd_available() and not os.environ.get("HANDOFF_REQUIRE_SSHD"),
    reason="needs root and openssh-server",
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AsyncsshSftp]:
    (tmp_path / "out").mkdir()
    async with asyncssh_sftp(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def sshd() -> Iterator[OpenSshSftp]:
    assert sshd_available(), "HANDOFF_REQUIRE_SSHD is set, but sshd cannot run here"
    with openssh_sftp() as running:
        yield running


async def _asyncssh_source(
    pool: asyncpg.Pool, server: AsyncsshSftp, *, pattern: str = "*"
) -> tuple[UUID, UUID, UUID]:
    account, _ = await create_account(pool)
    connection = await asyncssh_connection(pool, account, server)
    audience = await pulled_audience(pool, account, connection, "/out", pattern=pattern)
    return account, connection, audience


def _emails(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(count)]


async def test_the_folders_matching_files_are_imported_on_the_schedule(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    out = server.root / "out"
    (out / "customers-1.csv").write_text(
        "id,Email\n" + "".join(f"{i},{e}\n" for i, e in enumerate(_emails("a", 3)))
    )
    hashed = [hashlib.sha256(e.encode()).hexdigest() for e in _emails("b", 2)]
    (out / "customers-2.txt.gz").write_bytes(gzip.compress("\r\n".join(hashed).encode()))
    (out / ".customers-3.csv").write_text("hidden@example.com\n")  # being written
    (out / "notes.txt").write_text("nobody@example.com\n")  # not matching
    _, _, audience = await _asyncssh_source(pool, server, pattern="customers-*")
    clock = Clock()
    pulls = refresher(pool, clock)

    [outcome] = await pulls.tick()

    assert outcome.ok, outcome
    assert await members(pool, audience) == sha256s(_emails("a", 3) + _emails("b", 2))
    assert len(await members(pool, audience, "md5")) == 3  # the plain emails only
    assert [(f.name, f.lines, f.valid, f.rejected) for f in outcome.report.files] == [
        ("customers-1.csv", 3, 3, 0),
        ("customers-2.txt.gz", 2, 2, 0),
    ]
    row = await source_row(pool, audience)
    assert row["last_outcome"]["ok"]
    assert row["last_outcome"]["member_count"] == 5
    assert row["lease_until"] is None
    assert row["failures"] == 0
    assert row["next_due_at"] == clock.at + timedelta(hours=1)
    # Not due again before its interval; due after it, and pulled again.
    clock.advance(minutes=59)
    assert await pulls.tick() == []
    (out / "customers-4.csv").write_text("late@example.com\n")
    clock.advance(minutes=2)
    [again] = await pulls.tick()
    assert again.ok
    assert await members(pool, audience) == sha256s(
        [*_emails("a", 3), *_emails("b", 2), "late@example.com"]
    )


@needs_sshd
async def test_a_refresh_from_openssh_reflects_a_changed_and_a_removed_file(
    pool: asyncpg.Pool, sshd: OpenSshSftp
) -> None:
    folder = sshd.chroot / sshd.upload.lstrip("/") / f"audience-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    owner = folder.parent.stat()
    os.chown(folder, owner.st_uid, owner.st_gid)
    (folder / "one.csv").write_text(
        "email\n" + "\n".join([*_emails("keep", 3), "gone@example.com"])
    )
    (folder / "two.csv").write_text("\n".join(_emails("two", 2)))
    account, _ = await create_account(pool)
    connection = await sftp_connection(
        pool, account, port=sshd.port, username=sshd.user, host_key=sshd.host_key_line,
        password=sshd.password,
    )  # fmt: skip
    audience = await pulled_audience(
        pool, account, connection, f"{sshd.upload}/{folder.name}", pattern="*.csv"
    )
    clock = Clock()
    pulls = refresher(pool, clock)
    [first] = await pulls.tick()
    assert first.ok, first
    assert await members(pool, audience) == sha256s(
        [*_emails("keep", 3), "gone@example.com", *_emails("two", 2)]
    )

    (folder / "one.csv").write_text("email\n" + "\n".join([*_emails("keep", 3), "new@example.com"]))
    (folder / "two.csv").unlink()
    clock.advance(hours=1, seconds=1)
    [second] = await pulls.tick()

    assert second.ok, second
    assert await members(pool, audience) == sha256s([*_emails("keep", 3), "new@example.com"])
    assert await members(pool, audience, "md5") == {
        hashlib.md5(e.encode()).digest() for e in [*_emails("keep", 3), "new@example.com"]
    }
    assert [f.name for f in second.report.files] == ["one.csv"]


async def test_bad_lines_are_reported_per_file_and_the_rest_is_imported(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "list.txt").write_text(
        "ann@example.com\nnot an email\n\nbob@example.com\n" + "ab" * 20 + "\n"
    )
    _, _, audience = await _asyncssh_source(pool, server)
    [outcome] = await refresher(pool, Clock()).tick()

    assert outcome.ok
    assert await members(pool, audience) == sha256s(["ann@example.com", "bob@example.com"])
    [file] = outcome.report.files
    assert (file.lines, file.valid, file.rejected) == (5, 2, 3)
    assert [(e["line"], e["code"]) for e in file.errors] == [
        (2, "NOT_AN_EMAIL"), (3, "EMPTY"), (5, "BAD_HASH"),
    ]  # fmt: skip
    stored = (await source_row(pool, audience))["last_outcome"]
    assert stored["rejected"] == 3
    assert stored["files"][0]["errors"][0]["line"] == 2


async def _pulled_once(pool: asyncpg.Pool, server: AsyncsshSftp) -> tuple[UUID, UUID, Clock]:
    (server.root / "out" / "list.csv").write_text("\n".join(_emails("p", 4)))
    _, connection, audience = await _asyncssh_source(pool, server)
    clock = Clock()
    [outcome] = await refresher(pool, clock).tick()
    assert outcome.ok
    return connection, audience, clock


async def test_a_wrong_host_key_records_the_error_and_leaves_the_members(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    connection, audience, clock = await _pulled_once(pool, server)
    (server.root / "out" / "list.csv").write_text("someone-else@example.com\n")
    impostor = fingerprint(asyncssh.generate_private_key("ssh-ed25519"))
    await pool.execute(
        "UPDATE connections SET settings = settings || jsonb_build_object('host_key', $2::text) "
        "WHERE id = $1",
        connection, impostor,
    )  # fmt: skip
    clock.advance(hours=1, seconds=1)
    [outcome] = await refresher(pool, clock).tick()

    assert not outcome.ok
    assert outcome.diagnosis == "host_key"
    assert not outcome.retryable
    assert impostor in outcome.error
    assert fingerprint(server.host_key) in outcome.error
    assert SFTP_PASSWORD not in str(outcome.to_json())
    assert server.log.passwords == [SFTP_PASSWORD]  # the first pull's login, no other
    assert await members(pool, audience) == sha256s(_emails("p", 4))
    row = await source_row(pool, audience)
    assert row["last_outcome"]["diagnosis"] == "host_key"
    assert row["failures"] == 1
    assert row["next_due_at"] - clock.at == timedelta(hours=1)


async def test_an_unreachable_server_records_the_error_and_is_tried_again_sooner(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    connection, audience, clock = await _pulled_once(pool, server)
    await pool.execute(
        "UPDATE connections SET settings = settings || '{\"port\": 1}' WHERE id = $1", connection
    )
    clock.advance(hours=1, seconds=1)
    [outcome] = await refresher(pool, clock).tick()

    assert not outcome.ok
    assert outcome.diagnosis == "refused"
    assert outcome.retryable
    assert await members(pool, audience) == sha256s(_emails("p", 4))
    row = await source_row(pool, audience)
    assert row["next_due_at"] - clock.at == timedelta(minutes=5)


async def test_a_bad_gzip_file_or_an_empty_folder_fails_the_pull_and_changes_nothing(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    _, audience, clock = await _pulled_once(pool, server)
    out = server.root / "out"
    (out / "more.csv").write_text("\n".join(_emails("more", 50)))
    (out / "zbroken.csv.gz").write_bytes(gzip.compress(b"x@example.com\n" * 100)[:-12])
    clock.advance(hours=2)
    [broken] = await refresher(pool, clock).tick()
    assert not broken.ok
    assert broken.diagnosis == "format"
    assert "zbroken.csv.gz" in broken.error
    assert "gzip" in broken.error
    assert await members(pool, audience) == sha256s(_emails("p", 4))

    for file in out.iterdir():
        file.unlink()
    clock.advance(hours=2)
    [empty] = await refresher(pool, clock).tick()
    assert not empty.ok
    assert empty.diagnosis == "missing"
    assert "left as it was" in empty.error
    assert await members(pool, audience) == sha256s(_emails("p", 4))


class _Watched:
    """The SFTP-folder reader, slowed down and watched: how many pulls run at once."""

    def __init__(self, delay_s: float = 0.3) -> None:
        self.delay_s = delay_s
        self.running = 0
        self.most = 0
        self.pulls = 0

    def reader(self) -> SourceReader:
        async def read(context: PullContext) -> AsyncIterator[list[StagedRow]]:
            self.running += 1
            self.pulls += 1
            self.most = max(self.most, self.running)
            try:
                await asyncio.sleep(self.delay_s)
                async for batch in read_sftp_folder(context):
                    yield batch
            finally:
                self.running -= 1

        return read


async def test_two_replicas_never_pull_one_source_at_once(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "list.csv").write_text("\n".join(_emails("r", 10)))
    _, _, audience = await _asyncssh_source(pool, server)
    watched = _Watched()
    readers = {**source_readers(), "sftp_folder": watched.reader()}
    clock = Clock()
    replicas = [refresher(pool, clock, readers, lease_s=30) for _ in range(2)]

    for _ in range(3):  # three due times, both replicas ticking together at each
        done = await asyncio.gather(*(r.tick() for r in replicas))
        assert sorted(len(d) for d in done) == [0, 1]
        clock.advance(hours=1, seconds=1)

    assert watched.pulls == 3
    assert watched.most == 1
    assert await members(pool, audience) == sha256s(_emails("r", 10))


async def test_a_crashed_replicas_lease_lapses_and_another_pulls(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "list.csv").write_text("\n".join(_emails("c", 3)))
    _, _, audience = await _asyncssh_source(pool, server)
    clock = Clock()
    # A replica leases the source and dies before it pulls.
    [claimed] = await PullStorePg(pool).claim_due(clock.at, 10, uuid.uuid4(), 60)
    assert claimed.audience_id == audience
    other = refresher(pool, clock, lease_s=60)
    clock.advance(seconds=30)
    assert await other.tick() == []  # the lease still holds
    clock.advance(seconds=31)
    [outcome] = await other.tick()
    assert outcome.ok
    assert await members(pool, audience) == sha256s(_emails("c", 3))


class _WallClock(Clock):
    """The real time: leases lapse as they would in production."""

    def __call__(self) -> datetime:
        return datetime.now(UTC)


async def test_a_pull_lasting_longer_than_its_lease_keeps_it(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "list.csv").write_text("\n".join(_emails("l", 3)))
    _, _, audience = await _asyncssh_source(pool, server)
    watched = _Watched(delay_s=1.2)
    readers = {**source_readers(), "sftp_folder": watched.reader()}
    clock = _WallClock()
    await asyncio.sleep(1)  # the source is due at the database's now
    slow = refresher(pool, clock, readers, lease_s=0.45)  # renewed every 0.15 s
    other = refresher(pool, clock, readers, lease_s=0.45)

    async def meanwhile() -> list[object]:
        await asyncio.sleep(0.7)  # past the first lease's end
        return list(await other.tick())

    pulled, stolen = await asyncio.gather(slow.tick(), meanwhile())
    assert [p.ok for p in pulled] == [True]
    assert stolen == []
    assert watched.pulls == 1
    assert watched.most == 1
    assert await members(pool, audience) == sha256s(_emails("l", 3))


async def test_a_pull_whose_lease_was_taken_over_merges_and_records_nothing(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    (server.root / "out" / "list.csv").write_text("\n".join(_emails("t", 3)))
    _, _, audience = await _asyncssh_source(pool, server)
    watched = _Watched(delay_s=1.0)
    readers = {**source_readers(), "sftp_folder": watched.reader()}
    stalled = refresher(pool, _WallClock(), readers, lease_s=0.3)
    await asyncio.sleep(1)  # the source is due at the database's now

    async def take_over() -> None:
        await asyncio.sleep(0.3)  # as if the lease had lapsed and another replica took it
        await pool.execute(
            "UPDATE audience_sources SET lease_token = $2 WHERE audience_id = $1",
            audience, uuid.uuid4(),
        )  # fmt: skip

    pulled, _ = await asyncio.gather(stalled.tick(), take_over())

    assert pulled == []
    assert await members(pool, audience) == set()
    assert (await source_row(pool, audience))["last_outcome"] is None


async def test_a_deleted_connection_fails_the_pull_saying_so(
    pool: asyncpg.Pool, server: AsyncsshSftp
) -> None:
    connection, audience, clock = await _pulled_once(pool, server)
    await pool.execute("DELETE FROM connections WHERE id = $1", connection)
    assert (await source_row(pool, audience))["connection_id"] is None
    clock.advance(hours=1, seconds=1)
    [outcome] = await refresher(pool, clock).tick()
    assert not outcome.ok
    assert outcome.diagnosis == "config"
    assert "connection was deleted" in outcome.error
    assert await members(pool, audience) == sha256s(_emails("p", 4))
