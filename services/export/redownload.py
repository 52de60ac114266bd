"""Re-downloading a file a delivery sent: whether its bytes can be reproduced, the part of
the range it holds, how its bytes are checked against the recorded SHA-256, and the
headers that describe it. Plain logic: no aiohttp, no SQL."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from uuid import UUID

from services.common.errors import FailedPreconditionError, NotFoundError
from services.common.layouts.codec import format_from_json, layout_from_json
from services.common.layouts.model import CsvFormat, JsonLinesFormat, OutputFormat
from services.export.delivery_store import DeliveryRecord


@dataclass(frozen=True)
class Redownload:
    """One recorded file to render again."""

    delivery_id: UUID
    index: int  # 1 = the first file (the part number of multi-part deliveries)
    name: str
    rows: int
    size: int
    sha256: str
    max_rows: int  # how the range was cut into parts (0: one file)
    content_type: str


def _format(snapshot: dict[str, Any]) -> OutputFormat:
    if snapshot.get("format"):
        return format_from_json(snapshot["format"])
    return layout_from_json(snapshot["layout"]).format


def content_type(fmt: OutputFormat) -> str:
    """The media type of a file in `fmt`."""
    if fmt.gzip:
        return "application/gzip"
    if isinstance(fmt.body, CsvFormat):
        return "text/csv; charset=utf-8"
    if isinstance(fmt.body, JsonLinesFormat):
        return "application/jsonl"
    return "application/json"


def file_name_of(path: str, fmt: OutputFormat) -> str:
    """The file's name from its recorded path. Email records `email:<name>`, with `.gz`
    when the transport compressed the attachment; the size and SHA-256 it records are
    the rendered file's, so that is what is sent again, under the rendered name."""
    name = path.rsplit("/", 1)[-1].removeprefix("email:")
    if path.startswith("email:") and not fmt.gzip:
        name = name.removesuffix(".gz")
    return name


def plan_redownload(record: DeliveryRecord, index: int) -> Redownload:
    """The file `index` of the delivery, or the reason it cannot be sent again
    (FailedPreconditionError; NotFoundError for an index the delivery has no file at)."""
    delivery = record.delivery
    if delivery.state != "succeeded":
        raise FailedPreconditionError(
            f"delivery {delivery.id} is {delivery.state}: only a delivery that succeeded has "
            "files to download again"
        )
    if not delivery.files:
        raise FailedPreconditionError(f"delivery {delivery.id} recorded no files")
    if not 1 <= index <= len(delivery.files):
        raise NotFoundError(
            f"delivery {delivery.id} has {len(delivery.files)} file(s): no file {index}"
        )
    recorded = delivery.files[index - 1]
    encrypted = record.encrypted[index - 1]
    if encrypted or (encrypted is None and recorded.path.endswith(".gpg")):
        raise FailedPreconditionError(
            f"delivery {delivery.id} went out OpenPGP-encrypted: every encryption draws a "
            "fresh session key, so its bytes cannot be reproduced; RedeliverTimeFrame sends "
            "the same referrals encrypted anew"
        )
    if delivery.layout is None:
        raise FailedPreconditionError(
            f"delivery {delivery.id} has no layout snapshot: what it rendered is not known"
        )
    fmt = _format(delivery.layout)
    return Redownload(
        delivery_id=delivery.id,
        index=index,
        name=file_name_of(recorded.path, fmt),
        rows=recorded.rows,
        size=recorded.bytes,
        sha256=recorded.sha256,
        # Every part but the last is full, so the first one's rows are the cut.
        max_rows=delivery.files[0].rows if len(delivery.files) > 1 else 0,
        content_type=content_type(fmt),
    )


def gone(plan: Redownload) -> FailedPreconditionError:
    """The refusal when the delivery's task or layout snapshot is gone."""
    return FailedPreconditionError(
        f"delivery {plan.delivery_id} cannot be rendered again: its task or its layout "
        "snapshot is gone"
    )


async def sha256_of(chunks: AsyncGenerator[bytes, None]) -> tuple[str, int]:
    """(SHA-256 hex, size) of a stream, read once and never held whole."""
    digest = hashlib.sha256()
    size = 0
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_reproduced(plan: Redownload, sha256: str, size: int) -> None:
    """Refuse a render whose bytes are not the recorded ones."""
    if sha256 != plan.sha256 or size != plan.size:
        raise FailedPreconditionError(
            f"the referrals of this range changed since: file {plan.index} of delivery "
            f"{plan.delivery_id} renders now as {size} bytes with SHA-256 {sha256}, not the "
            f"recorded {plan.size} bytes with SHA-256 {plan.sha256} (a referral of the range "
            "was deleted, or the task's campaigns changed); it cannot be downloaded again"
        )


def content_disposition(name: str) -> str:
    """An attachment named `name` (RFC 6266; `filename*` for names beyond plain ASCII)."""
    plain = name.isascii() and name.isprintable() and not any(c in name for c in '"\\')
    if plain:
        return f'attachment; filename="{name}"'
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def file_headers(plan: Redownload) -> dict[str, str]:
    """The headers of a re-downloaded file: its name, type, ETag and digests (RFC 9530;
    `Digest` in RFC 3230's form for older clients)."""
    encoded = base64.b64encode(bytes.fromhex(plan.sha256)).decode()
    return {
        "Content-Type": plan.content_type,
        "Content-Disposition": content_disposition(plan.name),
        "ETag": f'"{plan.sha256}"',
        "Repr-Digest": f"sha-256=:{encoded}:",
        "Content-Digest": f"sha-256=:{encoded}:",
        "Digest": f"sha-256={encoded}",
        "Cache-Control": "private, no-store",
    }
