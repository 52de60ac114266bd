"""FTPS connections over gRPC (saved sealed, tested for real, refused with the field named),
plain FTP refused on every path, and a scheduled task delivering over FTPS to a real
server, its file read back row by row."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
)
from tests.integration.access_support import serve_everything
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.ftps_servers import FTP_PASSWORD, FTP_USER, PyFtpd, pyftpd
from tests.integration.layouts_support import create_account, violations
from tests.integration.test_scheduled_delivery import (  # noqa: F401 - the world fixture
    World,
    _deliveries,
    _now,
    _task,
    world,
)

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub as Stub,
    )

pytestmark = pytest.mark.integration


@pytest.fixture
def ftps_server(tmp_path: Path) -> Iterator[PyFtpd]:
    (tmp_path / "ftps" / "in").mkdir(parents=True)
    with pyftpd(tmp_path / "ftps") as running:
        yield running


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Stub]:
    token = await service_token(pool, Role.OPERATOR)
    async with (
        serve_everything(pool, authenticator(pool)) as server,
        credential_channel(f"127.0.0.1:{server.port}", token) as channel,
    ):
        yield connections_pb2_grpc.ConnectionServiceStub(channel)


def _ftps(server: PyFtpd, **changes: object) -> connections_pb2.FtpsConnection:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": FTP_USER,
        "certificate_sha256": server.certificate.sha256,
        "remote_dir": "/in",
        "password": FTP_PASSWORD,
    }
    values.update(changes)
    return connections_pb2.FtpsConnection(**values)  # type: ignore[arg-type]


async def _create(api: Stub, account: str, connection: connections_pb2.Connection) -> str:
    created = await api.CreateConnection(
        connections_pb2.CreateConnectionRequest(account_id=account, connection=connection)
    )
    return created.id


async def test_an_ftps_connection_is_sealed_tested_for_real_and_shows_the_certificate(
    api: Stub, pool: asyncpg.Pool, ftps_server: PyFtpd
) -> None:
    account = str((await create_account(pool))[0])
    created = await api.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=account,
            connection=connections_pb2.Connection(name="Files", ftps=_ftps(ftps_server)),
        )
    )
    assert created.WhichOneof("kind") == "ftps"
    assert (created.ftps.password_set, created.ftps.password) == (True, "")
    assert created.ftps.tls == connections_pb2.EXPLICIT
    row = await pool.fetchrow("SELECT kind, settings, secrets FROM connections")
    assert row["kind"] == "ftps"
    assert FTP_PASSWORD not in json.dumps(dict(row["secrets"])) + json.dumps(dict(row["settings"]))
    tested = await api.TestConnection(
        connections_pb2.TestConnectionRequest(account_id=account, id=created.id)
    )
    assert tested.ok, tested.message
    assert tested.certificate_sha256 == ftps_server.certificate.sha256
    assert any("PROT P" in step for step in tested.steps)
    assert list((ftps_server.root / "in").iterdir()) == []  # the probe is gone


async def test_testing_a_wrong_pin_names_both_certificates(
    api: Stub, pool: asyncpg.Pool, ftps_server: PyFtpd
) -> None:
    account = str((await create_account(pool))[0])
    pin = "sha256:" + "ab" * 32
    tested = await api.TestConnection(
        connections_pb2.TestConnectionRequest(
            account_id=account,
            draft=connections_pb2.Connection(
                name="Pinned", ftps=_ftps(ftps_server, certificate_sha256=pin)
            ),
        )
    )
    assert (tested.ok, tested.diagnosis) == (False, "host_key")
    assert pin in tested.message
    assert ftps_server.certificate.sha256 in tested.message
    assert ftps_server.passwords == []


async def test_ftps_and_ftpes_urls_fill_the_address_and_choose_the_tls_mode(
    api: Stub, pool: asyncpg.Pool, ftps_server: PyFtpd
) -> None:
    account = str((await create_account(pool))[0])
    pin = ftps_server.certificate.sha256
    for name, url, tls, port in (
        ("Implicit", "ftps://u@files.example.com/out", connections_pb2.IMPLICIT, 990),
        ("Explicit", "ftpes://u@files.example.com:2121/out", connections_pb2.EXPLICIT, 2121),
    ):
        connection = connections_pb2.Connection(
            name=name,
            url=url,
            ftps=connections_pb2.FtpsConnection(certificate_sha256=pin, password="pw"),
        )
        created = await api.GetConnection(
            connections_pb2.GetConnectionRequest(
                account_id=account, id=await _create(api, account, connection)
            )
        )
        f = created.ftps
        assert (f.host, f.port, f.username, f.remote_dir, f.tls) == (
            "files.example.com", port, "u", "/out", tls,
        )  # fmt: skip


async def test_plain_ftp_is_refused_on_create_update_and_url_naming_sftp_and_ftps(
    api: Stub, pool: asyncpg.Pool, ftps_server: PyFtpd
) -> None:
    account = str((await create_account(pool))[0])
    for url in ("ftp://user@files.example.com/in", "FTP://files.example.com"):
        with pytest.raises(grpc.aio.AioRpcError) as created:
            await _create(api, account, connections_pb2.Connection(name="Plain", url=url))
        assert created.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert ("connection.url", "INSECURE") in violations(created.value)
        assert "use SFTP or FTPS" in (created.value.details() or "")
    saved = await _create(
        api, account, connections_pb2.Connection(name="Ok", ftps=_ftps(ftps_server))
    )
    with pytest.raises(grpc.aio.AioRpcError) as updated:
        await api.UpdateConnection(
            connections_pb2.UpdateConnectionRequest(
                account_id=account,
                connection=connections_pb2.Connection(
                    id=saved, name="Ok", url=f"ftp://{FTP_USER}@127.0.0.1:{ftps_server.port}/in"
                ),
            )
        )
    assert "use SFTP or FTPS" in (updated.value.details() or "")
    assert await pool.fetchval("SELECT count(*) FROM connections") == 1
    assert await pool.fetchval("SELECT version FROM connections") == 1


async def test_bad_ftps_settings_are_refused_naming_the_field(
    api: Stub, pool: asyncpg.Pool, ftps_server: PyFtpd
) -> None:
    account = str((await create_account(pool))[0])
    pem = ftps_server.certificate.cert_pem.decode()
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"certificate_sha256": "sha256:12"}, "certificate_sha256", "INVALID_FORMAT"),
        ({"ca_bundle": pem}, "certificate_sha256", "CONFLICT"),
        ({"certificate_sha256": "", "ca_bundle": "not pem"}, "ca_bundle", "INVALID_FORMAT"),
        ({"password": ""}, "password", "REQUIRED"),
        ({"host": "10.0.0.8"}, "host", "EGRESS_REFUSED"),
        ({"username": ""}, "username", "REQUIRED"),
        ({"tls": 7}, "tls", "UNKNOWN_CODE"),
    ]
    for changes, field, reason in cases:
        ftps = _ftps(ftps_server, **changes)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _create(api, account, connections_pb2.Connection(name="Bad", ftps=ftps))
        expected = (f"connection.ftps.{field}", reason)
        assert expected in violations(caught.value), (expected, violations(caught.value))
    assert await pool.fetchval("SELECT count(*) FROM connections") == 0


async def test_a_scheduled_task_delivers_over_ftps_with_manifest_and_parts(
    world: World,  # noqa: F811 - the fixture imported above
    ftps_server: PyFtpd,
) -> None:
    created = await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account,
            connection=connections_pb2.Connection(
                name="ftps drop", ftps=_ftps(ftps_server, manifest=True, max_rows_per_file=4)
            ),
        )
    )
    task = await _task(world, created.id)
    sent = await world.ingest(10, "ftps")
    await _now(world, task)
    await world.run()
    (done,) = await _deliveries(world, task)
    assert (done.state, done.rows, len(done.files)) == ("succeeded", 10, 3)
    folder = ftps_server.root / "in"
    arrived: list[str] = []
    for file in done.files:
        path = folder / Path(file.path).name
        arrived += [r["email"] for r in csv.DictReader(io.StringIO(path.read_text()))]
        manifest = json.loads((folder / f"{path.name}.manifest.json").read_text())
        assert (manifest["rows"], manifest["sha256"]) == (file.rows, file.sha256)
    assert arrived == sent
    assert not [p for p in folder.iterdir() if p.name.endswith(".handoff-part")]
