"""Where an audience's members come from, and what its pulls did.

An audience is filled by an upload (`upload`), by the Zapier action (`zapier`), or pulled
on a schedule from a source: `sftp_folder` (the files matching a pattern in a folder of
one of the account's SFTP connections) or `mailchimp` (the members of a Mailchimp
audience, over one of the account's Mailchimp connections). Every pull *replaces* the
audience with what the source holds now, so a person removed at the source leaves the
audience at the next pull; a pull that fails changes nothing.

Pure values and rules (no driver): the API reads a caller's source with `source_spec`,
the store keeps `SourceSpec.to_json()`, the scheduler's refresher reads `AudienceSource`
back and records a `PullOutcome`.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from services.common.audiences.staging import StagedRow
from services.common.control_characters import has_control_character
from services.common.egress import EgressPolicy
from services.common.errors import FieldProblem, InvalidArgumentError

SOURCES = ("upload", "zapier", "sftp_folder", "mailchimp")
PULLED = ("sftp_folder", "mailchimp")
# The connection kind each pulled source reads through.
CONNECTION_KINDS = {"sftp_folder": "sftp", "mailchimp": "mailchimp"}
MIN_INTERVAL_S = 15 * 60  # a pull lists a folder or pages a whole list: not every minute
DEFAULT_INTERVAL_S = 3600
MAX_INTERVAL_S = 7 * 24 * 3600
COLUMNS = ("auto", "email", "sha256", "md5")
FORMATS = ("auto", "csv", "text")  # auto: csv for *.csv and *.csv.gz, else one value a line
MAX_PATTERN_CHARS = 200
MAX_FOLDER_CHARS = 1000
MAILCHIMP_STATUSES = (
    "subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived",
)  # fmt: skip
DEFAULT_MAILCHIMP_STATUSES = tuple(s for s in MAILCHIMP_STATUSES if s != "archived")
MAX_FILES = 1000  # a folder matching more is refused (a pattern too wide, most likely)


@dataclass(frozen=True)
class SftpFolderSettings:
    """The files of one folder whose names match `pattern` (a glob, no '/')."""

    folder: str
    pattern: str = "*"
    column: str = "auto"
    format: str = "auto"

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return {
            "folder": self.folder, "pattern": self.pattern, "column": self.column,
            "format": self.format,
        }  # fmt: skip

    def csv_for(self, name: str) -> bool:
        """Whether the file of this name is read as CSV."""
        if self.format != "auto":
            return self.format == "csv"
        return name.lower().removesuffix(".gz").endswith(".csv")


@dataclass(frozen=True)
class MailchimpSourceSettings:
    """The members of a Mailchimp audience (list) with one of `statuses`."""

    list_id: str  # "": the connection's own audience
    statuses: tuple[str, ...] = DEFAULT_MAILCHIMP_STATUSES

    def to_json(self) -> dict[str, Any]:
        """The settings column."""
        return {"list_id": self.list_id, "statuses": list(self.statuses)}


SourceSettings = SftpFolderSettings | MailchimpSourceSettings


def settings_from_json(kind: str, data: Mapping[str, Any]) -> SourceSettings:
    """A stored source's settings, by its kind."""
    if kind == "sftp_folder":
        return SftpFolderSettings(
            folder=str(data["folder"]), pattern=str(data.get("pattern", "*")),
            column=str(data.get("column", "auto")), format=str(data.get("format", "auto")),
        )  # fmt: skip
    return MailchimpSourceSettings(
        list_id=str(data.get("list_id", "")),
        statuses=tuple(data.get("statuses", DEFAULT_MAILCHIMP_STATUSES)),
    )


@dataclass(frozen=True)
class SourceSpec:
    """A pulled source as a caller asked for it (checked, not yet stored)."""

    kind: str
    connection_id: UUID
    settings: SourceSettings
    interval_s: int = DEFAULT_INTERVAL_S

    @property
    def connection_kind(self) -> str:
        """The kind of connection this source reads through."""
        return CONNECTION_KINDS[self.kind]


def _text(
    body: Mapping[str, Any], name: str, default: str, limit: int, problems: list[FieldProblem]
) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or has_control_character(value) or len(value) > limit:
        problems.append(
            FieldProblem(f"source_settings.{name}", "INVALID_FORMAT",
                         f"a string of at most {limit} characters, no control characters")
        )  # fmt: skip
        return default
    return value


def _choice(
    body: Mapping[str, Any],
    name: str,
    choices: tuple[str, ...],
    problems: list[FieldProblem],
) -> str:
    value = body.get(name, choices[0])
    if value not in choices:
        problems.append(
            FieldProblem(f"source_settings.{name}", "INVALID_VALUE",
                         "must be one of " + ", ".join(choices))
        )  # fmt: skip
        return choices[0]
    return str(value)


def _sftp_folder(body: Mapping[str, Any], problems: list[FieldProblem]) -> SftpFolderSettings:
    folder = _text(body, "folder", "", MAX_FOLDER_CHARS, problems)
    if "folder" not in body or not folder.strip():
        problems.append(
            FieldProblem("source_settings.folder", "REQUIRED", "the folder to read, e.g. /out")
        )
    pattern = _text(body, "pattern", "*", MAX_PATTERN_CHARS, problems)
    if not pattern or "/" in pattern:
        problems.append(
            FieldProblem("source_settings.pattern", "INVALID_FORMAT",
                         "a file-name pattern such as *.csv (no '/': the folder says where)")
        )  # fmt: skip
    return SftpFolderSettings(
        folder=posixpath.normpath(folder) if folder else folder,
        pattern=pattern,
        column=_choice(body, "column", COLUMNS, problems),
        format=_choice(body, "format", FORMATS, problems),
    )


def _mailchimp(body: Mapping[str, Any], problems: list[FieldProblem]) -> MailchimpSourceSettings:
    list_id = _text(body, "list_id", "", 100, problems)
    statuses = body.get("statuses", list(DEFAULT_MAILCHIMP_STATUSES))
    if (
        not isinstance(statuses, list)
        or not statuses
        or any(s not in MAILCHIMP_STATUSES for s in statuses)
    ):
        problems.append(
            FieldProblem("source_settings.statuses", "INVALID_VALUE",
                         "a non-empty list of " + ", ".join(MAILCHIMP_STATUSES))
        )  # fmt: skip
        statuses = list(DEFAULT_MAILCHIMP_STATUSES)
    return MailchimpSourceSettings(list_id, tuple(dict.fromkeys(statuses)))


SETTING_NAMES = {
    "sftp_folder": {"connection_id", "folder", "pattern", "column", "format"},
    "mailchimp": {"connection_id", "list_id", "statuses"},
}


def _connection_id(settings: Mapping[str, Any]) -> UUID | None:
    value = settings.get("connection_id")
    if not isinstance(value, str):
        return None
    try:
        found = UUID(value)
    except ValueError:
        return None
    return found if str(found) == value.lower() else None  # the canonical form only


def source_problems(body: Mapping[str, Any]) -> tuple[SourceSpec | None, list[FieldProblem]]:
    """A new audience's `source`, `source_settings` and `refresh_interval_s` as a
    SourceSpec (None for an upload or Zapier audience), with the problems found."""
    problems: list[FieldProblem] = []
    source = body.get("source", "upload")
    if source not in SOURCES:
        problems.append(
            FieldProblem("source", "INVALID_VALUE", "must be one of " + ", ".join(SOURCES))
        )
        return None, problems
    assert isinstance(source, str)
    if source not in PULLED:
        for name in ("source_settings", "refresh_interval_s"):
            if name in body:
                problems.append(FieldProblem(name, "UNKNOWN", f"a {source} audience is not pulled"))
        return None, problems
    settings = body.get("source_settings")
    if not isinstance(settings, dict):
        problems.append(
            FieldProblem("source_settings", "REQUIRED", f"a {source} audience needs its settings")
        )
        return None, problems
    for name in sorted(set(settings) - SETTING_NAMES[source]):
        problems.append(
            FieldProblem(f"source_settings.{str(name)[:100]}", "UNKNOWN", f"not a {source} setting")
        )
    connection = _connection_id(settings)
    if connection is None:
        problems.append(
            FieldProblem("source_settings.connection_id", "REQUIRED",
                         f"the id of one of the account's {CONNECTION_KINDS[source]} connections")
        )  # fmt: skip
    read = (
        _sftp_folder(settings, problems)
        if source == "sftp_folder"
        else _mailchimp(settings, problems)
    )
    every = body.get("refresh_interval_s", DEFAULT_INTERVAL_S)
    if (
        isinstance(every, bool)
        or not isinstance(every, int)
        or not (MIN_INTERVAL_S <= every <= MAX_INTERVAL_S)
    ):
        problems.append(
            FieldProblem("refresh_interval_s", "OUT_OF_RANGE",
                         f"whole seconds from {MIN_INTERVAL_S} (15 minutes) to {MAX_INTERVAL_S}")
        )  # fmt: skip
        every = DEFAULT_INTERVAL_S
    if problems or connection is None:
        return None, problems
    return SourceSpec(source, connection, read, every), problems


def wrong_connection(spec: SourceSpec, found_kind: str) -> InvalidArgumentError | None:
    """The refusal of a connection of another kind than the source reads, or None."""
    if found_kind == spec.connection_kind:
        return None
    reason = (
        f"connection {spec.connection_id} is a {found_kind} connection; a {spec.kind} "
        f"source reads through a {spec.connection_kind} connection"
    )
    return InvalidArgumentError(
        reason, [FieldProblem("source_settings.connection_id", "WRONG_KIND", reason)]
    )


@dataclass(frozen=True)
class FileOutcome:
    """What one pulled file gave."""

    name: str
    bytes: int
    lines: int
    valid: int
    rejected: int
    errors: tuple[dict[str, object], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As stored and shown."""
        return {
            "name": self.name, "bytes": self.bytes, "lines": self.lines, "valid": self.valid,
            "rejected": self.rejected, "errors": list(self.errors),
        }  # fmt: skip


@dataclass
class PullReport:
    """What a reader found while pulling (filled as it reads; kept even when it fails)."""

    files: list[FileOutcome] = field(default_factory=list)
    read: int = 0  # members (or lines) read from the source
    rejected: int = 0  # of them refused (bad lines, statuses not counted)


@dataclass(frozen=True)
class PullOutcome:
    """What one pull did: merged (`ok`), or why nothing changed."""

    ok: bool
    finished_at: datetime
    report: PullReport
    accepted: int = 0  # distinct people merged
    member_count: int = 0  # the audience's people after the pull
    error: str = ""
    diagnosis: str = ""  # host_key, auth, refused, missing, format, config, unavailable, ...
    retryable: bool = False  # a failure that may pass: the next pull comes sooner

    def to_json(self) -> dict[str, Any]:
        """The last_outcome column (and the API's view of it)."""
        return {
            "ok": self.ok,
            "finished_at": self.finished_at.isoformat(),
            "read": self.report.read,
            "rejected": self.report.rejected,
            "accepted": self.accepted,
            "member_count": self.member_count,
            "files": [f.to_json() for f in self.report.files],
            "error": self.error,
            "diagnosis": self.diagnosis,
            "retryable": self.retryable,
        }


@dataclass(frozen=True)
class AudienceSource:
    """A pulled audience's source as stored, with its schedule and last pull."""

    audience_id: UUID
    account_id: UUID
    kind: str
    connection_id: UUID | None  # None: the connection was deleted
    settings: SourceSettings
    interval_s: int
    next_due_at: datetime
    lease_until: datetime | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_outcome: dict[str, Any] | None
    failures: int

    def settings_document(self) -> dict[str, Any]:
        """The settings as the API shows them (the connection id among them)."""
        connection = str(self.connection_id) if self.connection_id else None
        return {"connection_id": connection, **self.settings.to_json()}

    def refresh_document(self, now: datetime) -> dict[str, Any]:
        """The schedule and last pull as the API shows them."""
        running = self.lease_until is not None and self.lease_until > now

        def at(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "interval_s": self.interval_s,
            "next_refresh_at": self.next_due_at.isoformat(),
            "running": running,
            "last_started_at": at(self.last_started_at),
            "last_refresh_at": at(self.last_finished_at),
            "consecutive_failures": self.failures,
            "last_outcome": self.last_outcome,
        }


@dataclass(frozen=True)
class PullContext:
    """What a reader is given: the source, its connection's settings and plain secrets
    (opened for this pull only, never logged), the egress policy, and a report to fill."""

    source: AudienceSource
    connection_settings: Mapping[str, Any]
    secrets: Mapping[str, str] = field(repr=False)
    egress: EgressPolicy
    report: PullReport


class SourceReader(Protocol):
    """Reads a source's members now, in batches ready for the all-or-nothing import.

    Raises (anything) when the source cannot be read whole: the import then merges
    nothing. Errors meant for the user are the delivery transports' `TransportError`s
    (a diagnosis and a message) or `PullError`."""

    def __call__(self, context: PullContext) -> AsyncIterator[list[StagedRow]]: ...


class PullError(Exception):
    """A source that cannot be pulled as it is (its message is for the user);
    `retryable`: it may pass by itself (a file not written yet), so try again sooner."""

    def __init__(self, diagnosis: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
        self.message = message
        self.retryable = retryable
