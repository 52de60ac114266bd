"""Re-download rules: which recorded file can be rendered again, which part of the range
it holds, and the headers that name and fingerprint it."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.common.errors import FailedPreconditionError, NotFoundError
from services.common.layouts.codec import layout_to_json
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.export.delivery_store import DeliveryRecord
from services.export.redownload import (
    check_reproduced,
    content_disposition,
    file_headers,
    plan_redownload,
    sha256_of,
)
from services.scheduler.tasks.model import DeliveredFile, SavedDelivery

AT = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
SNAPSHOT = {"layout_id": None, "layout_version": 1, "layout": layout_to_json(DEFAULT_LAYOUT),
            "custom_fields": {}, "format": None}  # fmt: skip


def _record(
    *files: DeliveredFile, state: str = "succeeded", encrypted: bool | None = False
) -> DeliveryRecord:
    delivery = SavedDelivery(
        id=uuid.uuid4(), task_id=uuid.uuid4(), account_id=uuid.uuid4(), purpose="scheduled",
        after_seq=0, through_seq=10, state=state, layout=SNAPSHOT, reserved_at=AT, attempts=1,
        lease_until=None, next_attempt_at=AT, rows=sum(f.rows for f in files),
        bytes=sum(f.bytes for f in files), files=files, error=None, diagnosis=None,
        finished_at=AT, resend_of=None,
    )  # fmt: skip
    return DeliveryRecord(delivery, uuid.uuid4(), tuple(encrypted for _ in files), None)


def _file(name: str, rows: int) -> DeliveredFile:
    return DeliveredFile(f"/in/{name}", rows, rows * 10, "ab" * 32)


def test_a_part_is_cut_as_the_delivery_cut_it_by_its_first_part_s_rows() -> None:
    record = _record(_file("a_part0001.csv", 4), _file("a_part0002.csv", 4), _file("c.csv", 2))
    plan = plan_redownload(record, 3)
    assert (plan.name, plan.rows, plan.size, plan.max_rows) == ("c.csv", 2, 20, 4)
    assert plan.content_type == "text/csv; charset=utf-8"
    assert plan_redownload(_record(_file("one.csv", 9)), 1).max_rows == 0
    with pytest.raises(NotFoundError, match="has 3 file"):
        plan_redownload(record, 4)


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (_record(_file("a.csv", 1), state="dead"), "only a delivery that succeeded"),
        (_record(), "recorded no files"),
        (_record(_file("a.csv", 1), encrypted=True), "session key"),
        (_record(_file("a.csv.gpg", 1), encrypted=None), "session key"),  # older records
    ],
)
def test_files_that_cannot_be_reproduced_are_refused_saying_why(
    record: DeliveryRecord, why: str
) -> None:
    with pytest.raises(FailedPreconditionError, match=why):
        plan_redownload(record, 1)


def test_without_a_layout_snapshot_nothing_is_rendered() -> None:
    record = _record(_file("a.csv", 1))
    bare = replace(record, delivery=replace(record.delivery, layout=None))
    with pytest.raises(FailedPreconditionError, match="no layout snapshot"):
        plan_redownload(bare, 1)


async def _chunks(*parts: bytes) -> AsyncGenerator[bytes, None]:
    for part in parts:
        yield part


async def test_a_render_with_other_bytes_is_refused_naming_both_hashes() -> None:
    body = b"email\nada@example.com\n"
    recorded = DeliveredFile("/in/a.csv", 1, len(body), hashlib.sha256(body).hexdigest())
    plan = plan_redownload(_record(recorded), 1)
    check_reproduced(plan, *await sha256_of(_chunks(body[:5], body[5:])))
    other = await sha256_of(_chunks(body.replace(b"ada", b"bob")))
    with pytest.raises(FailedPreconditionError, match="changed since") as refused:
        check_reproduced(plan, *other)
    assert recorded.sha256 in refused.value.message
    assert other[0] in refused.value.message


def test_names_beyond_ascii_get_an_rfc_6266_filename_star() -> None:
    assert content_disposition("a.csv") == 'attachment; filename="a.csv"'
    assert content_disposition('Müller "1".csv') == (
        "attachment; filename=\"M_ller _1_.csv\"; filename*=UTF-8''M%C3%BCller%20%221%22.csv"
    )


def test_the_headers_fingerprint_the_recorded_bytes() -> None:
    body = b"x"
    recorded = DeliveredFile("/in/a.csv", 1, 1, hashlib.sha256(body).hexdigest())
    headers = file_headers(plan_redownload(_record(recorded), 1))
    encoded = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert headers["ETag"] == f'"{recorded.sha256}"'
    assert headers["Repr-Digest"] == headers["Content-Digest"] == f"sha-256=:{encoded}:"
    assert headers["Digest"] == f"sha-256={encoded}"


def test_an_email_attachment_is_named_as_rendered_not_as_compressed_for_the_mail() -> None:
    recorded = DeliveredFile("email:daily.csv.gz", 1, 1, "ab" * 32)
    assert plan_redownload(_record(recorded), 1).name == "daily.csv"
