"""ConnectionService over gRPC: SFTP connections saved with sealed secrets, refused with every
problem named, tested for real against an SFTP server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import asyncssh
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import connections_pb2, connections_pb2_grpc
from tests.integration.access_support import serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.layouts_support import create_account, violations
from tests.integration.sftp_servers import (
    SFTP_PASSWORD,
    SFTP_USER,
    AsyncsshSftp,
    asyncssh_sftp,
    fingerprint,
)

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub as Stub,
    )

pytestmark = pytest.mark.integration


@pytest.fixture
async def sftp_server(tmp_path: Path) -> AsyncIterator[AsyncsshSftp]:
    (tmp_path / "in").mkdir()
    async with asyncssh_sftp(tmp_path) as running:
        yield running


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Stub]:
    token = await service_token(pool, Role.OPERATOR)
    async with (
        serve_everything(pool, authenticator(pool)) as server,
        credential_channel(f"127.0.0.1:{server.port}", token) as channel,
    ):
        yield connections_pb2_grpc.ConnectionServiceStub(channel)


def _sftp(server: AsyncsshSftp, **changes: object) -> connections_pb2.SftpConnection:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": SFTP_USER,
        "host_key": fingerprint(server.host_key),
        "remote_dir": "/in",
        "password": SFTP_PASSWORD,
    }
    values.update(changes)
    return connections_pb2.SftpConnection(**values)  # type: ignore[arg-type]


async def test_a_connection_keeps_its_secrets_sealed_and_never_answers_them(
    api: Stub, pool: asyncpg.Pool, sftp_server: AsyncsshSftp
) -> None:
    account = str((await create_account(pool))[0])
    created = await api.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=account,
            connection=connections_pb2.Connection(name="Acme SFTP", sftp=_sftp(sftp_server)),
        )
    )
    assert created.sftp.password_set
    assert not created.sftp.private_key_set
    assert created.sftp.password == ""
    assert created.sftp.port == sftp_server.port
    fetched = await api.GetConnection(
        connections_pb2.GetConnectionRequest(account_id=account, id=created.id)
    )
    listed = await api.ListConnections(connections_pb2.ListConnectionsRequest(account_id=account))
    assert [c.id for c in listed.connections] == [created.id]
    assert SFTP_PASSWORD not in str(fetched) + str(listed)
    row = await pool.fetchrow(
        "SELECT settings, secrets FROM connections WHERE id = $1", uuid.UUID(created.id)
    )
    assert row is not None
    assert SFTP_PASSWORD not in json.dumps(dict(row["secrets"])) + json.dumps(dict(row["settings"]))
    assert set(row["secrets"]) == {"password"}

    # An update that leaves the password empty keeps it; clearing it with no key is refused.
    renamed = connections_pb2.Connection(
        id=created.id, name="Acme", sftp=_sftp(sftp_server, password="")
    )
    updated = await api.UpdateConnection(
        connections_pb2.UpdateConnectionRequest(account_id=account, connection=renamed)
    )
    assert (updated.name, updated.sftp.password_set, updated.version) == ("Acme", True, 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.UpdateConnection(
            connections_pb2.UpdateConnectionRequest(
                account_id=account, connection=renamed, clear_password=True
            )
        )
    assert violations(caught.value) == [("connection.sftp.password", "REQUIRED")]

    tested = await api.TestConnection(
        connections_pb2.TestConnectionRequest(account_id=account, id=created.id)
    )
    assert tested.ok, tested.message
    assert tested.host_key_fingerprint == fingerprint(sftp_server.host_key)
    assert list((sftp_server.root / "in").iterdir()) == []  # the probe was removed

    other = str((await create_account(pool))[0])
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.GetConnection(
            connections_pb2.GetConnectionRequest(account_id=other, id=created.id)
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    await api.DeleteConnection(
        connections_pb2.DeleteConnectionRequest(account_id=account, id=created.id)
    )
    assert await pool.fetchval("SELECT count(*) FROM connections") == 0


async def test_a_test_call_names_a_host_key_mismatch_with_both_fingerprints(
    api: Stub, pool: asyncpg.Pool, sftp_server: AsyncsshSftp
) -> None:
    account = str((await create_account(pool))[0])
    pinned = fingerprint(asyncssh.generate_private_key("ssh-ed25519"))
    answer = await api.TestConnection(
        connections_pb2.TestConnectionRequest(
            account_id=account,
            draft=connections_pb2.Connection(name="d", sftp=_sftp(sftp_server, host_key=pinned)),
        )
    )
    assert (answer.ok, answer.diagnosis) == (False, "host_key")
    assert pinned in answer.message
    assert fingerprint(sftp_server.host_key) in answer.message
    wrong = await api.TestConnection(
        connections_pb2.TestConnectionRequest(
            account_id=account,
            draft=connections_pb2.Connection(name="d", sftp=_sftp(sftp_server, password="no")),
        )
    )
    assert (wrong.ok, wrong.diagnosis) == (False, "auth")


async def test_bad_connections_are_refused_naming_the_field_and_nothing_is_saved(
    api: Stub, pool: asyncpg.Pool, sftp_server: AsyncsshSftp
) -> None:
    account = str((await create_account(pool))[0])
    encrypted = (
        asyncssh.generate_private_key("ssh-ed25519").export_private_key(passphrase="x").decode()
    )
    cases = [
        (
            _sftp(sftp_server, host_key="not a key"),
            "",
            ("connection.sftp.host_key", "INVALID_FORMAT"),
        ),
        (_sftp(sftp_server, host_key=""), "", ("connection.sftp.host_key", "REQUIRED")),
        (
            _sftp(sftp_server, password="", private_key="garbage"),
            "",
            ("connection.sftp.private_key", "INVALID_FORMAT"),
        ),
        (
            _sftp(sftp_server, password="", private_key=encrypted),
            "",
            ("connection.sftp.private_key_passphrase", "INVALID_FORMAT"),
        ),
        (
            _sftp(sftp_server, file_name_template="../{task}.{ext}"),
            "",
            ("connection.sftp.file_name_template", "INVALID_FORMAT"),
        ),
        (_sftp(sftp_server, host="10.0.0.7"), "", ("connection.sftp.host", "EGRESS_REFUSED")),
        (_sftp(sftp_server, password=""), "", ("connection.sftp.password", "REQUIRED")),
        (None, "ftp://user@files.example.com/in", ("connection.url", "INSECURE")),
        (_sftp(sftp_server, port=70000), "", ("connection.sftp.port", "OUT_OF_RANGE")),
    ]
    for sftp, url, violation in cases:
        connection = connections_pb2.Connection(name="Bad", url=url)
        if sftp is not None:
            connection.sftp.CopyFrom(sftp)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.CreateConnection(
                connections_pb2.CreateConnectionRequest(account_id=account, connection=connection)
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, violation
        assert violation in violations(caught.value), (violation, violations(caught.value))
    with pytest.raises(grpc.aio.AioRpcError) as ftp:
        await api.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=account, connection=connections_pb2.Connection(name="F", url="ftp://h/x")
            )
        )
    assert "use SFTP or FTPS" in (ftp.value.details() or "")
    assert await pool.fetchval("SELECT count(*) FROM connections") == 0


async def test_an_sftp_url_fills_the_address(
    api: Stub, pool: asyncpg.Pool, sftp_server: AsyncsshSftp
) -> None:
    account = str((await create_account(pool))[0])
    connection = connections_pb2.Connection(
        name="By URL",
        url=f"sftp://{SFTP_USER}@127.0.0.1:{sftp_server.port}/in",
        sftp=connections_pb2.SftpConnection(
            host_key=fingerprint(sftp_server.host_key), password=SFTP_PASSWORD
        ),
    )
    created = await api.CreateConnection(
        connections_pb2.CreateConnectionRequest(account_id=account, connection=connection)
    )
    assert (
        created.sftp.host,
        created.sftp.port,
        created.sftp.username,
        created.sftp.remote_dir,
    ) == (
        "127.0.0.1",
        sftp_server.port,
        SFTP_USER,
        "/in",
    )
