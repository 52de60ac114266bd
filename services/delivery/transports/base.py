"""The one transport interface every channel implements (SFTP now; FTPS, email, HTTP APIs
and vendors later), its outcomes, and its two kinds of error.

A transport is opened once per delivery (connect, authenticate, verify the peer), sends
one or more files — each a stream of byte chunks it must never hold whole — or records
(real-time channels), or batches of rendered records (`RecordTransport`: a vendor's bulk
upsert), and is closed. It reports what it did; it does not retry, trace or
count: the engine around it does that once for every channel.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


class Diagnosis(enum.Enum):
    """What went wrong, precisely enough to tell a person what to fix."""

    DNS = "dns"  # the name does not resolve
    REFUSED = "refused"  # nothing listens there
    TIMEOUT = "timeout"
    EGRESS = "egress"  # the destination is in a refused address range
    HOST_KEY = "host_key"  # the peer is not the one pinned (SSH host key, TLS certificate)
    TLS = "tls"
    AUTH = "auth"  # credentials refused
    MISSING = "missing"  # the directory (or other target) does not exist
    PERMISSION = "permission"  # the peer refused the write
    FULL = "full"  # the peer has no room
    CONNECTION_LOST = "connection_lost"
    PROTOCOL = "protocol"  # the peer answered something the transport cannot use
    CONFIG = "config"  # the connection's own settings cannot work
    MISMATCH = "mismatch"  # a resend would not send the bytes the original did
    RECIPIENT = "recipient"  # a mail recipient refused for good (SMTP 5xx)


class TransportError(Exception):
    """A channel failure: `retryable` says whether the same send may succeed later."""

    retryable: bool = False

    def __init__(self, diagnosis: Diagnosis, message: str) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
        self.message = message


class RetryableError(TransportError):
    """Refused, timed out, connection lost, the peer full or busy: try again later."""

    retryable = True


class PermanentError(TransportError):
    """Authentication, host key mismatch, permission denied, bad settings: a person must act."""


def _no_rows() -> int:
    return 0


@dataclass(frozen=True)
class FileContext:
    """What a message about a file may say (email): whose delivery, of which task, when,
    and — once the file's chunks are all consumed — how many rows it holds."""

    delivery_id: str
    task_name: str
    delivered_at: datetime
    time_zone: str
    rows: Callable[[], int] = _no_rows


@dataclass(frozen=True)
class OutgoingFile:
    """A file to deliver: its final name (relative to the connection's folder), and, for a
    resend, the SHA-256 its bytes must have: a transport that can check before the file is
    published (a rename) refuses other bytes with a MISMATCH error."""

    name: str
    expected_sha256: str = ""
    context: FileContext | None = None


class ItemStatus(enum.Enum):
    """A per-item verdict of a receiver that answers item by item."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # permanent for this item
    RETRY = "retry"


@dataclass(frozen=True)
class ItemResult:
    """One item's verdict (a referral, a recipient, a member)."""

    key: str
    status: ItemStatus
    detail: str = ""


@dataclass(frozen=True)
class OutgoingRecord:
    """One item for a channel that takes items one by one (an API call, a member upsert):
    its stable key (the idempotency key of every attempt) and its rendered body."""

    key: str
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True)
class FileReceipt:
    """What arrived: where, how many bytes, and their SHA-256 (hex); for receivers that
    answer per recipient (email), each one's verdict — a partial outcome; for receivers
    that process the file themselves (a vendor's import job), what they reported
    (`remote`: the job's id, status and counts), recorded with the file."""

    path: str
    size: int
    sha256: str
    items: tuple[ItemResult, ...] = ()
    remote: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeReport:
    """What a connection test found, step by step."""

    steps: Sequence[str] = field(default_factory=tuple)
    peer_identity: str = ""  # e.g. the SSH host key fingerprint presented


class Transport(Protocol):
    """One channel's session. Use as `async with transport:`."""

    async def __aenter__(self) -> Transport: ...
    async def __aexit__(self, *exc: object) -> None: ...

    async def send_file(self, file: OutgoingFile, chunks: AsyncIterator[bytes]) -> FileReceipt:
        """Write `chunks` as `file`; the receiver sees the final name only when complete,
        unless the connection chose direct writes."""
        ...

    async def send_record(self, record: OutgoingRecord) -> ItemResult:
        """Send one record (real-time channels); file channels refuse with CONFIG."""
        ...

    async def probe(self) -> ProbeReport:
        """Check that a delivery would work (write and remove a probe file, for files)."""
        ...


@dataclass(frozen=True)
class OutgoingValues:
    """One referral of a delivery rendered for a channel that takes records: its seq and
    its values by the layout's column headers."""

    seq: int
    values: Mapping[str, str]


@runtime_checkable
class RecordTransport(Protocol):
    """A channel that takes a delivery as batches of records instead of files (a vendor's
    bulk upsert). The engine renders the range through the delivery's layout snapshot and
    calls `send_batch` with at most `batch_size` records at a time; each record's verdict
    comes back keyed by `str(seq)` (a record without one counts as accepted). REJECTED
    ones are recorded and the delivery still succeeds; any RETRY makes the delivery try
    again later, resending the whole range — so a batch send must be idempotent (an
    upsert). A failure of a whole call raises like any transport (RetryableError,
    PermanentError). Use as `async with transport:`."""

    batch_size: int
    # The layout columns (by header) it reads; the engine renders only those (None: all).
    headers: frozenset[str] | None

    async def __aenter__(self) -> RecordTransport: ...
    async def __aexit__(self, *exc: object) -> None: ...

    async def send_batch(self, records: Sequence[OutgoingValues]) -> Sequence[ItemResult]:
        """Send one batch; each record's verdict."""
        ...

    async def probe(self) -> ProbeReport:
        """Check that a delivery would work (credentials, the target list...)."""
        ...
