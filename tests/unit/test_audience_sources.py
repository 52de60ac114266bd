"""Audience sources without a server: a caller's source read and refused field by field,
which files of a folder a pull reads, a header picking the wanted column, and the
Mailchimp source over a member reader (statuses filtered, emails hashed, "not available"
without one)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.audiences.lines import LineError, LineReader, Member
from services.common.audiences.sources import (
    DEFAULT_MAILCHIMP_STATUSES,
    AudienceSource,
    MailchimpSourceSettings,
    PullContext,
    PullError,
    PullReport,
    SftpFolderSettings,
    SourceSpec,
    source_problems,
    wrong_connection,
)
from services.common.audiences.staging import StagedRow
from services.common.egress import EgressPolicy
from services.delivery.transports.sftp import RemoteFile
from services.scheduler.audiences.mailchimp import mailchimp_reader
from services.scheduler.audiences.sftp_folder import matching

CONNECTION = "6f1c2d3e-4b5a-4c6d-8e7f-001122334455"


def _problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.field, p.code) for p in source_problems(body)[1]]


def test_an_sftp_folder_source_is_read_with_its_defaults() -> None:
    spec, problems = source_problems(
        {
            "source": "sftp_folder",
            "source_settings": {"connection_id": CONNECTION, "folder": "/out/"},
        }
    )
    assert problems == []
    assert spec == SourceSpec(
        "sftp_folder", uuid.UUID(CONNECTION), SftpFolderSettings("/out", "*", "auto", "auto"), 3600
    )


def test_upload_and_zapier_audiences_take_no_source_settings() -> None:
    assert source_problems({}) == (None, [])
    assert source_problems({"source": "zapier"}) == (None, [])
    assert _problems({"source": "upload", "source_settings": None}) == [
        ("source_settings", "UNKNOWN")
    ]
    assert _problems({"source": "ftp"}) == [("source", "INVALID_VALUE")]


def test_every_bad_setting_is_named() -> None:
    body = {
        "source": "sftp_folder",
        "source_settings": {
            "connection_id": CONNECTION.replace("-", ""),  # not the canonical form
            "folder": "",
            "pattern": "a/*.csv",
            "column": "phone",
            "format": "xml",
            "mode": "append",
        },
        "refresh_interval_s": 899,
    }
    assert sorted(_problems(body)) == [
        ("refresh_interval_s", "OUT_OF_RANGE"),
        ("source_settings.column", "INVALID_VALUE"),
        ("source_settings.connection_id", "REQUIRED"),
        ("source_settings.folder", "REQUIRED"),
        ("source_settings.format", "INVALID_VALUE"),
        ("source_settings.mode", "UNKNOWN"),
        ("source_settings.pattern", "INVALID_FORMAT"),
    ]
    fine = {"connection_id": CONNECTION, "folder": "/x"}
    boolean = {**body, "source_settings": fine, "refresh_interval_s": True}
    assert _problems(boolean) == [("refresh_interval_s", "OUT_OF_RANGE")]


def test_a_mailchimp_source_counts_every_status_but_archived_unless_told() -> None:
    spec, problems = source_problems(
        {"source": "mailchimp", "source_settings": {"connection_id": CONNECTION}}
    )
    assert problems == []
    assert spec is not None
    assert spec.settings == MailchimpSourceSettings("", DEFAULT_MAILCHIMP_STATUSES)
    assert "archived" not in DEFAULT_MAILCHIMP_STATUSES
    assert _problems(
        {"source": "mailchimp", "source_settings": {"connection_id": CONNECTION, "statuses": []}}
    ) == [("source_settings.statuses", "INVALID_VALUE")]
    refusal = wrong_connection(spec, "sftp")
    assert refusal is not None
    assert refusal.problems[0].code == "WRONG_KIND"
    assert wrong_connection(spec, "mailchimp") is None


def test_a_pull_reads_the_matching_files_and_skips_hidden_ones() -> None:
    files = [RemoteFile(n, 1, 0) for n in ("a.csv", ".b.csv", "c.CSV", "d.csv.gz", "e.txt")]
    settings = SftpFolderSettings("/out", "*.csv*")
    assert [f.name for f in matching(files, settings)] == ["a.csv", "d.csv.gz"]
    assert settings.csv_for("d.csv.gz")
    assert not settings.csv_for("e.txt")
    assert SftpFolderSettings("/out", format="csv").csv_for("e.txt")


def test_a_header_picks_the_wanted_column_or_fails_the_file() -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    reader = LineReader(csv_body=True, column="md5")
    assert reader.read(b"email,md5") is None
    assert reader.read(f"ann@example.com,{md5}".encode()) == Member(None, bytes.fromhex(md5))
    missing = LineReader(csv_body=True, column="sha256")
    found = missing.read(b"email,md5")
    assert isinstance(found, LineError)
    assert found.code == "NO_COLUMN"
    assert missing.failure == found
    # Without a header, the first column read as the kind given.
    plain = LineReader(csv_body=False, column="sha256")
    refused = plain.read(md5.encode())
    assert isinstance(refused, LineError)
    assert refused.code == "BAD_HASH"


def _context(settings: MailchimpSourceSettings) -> PullContext:
    now = datetime.now(UTC)
    source = AudienceSource(
        uuid.uuid4(), uuid.uuid4(), "mailchimp", uuid.uuid4(), settings, 3600, now, None,
        None, None, None, 0,
    )  # fmt: skip
    egress = EgressPolicy.from_env({})
    return PullContext(source, {"api_key": "x-us1"}, {"api_key": "key-us1"}, egress, PullReport())


async def _all(batches: AsyncIterator[list[StagedRow]]) -> list[StagedRow]:
    return [row async for batch in batches for row in batch]


async def test_the_mailchimp_source_hashes_the_members_of_the_statuses_it_counts() -> None:
    seen: list[Mapping[str, Any]] = []

    async def members(
        settings: Mapping[str, Any], secrets: Mapping[str, str], egress: EgressPolicy
    ) -> AsyncIterator[list[tuple[str, str]]]:
        seen.append(settings)
        yield [(" Ann@Example.com ", "subscribed"), ("old@example.com", "archived")]
        yield [("bob@example.com", "unsubscribed"), ("broken", "subscribed")]

    context = _context(MailchimpSourceSettings("list9"))
    rows = await _all(mailchimp_reader(members)(context))

    assert [r[1] for r in rows] == [
        hashlib.sha256(b"ann@example.com").digest(),
        hashlib.sha256(b"bob@example.com").digest(),
    ]
    assert rows[0][2] == hashlib.md5(b"ann@example.com").digest()
    assert (context.report.read, context.report.rejected) == (4, 2)
    assert seen == [{"api_key": "x-us1", "list_id": "list9"}]


async def test_without_a_member_reader_a_mailchimp_pull_fails_as_not_available() -> None:
    with pytest.raises(PullError) as refused:
        await _all(mailchimp_reader(None)(_context(MailchimpSourceSettings(""))))
    assert refused.value.diagnosis == "unavailable"
    assert "left as it was" in refused.value.message
