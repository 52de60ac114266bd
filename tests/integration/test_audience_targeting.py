"""Suppression and targeting by custom audiences: the SQL match agrees with the upload's
normalisation, a scheduled delivery leaves out (and counts) what its task's audiences hold
back and keeps doing so on a resend, and the real-time path passes held-back referrals
without a call. Files are read back from a real SFTP server, calls from a loopback CRM."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import grpc
import pytest

from services.common.audiences.lines import Member, member_of
from services.common.audiences.staging import StagedRow
from services.common.audiences.store import AudienceStorePg
from services.common.audiences.targets import AudienceSplit, held_back
from services.common.gen.handoff.scheduler.v1 import connections_pb2, tasks_pb2
from services.delivery.transports.http.settings import ApiSettings
from tests.integration.layouts_support import create_account, insert_referrals
from tests.integration.live_support import api_connection, crm, eventually, notify, supervisor
from tests.integration.test_scheduled_delivery import (
    World,
    _connection,
    _csv_emails,
    _deliveries,
    _now,
    _task,
    world,
)

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the fixture, shared with the scheduled-delivery tests


def _member(email: str) -> Member:
    found = member_of(email, "email")
    assert isinstance(found, Member), found
    return found


async def _batches(rows: list[StagedRow]) -> AsyncIterator[list[StagedRow]]:
    yield rows


async def audience(
    pool: asyncpg.Pool,
    account: uuid.UUID,
    kind: str,
    emails: Sequence[str] = (),
    *,
    hashes: Sequence[str] = (),
    replace: bool = False,
    audience_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """An audience filled through the upload's own import (plain emails, or hex hashes
    of one kind: 'md5:<hex>' / 'sha256:<hex>')."""
    store = AudienceStorePg(pool)
    if audience_id is None:
        audience_id = uuid.uuid4()
        assert await store.create(audience_id, account, f"{kind}-{audience_id.hex[:6]}", kind)
    rows: list[StagedRow] = []
    for i, email in enumerate(emails, 1):
        m = _member(email)
        rows.append((i, m.sha256, m.md5))
    for i, value in enumerate(hashes, len(rows) + 1):
        hash_kind, digits = value.split(":")
        found = member_of(digits, hash_kind)
        assert isinstance(found, Member)
        rows.append((i, found.sha256, found.md5))
    imported = await store.import_members(account, audience_id, _batches(rows), replace=replace)
    assert imported is not None
    return audience_id


# -- the match rule, in SQL and in Python ------------------------------------------------------

EMAIL_CLASSES = [
    "plain@example.com",
    "UPPER@EXAMPLE.COM",
    "MiXeD.Case+Tag@Sub.Example.Co.Uk",
    "o'neil@example.com",
    "!#$%&'*+/=?^_`{|}~.-@example.com",
    "digits0123456789@x1-y2.example.org",
    "I.i.Turkish.I@EXAMPLE.TR",  # the C collation lowers ASCII I to i, not to a dotless i
    "a@b.cd",
    "x" * 64 + "@" + "d" * 60 + ".example.com",
]


async def test_the_sql_key_agrees_with_the_upload_normalisation_on_every_email_class(
    pool: asyncpg.Pool,
) -> None:
    for email in EMAIL_CLASSES:
        for variant in (email, f"  {email} ", email.upper(), email.lower()):
            expected = _member(variant)
            sha, md5 = await pool.fetchrow(
                "SELECT sha256(audience_email_key($1)), decode(md5(audience_email_key($1)), 'hex')",
                variant,
            )
            assert (sha, md5) == (expected.sha256, expected.md5), variant


async def test_exclude_include_and_hash_kinds_decide_like_the_rule_says(
    pool: asyncpg.Pool,
) -> None:
    account, _ = await create_account(pool)
    plain = await audience(pool, account, "exclude", ["Kim@Example.com"])
    md5_only = await audience(
        pool, account, "exclude",
        hashes=[f"md5:{_member('md5@example.com').md5.hex()}"],  # type: ignore[union-attr]
    )  # fmt: skip
    sha_only = await audience(
        pool, account, "exclude",
        hashes=[f"sha256:{_member('sha@example.com').sha256.hex()}"],  # type: ignore[union-attr]
    )  # fmt: skip

    candidate = (
        "SELECT 1::bigint AS seq, $1::text AS email, sha256(audience_email_key($1)) AS email_key"
    )
    parameters = ("$2::uuid[]", "$3::uuid[]", "$4::uuid[]", "$5::uuid[]")
    # With the audiences' Bloom filters (a delivery's range) and without (a live page).
    rules = [held_back(candidate, parameters), held_back(candidate, parameters, filters=False)]
    # The import flags the audience holding an MD5-only member, and only that one.
    flagged = await pool.fetchval(
        "SELECT array_agg(id) FROM audiences WHERE account_id = $1 AND md5_only", account
    )
    assert flagged == [md5_only]

    async def held(email: str, exclude: list[uuid.UUID], include: list[uuid.UUID]) -> bool:
        """As a delivery asks: MD5 too for the audiences with MD5-only members."""
        split = AudienceSplit(
            tuple(exclude), tuple(include), tuple(a for a in (*exclude, *include) if a in flagged)
        )
        verdicts = {bool(await pool.fetch(rule, email, *split.arguments())) for rule in rules}
        assert len(verdicts) == 1, email  # the filters change the cost, never the answer
        return verdicts.pop()

    assert await held("kim@example.com", [plain], [])
    assert await held("KIM@example.COM", [plain], [])
    assert not await held("kim2@example.com", [plain], [])
    assert await held("md5@example.com", [md5_only], [])
    assert await held("sha@example.com", [sha_only], [])
    assert not await held("sha@example.com", [md5_only], [])
    # include: only members pass (a member of any include audience)
    assert not await held("kim@example.com", [], [plain])
    assert await held("other@example.com", [], [plain])
    assert not await held("md5@example.com", [], [plain, md5_only])
    # exclude wins over include
    assert await held("kim@example.com", [plain], [plain])
    assert not await held("anyone@example.com", [], [])


# -- scheduled delivery ------------------------------------------------------------------------


async def test_a_scheduled_delivery_leaves_out_and_counts_what_an_exclude_audience_holds_back(
    world: World,
) -> None:
    account = uuid.UUID(world.account)
    excluded = await audience(
        world.pool, account, "exclude", ["S-1@example.com", "s-3@example.com"]
    )
    connection = await _connection(world)
    task = await _task(world, connection, audience_ids=[str(excluded)])
    assert list(task.audience_ids) == [str(excluded)]
    emails = await world.ingest(5, "s")
    await _now(world, task)
    await world.run()
    [delivery] = await _deliveries(world, task)
    assert delivery.state == "succeeded", delivery.error
    [path] = world.folder.iterdir()
    assert _csv_emails(path) == [emails[0], emails[2], emails[4]]
    assert delivery.rows == 3
    assert delivery.suppressed == 2
    original = path.read_bytes()

    # The audience grows: a resend renders the rows the first attempt fixed, byte for byte.
    await audience(world.pool, account, "exclude", [emails[0]], audience_id=excluded)
    path.unlink()
    resent = await world.tasks.ResendDelivery(
        tasks_pb2.ResendDeliveryRequest(account_id=world.account, id=delivery.id)
    )
    await world.run()
    again = await world.tasks.GetDelivery(
        tasks_pb2.GetDeliveryRequest(account_id=world.account, id=resent.id)
    )
    assert again.state == "succeeded", again.error
    assert again.suppressed == 2
    assert path.read_bytes() == original

    # The next run sees the audience as it is now.
    more = await world.ingest(2, "t")
    await audience(world.pool, account, "exclude", [more[1]], audience_id=excluded)
    await _now(world, task)
    await world.run()
    latest = (await _deliveries(world, task))[-1]
    assert latest.state == "succeeded", latest.error
    newest = max(world.folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert _csv_emails(newest) == [more[0]]
    assert latest.suppressed == 1


async def test_an_include_audience_lets_only_its_members_through(world: World) -> None:
    account = uuid.UUID(world.account)
    members = [f"fan-{i}@example.com" for i in range(1000)]
    included = await audience(world.pool, account, "include", members)
    connection = await _connection(world)
    task = await _task(world, connection, audience_ids=[str(included)])
    await insert_referrals(
        world.pool, account, uuid.UUID(world.campaign),
        [{"email": e}
         for e in ["stranger@example.com", "FAN-7@example.com", "fan-999@example.com"]],
    )  # fmt: skip
    await world.settled()
    await _now(world, task)
    await world.run()
    [delivery] = await _deliveries(world, task)
    assert delivery.state == "succeeded", delivery.error
    [path] = world.folder.iterdir()
    assert _csv_emails(path) == ["FAN-7@example.com", "fan-999@example.com"]
    assert (delivery.rows, delivery.suppressed) == (2, 1)


async def test_audiences_are_checked_when_a_task_is_saved(world: World) -> None:
    account = uuid.UUID(world.account)
    small = await audience(world.pool, account, "include", ["few@example.com"])
    connection = await _connection(world)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _task(world, connection, audience_ids=[str(small)])
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at least 1,000 people" in (caught.value.details() or "")
    other_account, _ = await create_account(world.pool)
    foreign = await audience(world.pool, other_account, "exclude", ["x@example.com"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _task(world, connection, audience_ids=[str(foreign)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task.audience_ids[0]" in str(caught.value.trailing_metadata())


async def test_a_deleted_audience_stops_the_delivery_for_a_person_to_look_at(world: World) -> None:
    account = uuid.UUID(world.account)
    excluded = await audience(world.pool, account, "exclude", ["gone@example.com"])
    connection = await _connection(world)
    task = await _task(world, connection, audience_ids=[str(excluded)])
    await world.ingest(1, "d")
    await world.pool.execute("DELETE FROM audiences WHERE id = $1", excluded)
    await _now(world, task)
    await world.run()
    [delivery] = await _deliveries(world, task)
    assert delivery.state == "dead"
    assert "audience" in delivery.error
    assert list(world.folder.iterdir()) == []


async def test_a_file_connection_refuses_audiences_of_its_own(world: World) -> None:
    account = uuid.UUID(world.account)
    excluded = await audience(world.pool, account, "exclude", ["x@example.com"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await world.connections.CreateConnection(
            connections_pb2.CreateConnectionRequest(
                account_id=world.account,
                connection=connections_pb2.Connection(
                    name="files", url=f"sftp://u@127.0.0.1:{world.sftp.port}/in",
                    audience_ids=[str(excluded)],
                ),
            )
        )  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- real time ---------------------------------------------------------------------------------


async def test_the_real_time_path_passes_held_back_referrals_without_a_call(
    pool: asyncpg.Pool,
) -> None:
    account, campaign = await create_account(pool)
    excluded = await audience(pool, account, "exclude", ["Blocked@Example.com"])
    async with crm() as endpoint, supervisor(pool) as running:
        connection = await api_connection(
            pool, account,
            ApiSettings(url=f"{endpoint.url}/leads", body_template='{"email": "{{email}}"}'),
        )  # fmt: skip
        await pool.execute(
            "UPDATE connections SET audience_ids = $2 WHERE id = $1", connection, [excluded]
        )
        await running.claim_round()
        await eventually(lambda: connection in running.loops)
        await asyncio.sleep(0.1)
        await insert_referrals(pool, account, campaign, [
            {"email": "first@example.com"}, {"email": "blocked@example.com"},
            {"email": "last@example.com"},
        ])  # fmt: skip
        await notify(pool)
        await eventually(lambda: len(endpoint.seen) >= 2)

        async def counted() -> bool:
            value = await pool.fetchval(
                "SELECT suppressed FROM live_cursors WHERE connection_id = $1", connection
            )
            return bool(value == 1)

        await eventually(counted)
        await asyncio.sleep(0.2)
        assert [b["email"] for b in endpoint.bodies()] == ["first@example.com", "last@example.com"]


async def test_live_connection_audiences_through_the_api(world: World) -> None:
    """Set through ConnectionService and shown by it."""
    account = uuid.UUID(world.account)
    excluded = await audience(world.pool, account, "exclude", ["no@example.com"])
    created = await world.connections.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            account_id=world.account,
            connection=connections_pb2.Connection(
                name="crm",
                api=connections_pb2.ApiConnection(
                    url="https://crm.example.com/leads", body_template='{"e": "{{email}}"}'
                ),
                audience_ids=[str(excluded)],
            ),
        )
    )
    assert list(created.audience_ids) == [str(excluded)]
    fetched = await world.connections.GetConnection(
        connections_pb2.GetConnectionRequest(account_id=world.account, id=created.id)
    )
    assert list(fetched.audience_ids) == [str(excluded)]
    stored = await world.pool.fetchval(
        "SELECT audience_ids FROM connections WHERE id = $1", uuid.UUID(created.id)
    )
    assert stored == [excluded]


async def test_an_audience_a_task_or_connection_names_cannot_be_deleted(world: World) -> None:
    account = uuid.UUID(world.account)
    store = AudienceStorePg(world.pool)
    used = await audience(world.pool, account, "exclude", ["x@example.com"])
    connection = await _connection(world)
    task = await _task(world, connection, audience_ids=[str(used)])
    await world.pool.execute(
        "UPDATE connections SET audience_ids = $2 WHERE id = $1", uuid.UUID(connection), [used]
    )
    users = await store.delete(account, used)
    assert users is not None
    assert len(users) == 2
    assert f"task '{task.name}'" in users
    assert await store.get(account, used) is not None  # nothing deleted
    await world.tasks.UpdateTask(
        tasks_pb2.UpdateTaskRequest(
            account_id=world.account,
            task=tasks_pb2.Task(
                id=task.id, name=task.name, connection_id=connection, schedule=task.schedule,
                time_zone=task.time_zone,
            ),
        )
    )  # fmt: skip
    await world.pool.execute(
        "UPDATE connections SET audience_ids = '{}' WHERE id = $1", uuid.UUID(connection)
    )
    assert await store.delete(account, used) == []
    assert await store.delete(account, used) is None
