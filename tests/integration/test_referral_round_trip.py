"""Every field of referral.proto goes in through every ingest path and comes back out of the
renderer intact.

The values are made from the proto descriptor, not from a list of names: a field added to
the proto (and wherever else the shape tests ask) is carried here without editing this
file, and a path that drops or misplaces it fails. Each field of each referral gets its
own value, so that two columns swapped, or two rows mixed up, show too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.common.gen.handoff.ingest.v1 import ingest_pb2, referral_pb2
from services.common.layouts.catalog import EXTRA_PREFIX, ROW_FIELDS, iso_timestamp
from services.common.layouts.compiler import compile_layout
from services.common.layouts.model import (
    Column,
    FormulaGuard,
    JsonLinesFormat,
    LayoutSpec,
    OutputFormat,
)
from services.common.layouts.render import render_columns
from services.common.referral_rows import ReferralRowReader
from services.common.referral_shape import COLUMNS_BY_NAME, NESTED
from services.ingest import native
from services.ingest import store as store_module
from services.ingest.store import SMALL_BATCH
from tests.integration.conftest import Target

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub

pytestmark = pytest.mark.integration

LARGE = SMALL_BATCH + 36
EXTRA_KEYS = ("question_1", "answer.two")
OPTED_IN_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
# Fields with a format to respect: a valid value for row n (each distinct from the others).
FORMATTED: dict[str, Callable[[int], str]] = {
    "partner_referral_id": lambda n: f"round-trip-{n}",
    "email": lambda n: f"person.{n}@example.com",
    "date_of_birth": lambda n: f"19{50 + n % 50}-0{1 + n % 9}-1{n % 10}",
    "mobile": lambda n: f"+44 7700 9{n:05d}",
    "phone": lambda n: f"020 7946 {n:04d}",
    "state": lambda n: "ENG",
    "postcode": lambda n: f"N{n % 10} 9GU",
    "country": lambda n: "GB",
    "language": lambda n: "en-GB",
    "ip_address": lambda n: f"2001:db8::{n:x}" if n % 2 else f"203.0.113.{n % 256}",
    "ad_text": lambda n: f'Yes to "offers" {n}.\nUnsubscribe\tany time ü',
}


def _text_value(message: Descriptor, field: FieldDescriptor, n: int) -> str:
    if field.name in FORMATTED:
        return FORMATTED[field.name](n)
    limit = COLUMNS_BY_NAME[field.name].max_length or 100
    return f"{message.name}.{field.name} {n} ü"[:limit]


def _fill(message: Any, n: int) -> None:
    """Set every field of `message` (recursively) to a value unique to the field and n."""
    descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        if field.name in NESTED:
            _fill(getattr(message, field.name), n)
        elif field.message_type is not None and field.message_type.full_name.endswith("Timestamp"):
            getattr(message, field.name).FromDatetime(OPTED_IN_AT - timedelta(seconds=n))
        elif field.is_repeated and field.message_type is not None:  # the extra map
            for key in EXTRA_KEYS:
                getattr(message, field.name)[key] = f"{key} of {n}\twith a tab"
        elif field.type == FieldDescriptor.TYPE_STRING:
            if field.name not in ("account_id", "campaign_id"):
                setattr(message, field.name, _text_value(descriptor, field, n))
        else:  # pragma: no cover - a new kind of field: this test must learn it
            pytest.fail(f"no test value for {descriptor.name}.{field.name} (type {field.type})")


def _referral(target: Target, n: int) -> referral_pb2.Referral:
    message = referral_pb2.Referral(account_id=target.account_id, campaign_id=target.campaign_id)
    _fill(message, n)
    return message


def _expected(message: referral_pb2.Referral) -> dict[str, Any]:
    """What the renderer must show for each standard and extra field of a referral."""
    values: dict[str, Any] = {}
    for container in (message, message.consumer, message.opt_in):
        for field in container.DESCRIPTOR.fields:
            if field.name in NESTED:
                continue
            value = getattr(container, field.name)
            if field.name == "extra":
                values["extra"] = dict(value)
                values.update({EXTRA_PREFIX + k: v for k, v in value.items()})
            elif field.message_type is not None:
                values[field.name] = value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            else:
                values[field.name] = value
    return values


async def _rendered(pool: asyncpg.Pool, account_id: str) -> dict[str, dict[str, Any]]:
    """Every stored referral of the account as the renderer writes it, by partner id."""
    fields = (*ROW_FIELDS, *(EXTRA_PREFIX + key for key in EXTRA_KEYS))
    spec = LayoutSpec(
        tuple(Column(name, name) for name in fields),
        formula_guard=FormulaGuard.OFF,
        format=OutputFormat(JsonLinesFormat()),
    )
    reader = ReferralRowReader(pool)
    layout = compile_layout(spec, {}, await reader.render_context(UUID(account_id)))
    batches = reader.rows_in_range(UUID(account_id), 0, 2**62, fields=layout.row_fields)
    text = b"".join([chunk async for chunk in render_columns(layout, batches)]).decode()
    rows = [json.loads(line) for line in text.splitlines()]
    for row in rows:
        row["extra"] = json.loads(row["extra"])
    return {row["partner_referral_id"]: row for row in rows}


async def _requests(
    messages: list[referral_pb2.Referral],
) -> AsyncIterator[ingest_pb2.IngestRequest]:
    for message in messages:
        yield ingest_pb2.IngestRequest(referral=message)


async def _unary(ingest: IngestServiceAsyncStub, messages: list[referral_pb2.Referral]) -> None:
    for message in messages:
        await ingest.Ingest(ingest_pb2.IngestRequest(referral=message))


async def _batch(ingest: IngestServiceAsyncStub, messages: list[referral_pb2.Referral]) -> None:
    response = await ingest.IngestBatch(ingest_pb2.IngestBatchRequest(referrals=messages))
    assert response.accepted == len(messages), [r.errors for r in response.results]


async def _stream(ingest: IngestServiceAsyncStub, messages: list[referral_pb2.Referral]) -> None:
    response = await ingest.IngestStream(_requests(messages))
    assert response.accepted == len(messages), list(response.not_accepted)


Send = Callable[["IngestServiceAsyncStub", list[referral_pb2.Referral]], Awaitable[None]]
PATHS: dict[str, tuple[Send, int]] = {
    "unary": (_unary, 3),
    "small batch": (_batch, 5),
    "large batch": (_batch, LARGE),
    "large batch without the extension": (_batch, LARGE),
    "stream": (_stream, LARGE),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_field_comes_back_out_of_the_renderer_as_it_went_in(
    path: str,
    ingest: IngestServiceAsyncStub,
    target: Target,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send, count = PATHS[path]
    scanned: list[int] = []
    if path == "large batch without the extension":
        monkeypatch.setattr(native, "_scan", None)
        monkeypatch.setattr(store_module, "number_lines", store_module._number_lines)
    else:
        original = native.scan

        def counting(data: bytes, clock: Any) -> native.Scanned | None:
            found = original(data, clock)
            scanned.append(len(found.clean.offsets) if found is not None else 0)
            return found

        monkeypatch.setattr(native, "scan", counting)
    messages = [_referral(target, n) for n in range(count)]

    await send(ingest, messages)

    rendered = await _rendered(pool, target.account_id)
    assert len(rendered) == count
    for message in messages:
        row = rendered[message.partner_referral_id]
        expected = _expected(message)
        assert {name: row[name] for name in expected} == expected
        assert row["seq"].isdigit()
        assert iso_timestamp(row["received_at"]) == row["received_at"]  # already ISO
    if path == "large batch" and native.AVAILABLE:
        assert scanned == [count], "the scanner wrote every row"
    if path == "large batch without the extension":
        assert scanned == []
