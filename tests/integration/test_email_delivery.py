"""Email delivery end to end, in-process: the connection and recipient API, the scheduler's
loop, the delivery engine, the export service's confirmation link, and a real SMTP relay
(aiosmtpd, STARTTLS and AUTH required) whose messages are read back — attachments row by
row against what was ingested."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import (
    connections_pb2,
    connections_pb2_grpc,
    recipients_pb2,
    recipients_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)
from services.common.migrate import discover_migrations
from services.common.referral_rows import ReferralRowReader
from services.common.signed_links import LinkSigner
from services.delivery.delivery_files import DeliveryFilesPg
from services.delivery.email_store import EmailRecipientsPg
from services.delivery.engine import TRANSPORTS, DeliveryEngine
from services.delivery.spool import Spool
from services.delivery.store import DeliveryStorePg
from services.delivery.transports.email import download_links, email_transport_factory
from services.delivery.transports.email_message import message_id, sender_domain
from services.export.audit import AuditLog
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.link_routes import LinkRoutes
from services.export.store import ExportStore
from services.scheduler.recipients.rules import Confirmations
from services.scheduler.tasks.runner import GrpcDeliveryJobs, TaskRunner
from services.scheduler.tasks.store import TaskStorePg
from tests.integration.access_support import TEST_BOX, make_engine, serve_everything
from tests.integration.credentials_support import account_token, authenticator, service_token
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.smtp_relays import RunningRelay, smtp_relay

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.connections_pb2_grpc import (
        ConnectionServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.recipients_pb2_grpc import (
        RecipientServiceAsyncStub,
    )
    from services.common.gen.handoff.scheduler.v1.tasks_pb2_grpc import TaskServiceAsyncStub

pytestmark = pytest.mark.integration
LINK = re.compile(r"http://\S+/v1/links/confirm\?token=\S+")


@dataclass
class Mail:
    account: str
    campaign: str
    connections: ConnectionServiceAsyncStub
    recipients: RecipientServiceAsyncStub
    tasks: TaskServiceAsyncStub
    runner: TaskRunner
    engine: DeliveryEngine
    relay: RunningRelay
    pool: asyncpg.Pool
    server_port: int
    spool: Path

    async def run(self) -> None:
        await self.runner.tick()
        await self.engine.wait_idle()

    async def ingest(self, count: int, tag: str) -> list[str]:
        emails = [f"{tag}-{i}@example.com" for i in range(count)]
        await insert_referrals(
            self.pool, uuid.UUID(self.account), uuid.UUID(self.campaign),
            [{"email": e} for e in emails],
        )  # fmt: skip
        last = await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM referrals")
        async with asyncio.timeout(30):
            for _ in range(100_000):
                if await self.pool.fetchval("SELECT safe_referral_watermark()") >= last:
                    break
                await asyncio.sleep(0.02)
        return emails

    async def connection(self, **email: object) -> str:
        created = await self.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=self.account,
                connection=connections_pb2.Connection(
                    name=f"mail-{uuid.uuid4().hex[:6]}",
                    email=connections_pb2.EmailConnection(**email),  # type: ignore[arg-type]
                ),
            )
        )
        return created.id

    async def add(self, connection: str, address: str) -> recipients_pb2.Recipient:
        return await self.recipients.AddRecipient(
            recipients_pb2.AddRecipientRequest(
                account_id=self.account, connection_id=connection, address=address
            )
        )

    async def approve(self, connection: str, address: str) -> None:
        added = await self.add(connection, address)
        await self.recipients.ApproveRecipient(
            recipients_pb2.ApproveRecipientRequest(
                account_id=self.account, connection_id=connection, id=added.id
            )
        )

    async def task(self, connection: str) -> tasks_pb2.Task:
        return await self.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(
                account_id=self.account,
                task=tasks_pb2.Task(
                    name=f"Mail {uuid.uuid4().hex[:4]}", connection_id=connection,
                    schedule=tasks_pb2.Schedule(cron="0 6 * * *"), time_zone="Europe/London",
                ),
            )
        )  # fmt: skip

    async def run_now(self, task: tasks_pb2.Task) -> None:
        await self.tasks.RunTaskNow(
            tasks_pb2.RunTaskNowRequest(account_id=self.account, id=task.id)
        )
        await self.run()

    async def deliveries(self, task: tasks_pb2.Task) -> list[tasks_pb2.Delivery]:
        listed = await self.tasks.ListDeliveries(
            tasks_pb2.ListDeliveriesRequest(account_id=self.account, task_id=task.id)
        )
        return list(reversed(listed.deliveries))


@pytest.fixture
async def mail(
    pool: asyncpg.Pool, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Mail]:
    """Everything on loopback; `request.param` (indirect): the relay's message cap."""
    cap = int(getattr(request, "param", 10 * 1024 * 1024))
    account, campaign = (str(x) for x in await create_account(pool))
    operator = await service_token(pool, Role.OPERATOR)
    scheduler = await service_token(pool, Role.SCHEDULER)
    spool = tmp_path / "spool"
    spool.mkdir()
    with smtp_relay(tmp_path, max_message_bytes=cap) as relay:
        signer = LinkSigner(TEST_BOX)
        app = create_app(
            ExportStore(pool), Readiness(), authenticator(pool),
            expected_schema_version=max(m.version for m in discover_migrations()),
            health_timeout_s=2.0,
            links=LinkRoutes(
                ExportStore(pool), signer,
                DeliveryFilesPg(DeliveryStorePg(pool), ReferralRowReader(pool)), AuditLog(pool),
            ),
        )  # fmt: skip
        async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as http_port:
            confirmations = Confirmations(relay.relay, signer, f"http://127.0.0.1:{http_port}")
            email = email_transport_factory(
                relay.relay, EmailRecipientsPg(pool), Spool(str(spool), 50 * 1024 * 1024),
                download_links(signer, f"http://127.0.0.1:{http_port}", 3600),
            )  # fmt: skip
            engine = make_engine(pool, transports={**TRANSPORTS, "email": email})
            async with (
                serve_everything(pool, authenticator(pool), engine, confirmations) as server,
                credential_channel(f"127.0.0.1:{server.port}", operator) as channel,
                credential_channel(f"127.0.0.1:{server.port}", scheduler) as jobs,
            ):
                runner = TaskRunner(TaskStorePg(pool), GrpcDeliveryJobs(jobs), reissue_s=0.0)
                yield Mail(
                    account, campaign, connections_pb2_grpc.ConnectionServiceStub(channel),
                    recipients_pb2_grpc.RecipientServiceStub(channel),
                    tasks_pb2_grpc.TaskServiceStub(channel), runner, engine, relay, pool,
                    server.port, spool,
                )  # fmt: skip
                await engine.close()


def _rows(data: bytes) -> list[str]:
    return [r["email"] for r in csv.DictReader(io.StringIO(data.decode("utf-8")))]


async def _click(link: str) -> str:
    """Open the link as a person would: the page, then its button (a POST)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as page:
            shown = await page.text()
            assert page.status == 200, shown
        token = link.split("token=", 1)[1]
        async with http.post(link.split("?", 1)[0], data={"token": token}) as done:
            assert done.status == 200, await done.text()
            return await done.text()


async def test_a_confirmed_recipient_gets_the_rows_gzipped_and_a_pending_one_only_the_confirmation(
    mail: Mail,
) -> None:
    connection = await mail.connection(gzip_above_bytes=10)
    clicked = await mail.add(connection, "Buyer@Advertiser.Example")
    pending = await mail.add(connection, "someone@outside.example")
    assert (clicked.state, clicked.confirmation_sent) == (recipients_pb2.PENDING, True)
    assert clicked.address == "Buyer@advertiser.example"
    (confirmation,) = mail.relay.to("Buyer@advertiser.example")
    assert not confirmation.attachments()
    (link,) = LINK.findall(confirmation.message.get_content())
    # A link preview (GET) approves nobody.
    async with aiohttp.ClientSession() as http, http.get(link) as page:
        assert page.status == 200
    listed = await mail.recipients.ListRecipients(
        recipients_pb2.ListRecipientsRequest(account_id=mail.account, connection_id=connection)
    )
    assert {r.state for r in listed.recipients} == {recipients_pb2.PENDING}
    assert "will receive" in await _click(link)

    task = await mail.task(connection)
    sent = await mail.ingest(7, "mail")
    await mail.run_now(task)
    (done,) = await mail.deliveries(task)
    assert (done.state, done.rows) == ("succeeded", 7)
    (message,) = [r for r in mail.relay.to("Buyer@advertiser.example") if r.attachments()]
    ((name, data),) = message.attachments()
    assert name.endswith(".csv.gz")
    assert _rows(gzip.decompress(data)) == sent
    body = message.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "7 referrals" in text
    assert not any(e in text for e in sent)  # no referral data
    recipient_id = next(r.id for r in listed.recipients if r.address == clicked.address)
    domain = sender_domain(mail.relay.relay.sender)
    assert message.message["Message-ID"] == message_id(done.id, recipient_id, domain)
    # The pending recipient got its confirmation and nothing else.
    assert [bool(r.attachments()) for r in mail.relay.to(pending.address)] == [False]
    history = await mail.recipients.ListRecipients(
        recipients_pb2.ListRecipientsRequest(account_id=mail.account, connection_id=connection)
    )
    approved = next(r for r in history.recipients if r.id == recipient_id)
    assert [(e.state, e.how) for e in approved.history] == [
        (recipients_pb2.PENDING, "operator"),
        (recipients_pb2.APPROVED, "link"),
    ]
    assert list(mail.spool.iterdir()) == []  # the spool is cleaned


async def test_a_550_is_recorded_for_that_recipient_and_4xx_ones_retry_alone(mail: Mail) -> None:
    connection = await mail.connection()
    for address in ("a@ok.example", "b@bounce.example", "c@busy.example", "d@later.example"):
        await mail.approve(connection, address)
    mail.relay.script("b@bounce.example", "550 5.1.1 no such mailbox")
    mail.relay.script("c@busy.example", "451 4.3.0 try again later", "")
    mail.relay.script("d@later.example", "421 4.7.0 too busy", "")
    task = await mail.task(connection)
    sent = await mail.ingest(5, "bounce")
    await mail.run_now(task)
    (first,) = await mail.deliveries(task)
    assert first.state == "retrying"
    await asyncio.sleep(0.1)  # past the quick retry's backoff
    async with asyncio.timeout(30):
        while (await mail.deliveries(task))[0].state != "succeeded":
            await mail.run()
            await asyncio.sleep(0.05)
    for address in ("a@ok.example", "c@busy.example", "d@later.example"):
        (received,) = [r for r in mail.relay.to(address) if r.attachments()]  # exactly once
        assert _rows(received.attachments()[0][1]) == sent
    assert [r for r in mail.relay.to("b@bounce.example") if r.attachments()] == []
    outcomes = dict(await mail.pool.fetch("SELECT address, outcome FROM delivery_recipients"))
    assert outcomes == {
        "a@ok.example": "accepted", "b@bounce.example": "failed",
        "c@busy.example": "accepted", "d@later.example": "accepted",
    }  # fmt: skip
    attention = await mail.pool.fetch("SELECT diagnosis, message FROM attention_events")
    assert [(r["diagnosis"], "b@bounce.example" in r["message"]) for r in attention] == [
        ("recipient", True)
    ]
    cursor = await mail.pool.fetchval(
        "SELECT delivered_seq FROM tasks WHERE id = $1", uuid.UUID(task.id)
    )
    assert cursor == first.range.through_seq


async def test_a_task_whose_recipients_are_all_unapproved_needs_attention(mail: Mail) -> None:
    connection = await mail.connection()
    await mail.approve(connection, "gone@example.org")
    await mail.add(connection, "waiting@example.org")
    listed = await mail.recipients.ListRecipients(
        recipients_pb2.ListRecipientsRequest(account_id=mail.account, connection_id=connection)
    )
    approved = next(r for r in listed.recipients if r.address == "gone@example.org")
    revoked = await mail.recipients.RevokeRecipient(
        recipients_pb2.RevokeRecipientRequest(
            account_id=mail.account, connection_id=connection, id=approved.id
        )
    )
    assert revoked.state == recipients_pb2.REVOKED
    assert [e.state for e in revoked.history][-1] == recipients_pb2.REVOKED
    before = len(mail.relay.received)
    task = await mail.task(connection)
    await mail.ingest(3, "nobody")
    await mail.run_now(task)
    (done,) = await mail.deliveries(task)
    assert done.state == "dead"
    refreshed = await mail.tasks.GetTask(
        tasks_pb2.GetTaskRequest(account_id=mail.account, id=task.id)
    )
    assert "no approved recipient" in refreshed.attention
    assert len(mail.relay.received) == before  # nobody got anything


async def test_an_account_token_may_add_and_revoke_but_never_approve(
    mail: Mail, pool: asyncpg.Pool
) -> None:
    connection = await mail.connection()
    token = await account_token(pool, mail.account, "config:read", "config:write")
    async with credential_channel(f"127.0.0.1:{mail.server_port}", token) as channel:
        api = recipients_pb2_grpc.RecipientServiceStub(channel)
        added = await api.AddRecipient(
            recipients_pb2.AddRecipientRequest(
                account_id=mail.account, connection_id=connection, address="x@outside.example"
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.ApproveRecipient(
                recipients_pb2.ApproveRecipientRequest(
                    account_id=mail.account, connection_id=connection, id=added.id
                )
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        revoked = await api.RevokeRecipient(
            recipients_pb2.RevokeRecipientRequest(
                account_id=mail.account, connection_id=connection, id=added.id
            )
        )
    assert revoked.state == recipients_pb2.REVOKED
    assert [(e.state, e.how) for e in revoked.history] == [
        (recipients_pb2.PENDING, "account"),
        (recipients_pb2.REVOKED, "account"),
    ]
    # A revoked recipient's old confirmation link approves nothing.
    (confirmation,) = mail.relay.to("x@outside.example")
    (link,) = LINK.findall(confirmation.message.get_content())
    async with aiohttp.ClientSession() as http:
        token_ = link.split("token=", 1)[1]
        async with http.post(link.split("?", 1)[0], data={"token": token_}) as answer:
            assert answer.status == 409
        async with http.post(link.split("?", 1)[0], data={"token": token_ + "x"}) as forged:
            assert forged.status == 410
    state = await pool.fetchval("SELECT state FROM recipients WHERE id = $1", uuid.UUID(added.id))
    assert state == "revoked"


async def test_an_email_connection_keeps_its_templates_and_refuses_unknown_tokens(
    mail: Mail,
) -> None:
    connection = await mail.connection(subject_template="{task} ({rows})")
    shown = await mail.connections.GetConnection(
        connections_pb2.GetConnectionRequest(account_id=mail.account, id=connection)
    )
    assert shown.WhichOneof("kind") == "email"
    assert shown.email.subject_template == "{task} ({rows})"
    assert "{file}" in shown.email.body_template  # the default body
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mail.connection(body_template="Your leads: {email}")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown token {email}" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as not_email:
        await mail.recipients.ListRecipients(
            recipients_pb2.ListRecipientsRequest(
                account_id=mail.account, connection_id=str(uuid.uuid4())
            )
        )
    assert not_email.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("mail", [65536], indirect=True)
async def test_above_the_relays_cap_the_message_links_to_exactly_that_deliverys_file(
    mail: Mail,
) -> None:
    connection = await mail.connection(gzip_above_bytes=-1)
    await mail.approve(connection, "big@example.net")
    task = await mail.task(connection)
    sent = await mail.ingest(400, "big")
    await mail.run_now(task)
    (done,) = await mail.deliveries(task)
    assert (done.state, done.rows) == ("succeeded", 400)
    (message,) = [r for r in mail.relay.to("big@example.net") if "download" in str(r.message)]
    assert message.attachments() == []
    (link,) = re.findall(r"http://\S+/v1/links/download\?token=\S+", message.message.get_content())
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as answer:
            assert answer.status == 200
            assert (
                Path(done.files[0].path).name.removeprefix("email:")
                in (answer.headers["Content-Disposition"])
            )
            data = await answer.read()
        async with http.get(link[:-3] + "abc") as forged:
            assert forged.status == 410
    assert hashlib.sha256(data).hexdigest() == done.files[0].sha256  # the same bytes
    assert _rows(data) == sent
    # On the account's audit log, by the link (no credential), with what it sent.
    audit = AuditLog(mail.pool)
    (entry,) = await audit.page(uuid.UUID(mail.account), None, None, None, None, 10)
    assert (entry.action, entry.credential_id, entry.outcome) == (
        "link_download",
        None,
        "completed",
    )
    assert (entry.rows, entry.bytes) == (400, len(data))
