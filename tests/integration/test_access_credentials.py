"""Credentials as callers meet them: bad tokens, expiry, revocation within the cache
bound, archived accounts, ingest credentials limited to some accounts, the admin API."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from services.common.auth import tokens
from services.common.auth.client import credential_channel
from services.common.auth.model import SCOPES, CredentialKind, Role
from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.gen.handoff.auth.v1 import access_pb2, credentials_pb2, credentials_pb2_grpc
from services.common.gen.handoff.ingest.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from services.common.gen.handoff.scheduler.v1 import layouts_pb2, layouts_pb2_grpc
from services.common.grpc_server import MAX_MESSAGE_BYTES, RunningServer
from services.ingest.store import SMALL_BATCH
from tests.integration.access_support import serve_everything
from tests.integration.credentials_support import account_token, service_token
from tests.integration.factories import referral
from tests.integration.layouts_support import create_account, violations

pytestmark = pytest.mark.integration
CODE = grpc.StatusCode
TTL_S = 30.0


@dataclass
class Clock:
    """The authenticator's time, moved by the tests."""

    monotonic: float = 1000.0
    wall: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Served:
    server: RunningServer
    clock: Clock
    operator: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def channel(self, token: str) -> grpc.aio.Channel:
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        return credential_channel(self.target, token, options=options)


@pytest.fixture
async def served(pool: asyncpg.Pool) -> AsyncIterator[Served]:
    clock = Clock()
    verifier = Authenticator(
        CredentialStore(pool),
        cache_ttl_s=TTL_S,
        monotonic=lambda: clock.monotonic,
        now=lambda: clock.wall,
    )
    operator = await service_token(pool, Role.OPERATOR)
    async with serve_everything(pool, verifier) as server:
        yield Served(server, clock, operator)


async def _whoami(
    served: Served, metadata: list[tuple[str, str]]
) -> credentials_pb2.Credential | grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = credentials_pb2_grpc.CredentialServiceStub(channel)
        try:
            return await stub.WhoAmI(credentials_pb2.WhoAmIRequest(), metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error


def _refusal(answer: object) -> tuple[CODE, str]:
    assert isinstance(answer, grpc.aio.AioRpcError), answer
    return answer.code(), answer.details() or ""


async def test_bad_credentials_are_unauthenticated_with_a_message_that_helps(
    served: Served, pool: asyncpg.Pool
) -> None:
    real = served.operator
    forged_secret = real[:41] + ("0" if real[41] != "0" else "1") + real[42:]
    cases = {
        "Bearer nonsense": "not a Handoff token",
        "Bearer hoff_at_123": "98 characters",
        "Bearer " + real[:-1] + ("0" if real[-1] != "0" else "1"): "checksum",
        "Bearer hoff_sc_" + uuid.uuid4().hex + "_" + "ab" * 24 + "_00000000": "checksum",
        "Token " + real: "Bearer scheme",
        "Bearer " + "x" * 4000: "too long",
    }
    for value, message in cases.items():
        code, details = _refusal(await _whoami(served, [("authorization", value)]))
        assert code is CODE.UNAUTHENTICATED, value[:40]
        assert message in details, (value[:40], details)
    # A well-formed token whose secret is wrong reads exactly like one nobody issued.
    unknown = tokens.mint(CredentialKind.SERVICE, uuid.uuid4()).token
    body = forged_secret[:-9]
    forged = f"{body}_{zlib.crc32(body.encode()):08x}"
    answers = [
        _refusal(await _whoami(served, [("authorization", f"Bearer {t}")]))
        for t in (unknown, forged)
    ]
    assert answers == [(CODE.UNAUTHENTICATED, "unknown credential")] * 2
    # The token under another name is pointed to the right one.
    code, details = _refusal(await _whoami(served, [("x-api-key", real)]))
    assert code is CODE.UNAUTHENTICATED
    assert "'x-api-key'" in details
    assert "authorization: Bearer" in details


async def test_expiry_is_exact_and_revocation_holds_within_the_cache_bound(
    served: Served, pool: asyncpg.Pool
) -> None:
    account = str((await create_account(pool))[0])
    expiring = await account_token(
        pool, account, "config:read", expires_at=served.clock.wall + timedelta(minutes=5)
    )
    revoked = await account_token(pool, account, "config:read")
    assert not isinstance(
        await _whoami(served, [("authorization", f"Bearer {expiring}")]), grpc.aio.AioRpcError
    )
    who = await _whoami(served, [("authorization", f"Bearer {revoked}")])
    assert isinstance(who, credentials_pb2.Credential)
    assert (who.account_id, list(who.scopes)) == (account, ["config:read"])

    served.clock.wall += timedelta(minutes=5)  # expiry: at once, cache or not
    code, details = _refusal(await _whoami(served, [("authorization", f"Bearer {expiring}")]))
    assert code is CODE.UNAUTHENTICATED
    assert "expired" in details

    async with served.channel(served.operator) as channel:
        admin = credentials_pb2_grpc.CredentialServiceStub(channel)
        gone = await admin.RevokeCredential(credentials_pb2.RevokeCredentialRequest(id=who.id))
        again = await admin.RevokeCredential(credentials_pb2.RevokeCredentialRequest(id=who.id))
    assert gone.HasField("revoked_at")
    assert again.revoked_at == gone.revoked_at
    # Cached: still admitted until the bound passes, then refused.
    served.clock.monotonic += TTL_S - 1
    assert isinstance(
        await _whoami(served, [("authorization", f"Bearer {revoked}")]), credentials_pb2.Credential
    )
    served.clock.monotonic += 1.5
    code, details = _refusal(await _whoami(served, [("authorization", f"Bearer {revoked}")]))
    assert code is CODE.UNAUTHENTICATED
    assert "revoked" in details


async def test_a_token_of_an_archived_account_reads_but_changes_nothing(
    served: Served, pool: asyncpg.Pool
) -> None:
    account = str((await create_account(pool))[0])
    token = await account_token(pool, account, "config:read", "config:write")
    async with served.channel(served.operator) as channel:
        await accounts_pb2_grpc.AccountServiceStub(channel).ArchiveAccount(
            accounts_pb2.ArchiveAccountRequest(id=account)
        )
    served.clock.monotonic += TTL_S + 1  # past the cache bound
    async with served.channel(token) as channel:
        layouts = layouts_pb2_grpc.LayoutServiceStub(channel)
        listed = await layouts.ListLayouts(layouts_pb2.ListLayoutsRequest(account_id=account))
        assert listed is not None
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await layouts.CreateLayout(layouts_pb2.CreateLayoutRequest(account_id=account))
    assert caught.value.code() is CODE.PERMISSION_DENIED
    assert "archived" in (caught.value.details() or "")


async def test_an_ingest_credential_limited_to_accounts_refuses_other_rows_one_by_one(
    served: Served, pool: asyncpg.Pool
) -> None:
    mine, my_campaign = (str(x) for x in await create_account(pool))
    other, other_campaign = (str(x) for x in await create_account(pool))
    token = await service_token(pool, Role.INGEST, accounts=[mine])
    async with served.channel(token) as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        for size in (4, SMALL_BATCH + 6):  # one statement, and the scanner's COPY path
            rows = [
                referral(mine if i % 2 else other, my_campaign if i % 2 else other_campaign,
                         f"p-{size}-{i}")
                for i in range(size)
            ]  # fmt: skip
            reply = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=rows))
            assert reply.accepted == size // 2
            assert reply.rejected == size - size // 2
            for result in reply.results:
                if result.index % 2:
                    assert result.status == ingest_pb2.RowResult.ACCEPTED
                else:
                    assert result.status == ingest_pb2.RowResult.REJECTED
                    assert [(e.field, e.code) for e in result.errors] == [
                        ("account_id", "PERMISSION_DENIED")
                    ]
        summary = await ingest.IngestStream(
            iter([ingest_pb2.IngestRequest(referral=referral(other, other_campaign, "s-1"))])
        )
        assert (summary.accepted, summary.rejected) == (0, 1)
        assert summary.not_accepted[0].errors[0].code == "PERMISSION_DENIED"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest.Ingest(
                ingest_pb2.IngestRequest(referral=referral(other, other_campaign, "u-1"))
            )
        assert caught.value.code() is CODE.PERMISSION_DENIED
        accepted = await ingest.Ingest(
            ingest_pb2.IngestRequest(referral=referral(mine, my_campaign, "u-2"))
        )
    assert accepted.seq > 0
    stored = await pool.fetchval(
        "SELECT count(*) FROM referrals WHERE account_id = $1", uuid.UUID(other)
    )
    assert stored == 0


async def test_credential_admin_shows_the_token_once_and_refuses_bad_requests(
    served: Served, pool: asyncpg.Pool
) -> None:
    account = str((await create_account(pool))[0])
    async with served.channel(served.operator) as channel:
        admin = credentials_pb2_grpc.CredentialServiceStub(channel)
        created = await admin.CreateAccountToken(
            credentials_pb2.CreateAccountTokenRequest(
                account_id=account, name="CRM export", scopes=["referrals:read", "referrals:read"]
            )
        )
        assert created.token.startswith("hoff_at_")
        assert list(created.credential.scopes) == ["referrals:read"]
        service = await admin.CreateServiceCredential(
            credentials_pb2.CreateServiceCredentialRequest(
                name="partner gateway", roles=[access_pb2.INGEST], ingest_account_ids=[account]
            )
        )
        assert service.token.startswith("hoff_sc_")
        listed = await admin.ListCredentials(
            credentials_pb2.ListCredentialsRequest(account_id=account)
        )
        assert [c.id for c in listed.credentials] == [created.credential.id]
        fetched = await admin.GetCredential(
            credentials_pb2.GetCredentialRequest(id=service.credential.id)
        )
        assert list(fetched.ingest_account_ids) == [account]
        assert created.token not in str(listed) + str(fetched)
        stored = await pool.fetchval(
            "SELECT secret_sha256 FROM credentials WHERE id = $1", uuid.UUID(created.credential.id)
        )
        assert created.token.split("_")[3].encode() not in bytes(stored)

        token_request = credentials_pb2.CreateAccountTokenRequest
        bad = [
            (token_request(account_id=account, name="x"), ("scopes", "REQUIRED")),
            (
                token_request(account_id=account, name="x", scopes=["admin"]),
                ("scopes[0]", "UNKNOWN_CODE"),
            ),
            (
                token_request(account_id="nope", name="x", scopes=["config:read"]),
                ("account_id", "INVALID_FORMAT"),
            ),
        ]
        for request, violation in bad:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.CreateAccountToken(request)
            assert caught.value.code() is CODE.INVALID_ARGUMENT
            assert violations(caught.value) == [violation]
        past = datetime.now(UTC) - timedelta(seconds=1)
        request = credentials_pb2.CreateAccountTokenRequest(
            account_id=account, name="x", scopes=["config:read"]
        )
        request.expires_at.FromDatetime(past)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.CreateAccountToken(request)
        assert violations(caught.value) == [("expires_at", "OUT_OF_RANGE")]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.CreateAccountToken(
                credentials_pb2.CreateAccountTokenRequest(
                    account_id=str(uuid.uuid4()), name="x", scopes=list(SCOPES)
                )
            )
        assert caught.value.code() is CODE.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.CreateServiceCredential(
                credentials_pb2.CreateServiceCredentialRequest(
                    name="x", roles=[access_pb2.OPERATOR], ingest_account_ids=[account]
                )
            )
        assert violations(caught.value) == [("ingest_account_ids", "INVALID_FORMAT")]
