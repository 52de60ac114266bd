"""The export API's delivery history end to end: real scheduled deliveries to an SFTP
server on loopback, then the HTTP API (real aiohttp server, real account tokens) lists
them, shows them, downloads their files again — byte for byte what arrived, or a problem
saying why not — and resends them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.db import create_pool
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from services.common.migrate import discover_migrations
from services.common.referral_rows import ReferralRowReader
from services.delivery.delivery_files import DeliveryFilesPg
from services.delivery.engine import DeliveryEngine
from services.delivery.parts import RowCount
from services.delivery.store import DeliveryStorePg
from services.export.audit import AuditLog
from services.export.delivery_routes import DeliveryRoutes
from services.export.delivery_store import DeliveryHistoryPg
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.store import ExportStore
from services.scheduler.tasks.runner import GrpcDeliveryJobs, TaskRunner
from services.scheduler.tasks.store import TaskStorePg
from tests.integration.access_support import make_engine, serve_everything
from tests.integration.credentials_support import account_token, authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.sftp_servers import (
    SFTP_PASSWORD,
    SFTP_USER,
    AsyncsshSftp,
    asyncssh_sftp,
    fingerprint,
)

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.tasks_pb2_grpc import TaskServiceAsyncStub

pytestmark = pytest.mark.integration

SCHEMA_VERSION = max(m.version for m in discover_migrations())
OPENAPI = Path(__file__).resolve().parents[2] / "services" / "export" / "openapi.yaml"
_DOCUMENT = Resource.from_contents(
    yaml.safe_load(OPENAPI.read_text()), default_specification=DRAFT202012
)
_SCHEMAS = Registry().with_resource("urn:openapi", _DOCUMENT)


def conforms(document: Any, schema: str) -> None:
    """Fail unless `document` is valid as the OpenAPI document's `schema`."""
    ref = {"$ref": f"urn:openapi#/components/schemas/{schema}"}
    Draft202012Validator(
        ref, registry=_SCHEMAS, format_checker=Draft202012Validator.FORMAT_CHECKER
    ).validate(document)


def delivery_routes(pool: asyncpg.Pool, files: DeliveryFilesPg | None = None) -> DeliveryRoutes:
    """The routes over `pool` (the files renderer too, unless given)."""
    files = files or DeliveryFilesPg(DeliveryStorePg(pool), ReferralRowReader(pool))
    return DeliveryRoutes(DeliveryHistoryPg(pool), TaskStorePg(pool), files, AuditLog(pool))


@asynccontextmanager
async def http_api(pool: asyncpg.Pool, routes: DeliveryRoutes) -> AsyncIterator[str]:
    """The export app with `routes` on a free loopback port: its base URL."""
    app = create_app(
        ExportStore(pool), Readiness(), authenticator(pool),
        expected_schema_version=SCHEMA_VERSION, health_timeout_s=2.0, deliveries=routes,
    )  # fmt: skip
    async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as port:
        yield f"http://127.0.0.1:{port}"


@dataclass
class World:
    account: str
    campaign: str
    connections: ConnectionServiceAsyncStub
    tasks: TaskServiceAsyncStub
    runner: TaskRunner
    engine: DeliveryEngine
    sftp: AsyncsshSftp
    pool: asyncpg.Pool
    base: str
    http: aiohttp.ClientSession
    token: str  # deliveries:read and deliveries:write of `account`

    @property
    def folder(self) -> Path:
        return self.sftp.root / "in"

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def get(self, path: str, token: str | None = None, **params: Any) -> tuple[int, Any]:
        """GET a JSON (or problem) document: (status, body)."""
        async with self.http.get(
            self.base + path, params=params or None, headers=self.auth(token)
        ) as answer:
            body = await answer.json(content_type=None)
            if answer.status >= 400:
                conforms(body, "Problem")
            elif path == "/v1/deliveries":
                conforms(body, "DeliveryPage")
            elif answer.status == 200 and "/files/" not in path:
                conforms(body, "Delivery")
            return answer.status, body

    async def run(self) -> None:
        """One scheduler tick, then wait for the attempts it started."""
        await self.runner.tick()
        await self.engine.wait_idle()

    async def ingest(self, count: int, tag: str) -> list[str]:
        emails = [f"{tag}-{i}@example.com" for i in range(count)]
        await insert_referrals(
            self.pool, uuid.UUID(self.account), uuid.UUID(self.campaign),
            [{"email": e} for e in emails],
        )  # fmt: skip
        await self.settled()
        return emails

    async def settled(self) -> None:
        """Wait until the safe watermark covers every referral stored so far."""
        last = await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM referrals")
        async with asyncio.timeout(30):
            for _ in range(100_000):
                if await self.pool.fetchval("SELECT safe_referral_watermark()") >= last:
                    break
                await asyncio.sleep(0.02)

    async def connection(self, **sftp: object) -> str:
        settings: dict[str, object] = {
            "host": "127.0.0.1", "port": self.sftp.port, "username": SFTP_USER,
            "host_key": fingerprint(self.sftp.host_key), "remote_dir": "/in",
            "password": SFTP_PASSWORD,
        }  # fmt: skip
        settings.update(sftp)
        created = await self.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=self.account,
                connection=connections_pb2.Connection(
                    name=f"sftp-{uuid.uuid4().hex[:6]}",
                    sftp=connections_pb2.SftpConnection(**settings),  # type: ignore[arg-type]
                ),
            )
        )
        return created.id

    async def task(self, connection_id: str) -> tasks_pb2.Task:
        task = tasks_pb2.Task(
            name=f"Daily {uuid.uuid4().hex[:4]}", connection_id=connection_id,
            schedule=tasks_pb2.Schedule(cron="0 6 * * *"), time_zone="Europe/London",
        )  # fmt: skip
        return await self.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(account_id=self.account, task=task)
        )

    async def deliver(self, task: tasks_pb2.Task, count: int, tag: str) -> dict[str, Any]:
        """Ingest `count` referrals, run the task now: the delivery's document."""
        await self.ingest(count, tag)
        await self.tasks.RunTaskNow(
            tasks_pb2.RunTaskNowRequest(account_id=self.account, id=task.id)
        )
        await self.run()
        status, page = await self.get("/v1/deliveries", task_id=task.id, page_size=1)
        assert status == 200, page
        newest: dict[str, Any] = page["items"][0]
        return newest

    def arrived(self, file: dict[str, Any]) -> bytes:
        """The bytes of a delivered file as the SFTP server stored them."""
        return (self.folder / Path(file["path"]).name).read_bytes()


@pytest.fixture
async def world(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[World]:
    (tmp_path / "in").mkdir()
    account, campaign = (str(x) for x in await create_account(pool))
    operator = await service_token(pool, Role.OPERATOR)
    scheduler = await service_token(pool, Role.SCHEDULER)
    token = await account_token(pool, account, "deliveries:read", "deliveries:write")
    engine = make_engine(pool)
    async with (
        asyncssh_sftp(tmp_path) as sftp,
        serve_everything(pool, authenticator(pool), engine) as server,
        credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
        credential_channel(f"127.0.0.1:{server.port}", scheduler) as scheduler_channel,
        http_api(pool, delivery_routes(pool)) as base,
        aiohttp.ClientSession() as http,
    ):
        runner = TaskRunner(TaskStorePg(pool), GrpcDeliveryJobs(scheduler_channel), reissue_s=0.0)
        yield World(
            account, campaign, connections_pb2_grpc.ConnectionServiceStub(channel),
            tasks_pb2_grpc.TaskServiceStub(channel), runner, engine, sftp, pool, base, http,
            token,
        )  # fmt: skip
        await engine.close()


async def _download(world: World, url: str, token: str | None = None) -> tuple[int, Any, bytes]:
    async with world.http.get(world.base + url, headers=world.auth(token)) as answer:
        return answer.status, answer.headers, await answer.read()


async def _audit(world: World) -> list[asyncpg.Record]:
    return list(
        await world.pool.fetch(
            "SELECT * FROM export_audit WHERE account_id = $1 ORDER BY started_at",
            UUID(world.account),
        )
    )


async def test_the_listing_filters_pages_newest_first_and_refuses_bad_params_by_name(
    world: World,
) -> None:
    first_connection, second_connection = await world.connection(), await world.connection()
    one, two = await world.task(first_connection), await world.task(second_connection)
    made = [
        await world.deliver(one, 2, "a"),
        await world.deliver(two, 3, "b"),
        await world.deliver(one, 1, "c"),
    ]
    status, page = await world.get("/v1/deliveries")
    assert status == 200
    assert [d["id"] for d in page["items"]] == [d["id"] for d in reversed(made)]
    assert page["next_page_token"] == ""
    shown = page["items"][0]
    assert (shown["task_id"], shown["connection_id"], shown["state"]) == (
        one.id, first_connection, "succeeded",
    )  # fmt: skip
    assert (shown["rows"], shown["purpose"], shown["attempts"]) == (4, "scheduled", 1)  # b and c
    assert shown["layout"]["layout_id"] is None
    assert shown["layout"]["layout_version"] > 0
    (file,) = shown["files"]
    assert file["download_url"] == f"/v1/deliveries/{shown['id']}/files/1"
    assert file["sha256"] == hashlib.sha256(world.arrived(file)).hexdigest()

    _, by_task = await world.get("/v1/deliveries", task_id=one.id)
    assert [d["id"] for d in by_task["items"]] == [made[2]["id"], made[0]["id"]]
    _, by_connection = await world.get("/v1/deliveries", connection_id=second_connection)
    assert [d["id"] for d in by_connection["items"]] == [made[1]["id"]]
    _, dead = await world.get("/v1/deliveries", state="dead")
    assert dead["items"] == []
    _, resends = await world.get("/v1/deliveries", purpose="resend")
    assert resends["items"] == []
    _, after = await world.get("/v1/deliveries", **{"from": made[1]["reserved_at"]})
    assert [d["id"] for d in after["items"]] == [made[2]["id"], made[1]["id"]]
    # `to` without an offset is read in `time_zone`.
    tokyo = datetime.fromisoformat(made[1]["reserved_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    _, before = await world.get(
        "/v1/deliveries", to=tokyo.replace(tzinfo=None).isoformat(), time_zone="Asia/Tokyo"
    )
    assert [d["id"] for d in before["items"]] == [made[0]["id"]]

    # Pages of one, with a delivery made between pages: nothing twice, nothing skipped.
    _, page1 = await world.get("/v1/deliveries", page_size=1)
    newer = await world.deliver(two, 1, "d")
    seen = [d["id"] for d in page1["items"]]
    token = page1["next_page_token"]
    while token:
        _, following = await world.get("/v1/deliveries", page_size=1, page_token=token)
        seen += [d["id"] for d in following["items"]]
        token = following["next_page_token"]
    assert seen == [d["id"] for d in reversed(made)]
    _, everything = await world.get("/v1/deliveries")
    assert everything["items"][0]["id"] == newer["id"]

    status, bad = await world.get(
        "/v1/deliveries", state="done", page_size="0", task_id="nope", form="csv",
        **{"from": "yesterday"},
    )  # fmt: skip
    assert status == 400
    assert sorted(p["name"] for p in bad["invalid_params"]) == [
        "form", "from", "page_size", "state", "task_id",
    ]  # fmt: skip
    status, bad_token = await world.get("/v1/deliveries", page_token="!!")
    assert (status, bad_token["invalid_params"][0]["name"]) == (400, "page_token")


async def test_another_account_s_ids_are_missing_and_malformed_ids_are_named(
    world: World,
) -> None:
    task = await world.task(await world.connection())
    mine = await world.deliver(task, 2, "mine")
    other_account, _ = await create_account(world.pool)
    other = await account_token(world.pool, str(other_account), "deliveries:read")
    for params in ({"task_id": task.id}, {"connection_id": mine["connection_id"]}):
        status, problem = await world.get("/v1/deliveries", other, **params)
        assert (status, problem["status"]) == (404, 404), params
    status, _ = await world.get(f"/v1/deliveries/{mine['id']}", other)
    assert status == 404
    status, _, body = await _download(world, mine["files"][0]["download_url"], other)
    assert (status, b"mine-0" in body) == (404, False)
    status, problem = await world.get(f"/v1/deliveries/{uuid.uuid4()}")
    assert status == 404
    status, problem = await world.get("/v1/deliveries/not-an-id")
    assert (status, [p["name"] for p in problem["invalid_params"]]) == (400, ["delivery_id"])
    status, problem = await world.get(f"/v1/deliveries/{mine['id']}/files/zero")
    assert (status, [p["name"] for p in problem["invalid_params"]]) == (400, ["index"])
    status, problem = await world.get(f"/v1/deliveries/{mine['id']}/files/2")
    assert status == 404
    assert "has 1 file(s)" in problem["detail"]
    status, _ = await world.get("/v1/deliveries", "hoff_at_nonsense")
    assert status == 401
    no_scope = await account_token(world.pool, world.account, "referrals:read")
    status, _ = await world.get("/v1/deliveries", no_scope)
    assert status == 403


async def test_a_delivery_shows_its_attempts(world: World) -> None:
    connection = await world.connection(password="wrong")
    task = await world.task(connection)
    await world.ingest(2, "held")
    await world.tasks.RunTaskNow(tasks_pb2.RunTaskNowRequest(account_id=world.account, id=task.id))
    await world.run()
    status, page = await world.get("/v1/deliveries", task_id=task.id, state="dead")
    assert status == 200
    (dead,) = page["items"]
    status, shown = await world.get(f"/v1/deliveries/{dead['id']}")
    assert status == 200
    assert (shown["state"], shown["diagnosis"], shown["files"]) == ("dead", "auth", [])
    (attempt,) = shown["attempt_log"]
    assert (attempt["attempt"], attempt["outcome"], attempt["diagnosis"]) == (1, "dead", "auth")
    assert attempt["error"]
    assert attempt["started_at"] <= attempt["finished_at"]
    # A delivery that never succeeded has no file to download again.
    status, problem = await world.get(f"/v1/deliveries/{dead['id']}/files/1")
    assert status == 409
    assert "only a delivery that succeeded" in problem["detail"]


async def test_a_file_downloads_again_byte_for_byte_as_it_arrived_and_is_audited(
    world: World,
) -> None:
    task = await world.task(await world.connection())
    delivery = await world.deliver(task, 5, "again")
    (file,) = delivery["files"]
    arrived = world.arrived(file)
    status, headers, body = await _download(world, file["download_url"])
    assert status == 200
    assert body == arrived
    assert hashlib.sha256(body).hexdigest() == file["sha256"]
    name = Path(file["path"]).name
    assert headers["Content-Disposition"] == f'attachment; filename="{name}"'
    assert int(headers["Content-Length"]) == file["bytes"] == len(arrived)
    assert headers["ETag"] == f'"{file["sha256"]}"'
    digest = base64.b64encode(hashlib.sha256(arrived).digest()).decode()
    assert headers["Repr-Digest"] == f"sha-256=:{digest}:"
    assert headers["Content-Type"].startswith("text/csv")
    (entry,) = await _audit(world)
    assert (entry["action"], entry["outcome"]) == ("redownload", "completed")
    assert (entry["rows"], entry["bytes"]) == (5, len(arrived))
    assert entry["filters"] == {"delivery_id": delivery["id"], "index": 1}


async def test_every_part_of_a_multi_part_delivery_downloads_byte_for_byte(
    world: World,
) -> None:
    task = await world.task(await world.connection(max_rows_per_file=4, manifest=True))
    delivery = await world.deliver(task, 10, "part")
    assert [f["rows"] for f in delivery["files"]] == [4, 4, 2]
    for file in delivery["files"]:
        status, _, body = await _download(world, file["download_url"])
        assert (status, body) == (200, world.arrived(file)), file["index"]
    status, _, _ = await _download(world, f"/v1/deliveries/{delivery['id']}/files/4")
    assert status == 404


async def test_a_deleted_referral_of_the_range_refuses_the_download_before_a_byte(
    world: World,
) -> None:
    task = await world.task(await world.connection())
    delivery = await world.deliver(task, 3, "gone")
    await world.pool.execute("DELETE FROM referrals WHERE email = 'gone-1@example.com'")
    status, headers, body = await _download(world, delivery["files"][0]["download_url"])
    assert status == 409
    assert headers["Content-Type"].startswith("application/problem+json")
    assert b"gone-0@example.com" not in body
    assert "the referrals of this range changed since" in (await _problem(body))["detail"]
    assert await _audit(world) == []  # nothing was sent


async def _problem(body: bytes) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(body)
    return found


async def test_a_missing_layout_snapshot_refuses_the_download(world: World) -> None:
    task = await world.task(await world.connection())
    delivery = await world.deliver(task, 1, "snap")
    await world.pool.execute(
        "UPDATE deliveries SET layout = NULL WHERE id = $1", UUID(delivery["id"])
    )
    status, problem = await world.get(delivery["files"][0]["download_url"])
    assert status == 409
    assert "no layout snapshot" in problem["detail"]


def _gpg_key(home: Path) -> str:
    home.mkdir(mode=0o700)
    run = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    subprocess.run(
        [*run, "--quick-gen-key", "Acme <data@acme.example>", "default", "default", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    exported = subprocess.run(
        ["gpg", "--homedir", str(home), "--armor", "--export"], check=True, capture_output=True
    )
    return exported.stdout.decode()


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs GnuPG")
async def test_an_encrypted_delivery_cannot_be_downloaded_again_and_says_why(
    world: World, tmp_path: Path
) -> None:
    task = await world.task(await world.connection(pgp_public_key=_gpg_key(tmp_path / "gpg")))
    delivery = await world.deliver(task, 2, "secret")
    status, problem = await world.get(delivery["files"][0]["download_url"])
    assert status == 409
    assert "OpenPGP-encrypted" in problem["detail"]
    assert "session key" in problem["detail"]


async def test_a_resend_answers_202_and_sends_the_original_s_bytes_again(world: World) -> None:
    task = await world.task(await world.connection())
    original = await world.deliver(task, 4, "resend")
    arrived = world.arrived(original["files"][0])
    (world.folder / Path(original["files"][0]["path"]).name).unlink()
    reader = await account_token(world.pool, world.account, "deliveries:read")
    async with world.http.post(
        f"{world.base}/v1/deliveries/{original['id']}/resend", headers=world.auth(reader)
    ) as refused:
        assert refused.status == 403
    async with world.http.post(
        f"{world.base}/v1/deliveries/{original['id']}/resend", headers=world.auth()
    ) as answer:
        assert answer.status == 202
        made = await answer.json()
        conforms(made, "Delivery")
        assert answer.headers["Location"] == f"/v1/deliveries/{made['id']}"
    assert (made["purpose"], made["state"], made["resend_of"]) == (
        "resend", "issued", original["id"],
    )  # fmt: skip
    assert (made["after_seq"], made["through_seq"]) == (
        original["after_seq"], original["through_seq"],
    )  # fmt: skip
    async with world.http.post(
        f"{world.base}/v1/deliveries/{made['id']}/resend", headers=world.auth()
    ) as in_flight:  # the rules: only a delivery that succeeded can be resent
        assert in_flight.status == 409
        assert "only a delivery that succeeded" in (await in_flight.json())["detail"]
    await world.run()
    status, done = await world.get(f"/v1/deliveries/{made['id']}")
    assert (status, done["state"]) == (200, "succeeded")
    assert world.arrived(done["files"][0]) == arrived
    status, _, body = await _download(world, done["files"][0]["download_url"])
    assert (status, body) == (200, arrived)
    _, resends = await world.get("/v1/deliveries", purpose="resend")
    assert [d["id"] for d in resends["items"]] == [made["id"]]


class _ChangingFiles(DeliveryFilesPg):
    """Renders the recorded bytes the first time and other bytes the second: the rows
    changed between the check and the stream."""

    calls = 0

    async def part_of(
        self, delivery_id: UUID, index: int, max_rows: int, count: RowCount | None = None
    ) -> AsyncGenerator[bytes, None] | None:
        chunks = await super().part_of(delivery_id, index, max_rows, count)
        self.calls += 1
        if chunks is None or self.calls == 1:
            return chunks

        async def changed() -> AsyncGenerator[bytes, None]:
            assert chunks is not None
            async for chunk in chunks:
                yield chunk.replace(b"@example.com", b"@example.org")

        return changed()


async def test_bytes_that_change_while_streaming_break_the_connection_before_the_end(
    world: World,
) -> None:
    task = await world.task(await world.connection())
    delivery = await world.deliver(task, 3, "race")
    (file,) = delivery["files"]
    files = _ChangingFiles(DeliveryStorePg(world.pool), ReferralRowReader(world.pool))
    async with (
        http_api(world.pool, delivery_routes(world.pool, files)) as base,
        world.http.get(base + file["download_url"], headers=world.auth()) as answer,
    ):
        assert answer.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer.read()
    (entry,) = await _audit(world)
    assert entry["outcome"] == "failed"
    assert entry["bytes"] < file["bytes"]


async def _bulk_referrals(world: World, count: int) -> None:
    await world.pool.execute(
        """
        INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email,
                               first_name, last_name, city, country, partner_id, opted_in_at)
        SELECT $1, $2, 'bulk-' || g, 'bulk-' || g || '@example.com', 'Ada', 'Lovelace',
               'London', 'GB', 'partner-7', now()
          FROM generate_series(1, $3) g
        """,
        UUID(world.account), UUID(world.campaign), count,
    )  # fmt: skip
    await world.settled()


async def test_a_client_that_hangs_up_mid_stream_stops_the_query_and_frees_the_connection(
    world: World, database_url: str
) -> None:
    task = await world.task(await world.connection())
    await _bulk_referrals(world, 60_000)
    delivery = await world.deliver(task, 0, "none")
    (file,) = delivery["files"]
    assert file["rows"] == 60_000
    assert file["bytes"] > 4_000_000
    async with create_pool(database_url, min_size=1, max_size=1) as one:
        try:
            await _hang_up_then_download(world, one, file)
        except BaseException:
            one.terminate()  # a connection never given back fails the test, not hangs it
            raise


async def _hang_up_then_download(world: World, one: asyncpg.Pool, file: dict[str, Any]) -> None:
    async with http_api(world.pool, delivery_routes(one)) as base:
        async with (
            aiohttp.ClientSession() as leaving,
            leaving.get(base + file["download_url"], headers=world.auth()) as answer,
        ):
            assert answer.status == 200
            await answer.content.readexactly(64 * 1024)
        # Leaving the block without reading the rest closes the connection.
        async with asyncio.timeout(10):
            for _ in range(100_000):
                if (await _audit(world))[-1]["outcome"] != "streaming":
                    break
                await asyncio.sleep(0.05)
        (aborted,) = await _audit(world)
        assert aborted["outcome"] == "aborted"
        assert aborted["bytes"] < file["bytes"]  # what the connection took whole
        # The pool's only connection came back, usable: the same app serves the file whole.
        async with (
            asyncio.timeout(30),
            world.http.get(base + file["download_url"], headers=world.auth()) as again,
        ):
            assert again.status == 200
            assert hashlib.sha256(await again.read()).hexdigest() == file["sha256"]
