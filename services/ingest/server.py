"""IngestService servicer: converts messages to domain values and results back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import DecodeError
from opentelemetry import metrics

from services.common.auth.context import caller
from services.common.errors import (
    FieldProblem,
    IdleStreamError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from services.common.gen.handoff.ingest.v1 import ingest_pb2, referral_pb2
from services.common.grpc_server import GrpcService
from services.ingest import native
from services.ingest.coalescer import UnaryCoalescer
from services.ingest.fast_validation import Clock, quick_rows
from services.ingest.intake import (
    ReferralStore,
    ingest_pairs,
    ingest_rows,
    require_batch_size,
    unary_outcome,
)
from services.ingest.memory_budget import MemoryBudget
from services.ingest.model import (
    CONSUMER_FIELDS,
    OPT_IN_FIELDS,
    ReferralInput,
    ReferralRow,
    RowResult,
    RowStatus,
)
from services.ingest.store import SMALL_BATCH

log = logging.getLogger(__name__)

_OPT_IN_TEXT = tuple(f for f in OPT_IN_FIELDS if f != "opted_in_at")
_STATUS = {
    RowStatus.ACCEPTED: ingest_pb2.RowResult.ACCEPTED,
    RowStatus.DUPLICATE: ingest_pb2.RowResult.DUPLICATE,
    RowStatus.REJECTED: ingest_pb2.RowResult.REJECTED,
}
STREAM_CHUNK_ROWS = 1000
STREAM_CHUNK_WAIT_S = 0.05
# A stream can run for hours: list at most this many rows; the counts stay exact.
STREAM_MAX_LISTED = 10_000
# A stream that sends nothing for this long is ended (UNAVAILABLE with RetryInfo), so a
# stalled client does not hold its slot of the call limit forever.
STREAM_IDLE_S = 30.0

_meter = metrics.get_meter("handoff.ingest")
_referrals_counter = _meter.create_counter(
    "handoff.ingest.referrals", unit="{referral}", description="Referrals received, by outcome"
)


def referral_input(message: referral_pb2.Referral) -> ReferralInput:
    """The domain value for a Referral message."""
    consumer = message.consumer
    opt_in = message.opt_in
    opted_in_at = None
    decode_problems: tuple[FieldProblem, ...] = ()
    if opt_in.HasField("opted_in_at"):
        try:
            opted_in_at = opt_in.opted_in_at.ToDatetime(tzinfo=UTC)
        except ValueError:  # seconds or nanos outside Timestamp's range: this row only
            decode_problems = (
                FieldProblem("opt_in.opted_in_at", "INVALID_FORMAT", "is not a valid timestamp"),
            )
    return ReferralInput(
        account_id=message.account_id,
        campaign_id=message.campaign_id,
        partner_referral_id=message.partner_referral_id,
        consumer={name: getattr(consumer, name) for name in CONSUMER_FIELDS},
        opt_in={name: getattr(opt_in, name) for name in _OPT_IN_TEXT},
        opted_in_at=opted_in_at,
        extra=dict(message.extra),
        decode_problems=decode_problems,
    )


def candidates(
    messages: Sequence[referral_pb2.Referral], clock: Clock
) -> list[ReferralRow | ReferralInput]:
    """Stored values where the fast path accepts a message, else the full input."""
    quick = quick_rows(messages, clock)
    return [
        row if row is not None else referral_input(message)
        for row, message in zip(quick, messages, strict=True)
    ]


def candidate(message: referral_pb2.Referral, clock: Clock) -> ReferralRow | ReferralInput:
    """One message's stored values, or its full input for the full validator."""
    return candidates([message], clock)[0]


def row_result_message(result: RowResult) -> ingest_pb2.RowResult:
    """The RowResult message for a domain result."""
    return ingest_pb2.RowResult(
        index=result.index,
        status=_STATUS[result.status],
        seq=result.seq,
        partner_referral_id=result.partner_referral_id,
        errors=[
            ingest_pb2.FieldError(field=p.field, code=p.code, message=p.message)
            for p in result.problems
        ],
    )


def add_row_results(
    target: RepeatedCompositeFieldContainer[ingest_pb2.RowResult], results: Iterable[RowResult]
) -> None:
    """Append RowResult messages in place (building them apart and copying costs 4x)."""
    add = target.add
    for result in results:
        message = add(
            index=result.index,
            status=_STATUS[result.status],
            seq=result.seq,
            partner_referral_id=result.partner_referral_id,
        )
        if result.problems:
            message.errors.extend(
                ingest_pb2.FieldError(field=p.field, code=p.code, message=p.message)
                for p in result.problems
            )


def batch_response(results: list[RowResult]) -> bytes:
    """The serialized IngestBatchResponse for `results` (counted in the metrics)."""
    counts = _count(results)
    encoded = native.encode_results(results, _STATUS, counts)
    if encoded is not None:
        return encoded
    response = ingest_pb2.IngestBatchResponse(
        accepted=counts[RowStatus.ACCEPTED],
        duplicates=counts[RowStatus.DUPLICATE],
        rejected=counts[RowStatus.REJECTED],
    )
    add_row_results(response.results, results)
    return response.SerializeToString()


def _count(results: list[RowResult]) -> dict[RowStatus, int]:
    statuses = [result.status for result in results]
    counts = {status: statuses.count(status) for status in RowStatus}
    for status, n in counts.items():
        if n:
            _referrals_counter.add(n, {"outcome": status.value})
    return counts


def utc_now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def unary_coalescer(
    store: ReferralStore, clock: Callable[[], datetime] = utc_now
) -> UnaryCoalescer[referral_pb2.Referral]:
    """The coalescer for Ingest calls (enter it before serving; see coalescer.py)."""
    return UnaryCoalescer(store, clock, lambda messages, now: candidates(messages, Clock.at(now)))


class IngestServicer:
    """Ingest, IngestBatch and IngestStream over one store; unary calls go through
    `coalescer`, which the caller owns (it is entered and closed in the exit stack)."""

    def __init__(
        self,
        store: ReferralStore,
        coalescer: UnaryCoalescer[referral_pb2.Referral],
        clock: Callable[[], datetime] = utc_now,
        *,
        stream_idle_s: float = STREAM_IDLE_S,
        memory: MemoryBudget | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._coalescer = coalescer
        self._stream_idle_s = stream_idle_s
        self._memory = memory or MemoryBudget()

    async def Ingest(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.IngestRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ingest_pb2.IngestResponse:
        allowed = caller().ingest_accounts
        if allowed is not None and _canonical_id(request.referral.account_id) not in allowed:
            # Refused before coalescing: a shared batch holds other callers' rows.
            raise PermissionDeniedError(
                f"this credential may not ingest for account {request.referral.account_id[:64]}"
            )
        with self._memory.holding(request.ByteSize()):
            result = unary_outcome(await self._coalescer.submit(request.referral))
        _count([result])
        return ingest_pb2.IngestResponse(
            seq=result.seq, duplicate=result.status is RowStatus.DUPLICATE
        )

    async def IngestBatch(  # noqa: N802
        self,
        request: bytes,
        context: grpc.aio.ServicerContext[object, object],
    ) -> bytes:
        """Registered by add_ingest_service to take the request serialized, for the scanner,
        and to answer serialized, built in C. Its cost is reserved before it is decoded."""
        with self._memory.holding(len(request)):
            return await self._ingest_batch(request)

    async def _ingest_batch(self, request: bytes) -> bytes:
        now = self._clock()
        clock = Clock.at(now)
        allowed = caller().ingest_accounts
        scanned = native.scan(request, clock)
        if scanned is not None and scanned.count > SMALL_BATCH:
            require_batch_size(scanned.count)
            results = await self._ingest_scanned(scanned, clock, now, allowed=allowed)
        else:
            # Small batches go as one statement, which needs the rows as values.
            batch = _batch_request(request)
            require_batch_size(len(batch.referrals))
            results = await ingest_rows(
                self._store, candidates(batch.referrals, clock), now, allowed_accounts=allowed
            )
        return batch_response(results)

    async def IngestStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[object, object],
    ) -> ingest_pb2.IngestStreamResponse:
        """Registered by add_ingest_service to take each IngestRequest serialized."""
        response = ingest_pb2.IngestStreamResponse()
        allowed = caller().ingest_accounts
        # aclosing: a failed chunk must stop the reader task now, not at garbage collection.
        chunking = _chunks(request_iterator, self._memory, self._stream_idle_s)
        async with contextlib.aclosing(chunking) as chunks:
            async for chunk in chunks:
                results = await self._ingest_chunk(chunk, int(response.received), allowed)
                counts = _count(results)
                response.received += len(chunk)
                response.accepted += counts[RowStatus.ACCEPTED]
                response.duplicates += counts[RowStatus.DUPLICATE]
                response.rejected += counts[RowStatus.REJECTED]
                room = STREAM_MAX_LISTED - len(response.not_accepted)
                listed = [r for r in results if r.status is not RowStatus.ACCEPTED]
                response.not_accepted.extend(row_result_message(r) for r in listed[:room])
                response.not_accepted_truncated |= len(listed) > room
        return response

    async def _ingest_chunk(
        self, chunk: list[bytes], first_index: int, allowed: frozenset[str] | None
    ) -> list[RowResult]:
        """Store one chunk of a stream: through the scanner when each message is plainly
        one referral (so that the messages joined are an IngestBatchRequest)."""
        now = self._clock()
        clock = Clock.at(now)
        if len(chunk) > SMALL_BATCH and all(map(_one_referral, chunk)):
            scanned = native.scan(b"".join(chunk), clock)
            if scanned is not None:
                return await self._ingest_scanned(
                    scanned, clock, now, first_index, stream=True, allowed=allowed
                )
        messages = [_stream_request(first_index + i, raw).referral for i, raw in enumerate(chunk)]
        return await ingest_rows(
            self._store, candidates(messages, clock), now, first_index,
            repeats_are_duplicates=True, allowed_accounts=allowed,
        )  # fmt: skip

    async def _ingest_scanned(
        self,
        scanned: native.Scanned,
        clock: Clock,
        now: datetime,
        first_index: int = 0,
        *,
        stream: bool = False,
        allowed: frozenset[str] | None = None,
    ) -> list[RowResult]:
        """Store the scanner's clean rows with the deferred ones, validated in Python."""
        messages = [referral_pb2.Referral.FromString(raw) for _, raw in scanned.deferred]
        offsets = [offset for offset, _ in scanned.deferred]
        pairs = list(zip(offsets, candidates(messages, clock), strict=True))
        return await ingest_pairs(
            self._store, pairs, now, first_index, scanned=scanned.clean, count=scanned.count,
            repeats_are_duplicates=stream, allowed_accounts=allowed,
        )  # fmt: skip


def _canonical_id(text: str) -> str:
    """A UUID's canonical text, or the text itself when it is none (validation says so)."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return text


def _one_referral(message: bytes) -> bool:
    """Whether a serialized IngestRequest is field 1 (the referral) alone, once."""
    if len(message) < 2 or message[0] != 0x0A:
        return False
    length = shift = 0
    for position in range(1, min(len(message), 6)):
        byte = message[position]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return position + 1 + length == len(message)
        shift += 7
    return False


def _stream_request(index: int, raw: bytes) -> ingest_pb2.IngestRequest:
    try:
        return ingest_pb2.IngestRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidArgumentError(
            f"stream message {index} is not an IngestRequest: {exc}"
        ) from exc


def _batch_request(request: bytes) -> ingest_pb2.IngestBatchRequest:
    try:
        return ingest_pb2.IngestBatchRequest.FromString(request)
    except DecodeError as exc:
        raise InvalidArgumentError(f"not a valid IngestBatchRequest: {exc}") from exc


def add_ingest_service(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register IngestService. IngestBatch takes and gives serialized messages, and
    IngestStream takes them, for the compiled scanner (see there)."""
    name = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
    handlers = {
        "Ingest": grpc.unary_unary_rpc_method_handler(
            servicer.Ingest,
            request_deserializer=ingest_pb2.IngestRequest.FromString,
            response_serializer=ingest_pb2.IngestResponse.SerializeToString,
        ),
        "IngestBatch": grpc.unary_unary_rpc_method_handler(servicer.IngestBatch),
        "IngestStream": grpc.stream_unary_rpc_method_handler(
            servicer.IngestStream,
            response_serializer=ingest_pb2.IngestStreamResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


def ingest_grpc_service(servicer: IngestServicer) -> GrpcService:
    """IngestService for grpc_server()."""
    return GrpcService(
        ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
        lambda server: add_ingest_service(servicer, server),
    )


async def _chunks(
    requests: AsyncIterator[bytes], memory: MemoryBudget, idle_s: float = STREAM_IDLE_S
) -> AsyncGenerator[list[bytes], None]:
    """Group a stream into chunks: full ones at once, partial ones after a short pause.

    Each message's cost is reserved in `memory` as it is read (waiting, while the budget
    is spent, leaves the client to HTTP/2 flow control) and given back once its chunk is
    stored. A client that sends nothing for `idle_s` ends the stream with
    IdleStreamError, after the rows it sent before are stored; only time spent waiting
    for the client counts, not time spent waiting for the database or the budget.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_CHUNK_ROWS * 2)
    received = 0
    held = 0  # cost reserved for messages read and not yet stored

    async def read_all() -> None:
        nonlocal received, held
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(loop.time() + idle_s) as idle:
                async for request in requests:
                    idle.reschedule(None)
                    received += 1
                    held += await memory.wait_and_take(len(request))
                    await queue.put(request)
                    idle.reschedule(loop.time() + idle_s)
        except TimeoutError:
            raise IdleStreamError(
                f"the stream sent nothing for {idle_s:g} s and was ended; its {received} "
                "rows were taken first, valid ones stored (a retry answers them DUPLICATE)"
            ) from None
        finally:
            await queue.put(None)

    reader = asyncio.create_task(read_all())
    try:
        done = False
        while not done:
            first = await queue.get()
            if first is None:
                break
            chunk = [first]
            while len(chunk) < STREAM_CHUNK_ROWS:
                try:
                    item = await asyncio.wait_for(queue.get(), STREAM_CHUNK_WAIT_S)
                except TimeoutError:
                    break
                if item is None:
                    done = True
                    break
                chunk.append(item)
            yield chunk
            stored = sum(memory.cost(len(message)) for message in chunk)
            held -= stored
            memory.give(stored)
        await reader  # re-raises a broken stream
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        memory.give(held)  # messages read but never stored
