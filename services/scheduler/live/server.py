"""LiveDeliveryService: an API connection's live state, waiting and dead referrals,
attempts, replay, enable and disable. The only SQL is in sql/live.sql."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import grpc

from services.common.db import driver_errors, load_queries
from services.common.errors import (
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.gen.handoff.scheduler.v1 import live_pb2, live_pb2_grpc
from services.common.grpc_server import GrpcService
from services.common.ids import parse_id
from services.common.paging import decode_token, encode_token, invalid_token, page_size
from services.common.timestamps import timestamp_message
from services.delivery.live.loop import message_id
from services.delivery.transports.http.settings import ApiSettings

QUERIES = load_queries(Path(__file__).parent / "sql" / "live.sql")
Context = grpc.aio.ServicerContext[object, object]
MAX_REPLAY_LIST = 10_000
STATES = ("retrying", "replay", "dead", "rejected")


def _position(token: str) -> tuple[datetime | None, int]:
    raw = decode_token(token)
    if not raw:
        return None, 0
    try:
        at, seq = raw.rsplit("|", 1)
        return datetime.fromisoformat(at), int(seq)
    except ValueError as exc:
        raise invalid_token() from exc


def _token(at: datetime, seq: int) -> str:
    return encode_token(f"{at.isoformat()}|{seq}")


class LiveDeliveryServicer(live_pb2_grpc.LiveDeliveryServiceServicer):
    """Reads and steers the live path of the account's API connections."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        with driver_errors(name):
            found: list[asyncpg.Record] = await self._pool.fetch(QUERIES[name], *args)
        return found

    def _ids(self, account_id: str, connection_id: str) -> tuple[UUID, UUID]:
        account = parse_id("account_id", account_id)
        connection = parse_id("connection_id", connection_id)
        return account, connection

    async def _state(self, account: UUID, connection: UUID) -> live_pb2.LiveState:
        rows = await self._fetch("live_state", account, connection)
        if not rows:
            raise NotFoundError(f"connection {connection} does not exist in account {account}")
        r = rows[0]
        if r["kind"] != "api":
            raise FailedPreconditionError(
                f"connection {connection} is a {r['kind']} connection: only API connections "
                "deliver in real time"
            )
        return live_pb2.LiveState(
            connection_id=str(connection),
            delivered_seq=r["delivered_seq"] or 0,
            disabled=r["disabled_at"] is not None,
            disabled_reason=r["disabled_reason"] or "",
            disabled_at=timestamp_message(r["disabled_at"]),
            failing_since=timestamp_message(r["failing_since"]),
            last_success_at=timestamp_message(r["last_success_at"]),
            waiting=r["waiting"],
            dead=r["dead"],
            rejected=r["rejected"],
            suppressed=r["suppressed"],
            owner=r["owner"] or "",
        )

    async def _wake(self, connection: UUID) -> None:
        await self._fetch("live_wakeup", str(connection))

    async def GetLiveState(  # noqa: N802
        self, request: live_pb2.GetLiveStateRequest, context: Context
    ) -> live_pb2.LiveState:
        return await self._state(*self._ids(request.account_id, request.connection_id))

    async def ListLiveMessages(  # noqa: N802
        self, request: live_pb2.ListLiveMessagesRequest, context: Context
    ) -> live_pb2.ListLiveMessagesResponse:
        account, connection = self._ids(request.account_id, request.connection_id)
        await self._state(account, connection)
        if request.state and request.state not in STATES:
            problem = FieldProblem("state", "UNKNOWN_CODE", f"one of {', '.join(STATES)}")
            raise InvalidArgumentError(problem.message, [problem])
        size = page_size(request.page_size)
        at, seq = _position(request.page_token)
        rows = await self._fetch(
            "live_messages_page", connection, account, request.state, at, seq, size + 1
        )
        more = len(rows) > size
        rows = rows[:size]
        return live_pb2.ListLiveMessagesResponse(
            messages=[
                live_pb2.LiveMessage(
                    seq=r["seq"],
                    message_id=message_id(connection, r["seq"]),
                    state=r["state"],
                    attempts=r["attempts"],
                    next_attempt_at=timestamp_message(r["next_attempt_at"]),
                    first_failed_at=timestamp_message(r["first_failed_at"]),
                    last_attempt_at=timestamp_message(r["last_attempt_at"]),
                    last_status=r["last_status"] or 0,
                    last_error=r["last_error"] or "",
                )
                for r in rows
            ],
            next_page_token=_token(rows[-1]["last_attempt_at"], rows[-1]["seq"])
            if more and rows[-1]["last_attempt_at"] is not None
            else "",
        )

    async def ListLiveAttempts(  # noqa: N802
        self, request: live_pb2.ListLiveAttemptsRequest, context: Context
    ) -> live_pb2.ListLiveAttemptsResponse:
        account, connection = self._ids(request.account_id, request.connection_id)
        await self._state(account, connection)
        size = page_size(request.page_size)
        at, seq = _position(request.page_token)
        rows = await self._fetch(
            "live_attempts_page", connection, account, request.seq, at, seq, size + 1
        )
        more = len(rows) > size
        rows = rows[:size]
        return live_pb2.ListLiveAttemptsResponse(
            attempts=[
                live_pb2.LiveAttempt(
                    attempted_at=timestamp_message(r["attempted_at"]),
                    seq=r["seq"],
                    attempt=r["attempt"],
                    status=r["status"] or 0,
                    latency_ms=r["latency_ms"],
                    outcome=r["outcome"],
                    rule=r["rule"],
                    response_head=r["response_head"] or "",
                    error=r["error"] or "",
                )
                for r in rows
            ],
            next_page_token=_token(rows[-1]["attempted_at"], rows[-1]["seq"]) if more else "",
        )

    async def ReplayLive(  # noqa: N802
        self, request: live_pb2.ReplayLiveRequest, context: Context
    ) -> live_pb2.ReplayLiveResponse:
        account, connection = self._ids(request.account_id, request.connection_id)
        await self._state(account, connection)
        which = request.WhichOneof("selection")
        if which == "referrals":
            seqs = list(request.referrals.seqs)
            if not 0 < len(seqs) <= MAX_REPLAY_LIST:
                problem = FieldProblem(
                    "referrals.seqs", "OUT_OF_RANGE", f"1 to {MAX_REPLAY_LIST} referrals"
                )
                raise InvalidArgumentError(problem.message, [problem])
            status = await self._execute("live_replay_seqs", connection, account, seqs)
        elif which == "received":
            if not request.received.HasField("start") or not request.received.HasField("end"):
                problem = FieldProblem("received", "REQUIRED", "start and end are required")
                raise InvalidArgumentError(problem.message, [problem])
            start = request.received.start.ToDatetime(tzinfo=UTC)
            end = request.received.end.ToDatetime(tzinfo=UTC)
            if start >= end:
                problem = FieldProblem("received.end", "OUT_OF_RANGE", "must be after start")
                raise InvalidArgumentError(problem.message, [problem])
            campaigns = await self._campaigns(account, connection)
            status = await self._execute(
                "live_replay_received", connection, account, start, end, campaigns
            )
        elif which == "failed_since":
            since = request.failed_since.ToDatetime(tzinfo=UTC)
            status = await self._execute("live_replay_failed", connection, account, since)
        else:
            problem = FieldProblem(
                "selection", "REQUIRED", "give referrals, received or failed_since"
            )
            raise InvalidArgumentError(problem.message, [problem])
        await self._wake(connection)
        return live_pb2.ReplayLiveResponse(queued=int(status.rsplit(" ", 1)[-1]))

    async def _campaigns(self, account: UUID, connection: UUID) -> list[UUID] | None:
        with driver_errors("live_settings"):
            settings = await self._pool.fetchval(QUERIES["live_settings"], account, connection)
        api = ApiSettings.from_json(settings)
        return None if api.campaign_ids is None else [UUID(c) for c in api.campaign_ids]

    async def _execute(self, name: str, *args: Any) -> str:
        with driver_errors(name):
            status: str = await self._pool.execute(QUERIES[name], *args)
        return status

    async def EnableLive(  # noqa: N802
        self, request: live_pb2.EnableLiveRequest, context: Context
    ) -> live_pb2.LiveState:
        account, connection = self._ids(request.account_id, request.connection_id)
        await self._state(account, connection)
        await self._execute("live_enable", connection, account)
        await self._wake(connection)
        return await self._state(account, connection)

    async def DisableLive(  # noqa: N802
        self, request: live_pb2.DisableLiveRequest, context: Context
    ) -> live_pb2.LiveState:
        account, connection = self._ids(request.account_id, request.connection_id)
        await self._state(account, connection)
        reason = request.reason.strip()[:500] or "disabled by a person"
        await self._execute("live_disable_by_person", connection, account, reason)
        await self._wake(connection)
        return await self._state(account, connection)


def live_service(pool: asyncpg.Pool) -> GrpcService:
    """LiveDeliveryService for grpc_server()."""
    servicer = LiveDeliveryServicer(pool)
    return GrpcService(
        live_pb2.DESCRIPTOR.services_by_name["LiveDeliveryService"].full_name,
        lambda server: live_pb2_grpc.add_LiveDeliveryServiceServicer_to_server(servicer, server),
    )
