"""The reader of each pulled source kind."""

from __future__ import annotations

from services.common.audiences.sources import SourceReader
from services.scheduler.audiences.mailchimp import MemberReader, mailchimp_reader
from services.scheduler.audiences.sftp_folder import read_sftp_folder


def source_readers(*, mailchimp_members: MemberReader | None = None) -> dict[str, SourceReader]:
    """Readers by source kind; `mailchimp_members` is the Mailchimp integration's member
    reader (without it, Mailchimp sources fail their pulls as not available)."""
    return {"sftp_folder": read_sftp_folder, "mailchimp": mailchimp_reader(mailchimp_members)}
