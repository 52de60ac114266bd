"""The reader of each pulled source kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from services.common.audiences.sources import SourceReader
from services.common.egress import EgressPolicy
from services.delivery.transports.mailchimp.batch import read_members
from services.delivery.transports.mailchimp.settings import MailchimpSettings
from services.scheduler.audiences.mailchimp import MemberReader, mailchimp_reader
from services.scheduler.audiences.sftp_folder import read_sftp_folder


def read_mailchimp_members(
    settings: Mapping[str, Any], secrets: Mapping[str, str], egress: EgressPolicy
) -> AsyncIterator[list[tuple[str, str]]]:
    """The Mailchimp integration's member reader over a connection's stored settings."""
    return read_members(MailchimpSettings.from_json(settings), secrets, egress)


def source_readers(
    *, mailchimp_members: MemberReader | None = read_mailchimp_members
) -> dict[str, SourceReader]:
    """Readers by source kind; `mailchimp_members` pages a Mailchimp audience's members
    (None: Mailchimp sources fail their pulls as not available)."""
    return {"sftp_folder": read_sftp_folder, "mailchimp": mailchimp_reader(mailchimp_members)}
