"""The Mailchimp source: a Mailchimp audience's members, paged through by the Mailchimp
member reader (the Mailchimp integration's code), filtered by status and hashed here.

The member reader is plugged in (`source_readers(mailchimp_members=...)`); without one a
Mailchimp source fails its pulls with a clear "not available" instead of emptying the
audience.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from services.common.audiences.lines import member_of
from services.common.audiences.sources import (
    MailchimpSourceSettings,
    PullContext,
    PullError,
    SourceReader,
)
from services.common.audiences.staging import StagedRow
from services.common.egress import EgressPolicy

# (connection settings, plain secrets, egress) -> pages of (email, status)
MemberReader = Callable[
    [Mapping[str, Any], Mapping[str, str], EgressPolicy], AsyncIterator[list[tuple[str, str]]]
]


def mailchimp_reader(read_members: MemberReader | None) -> SourceReader:
    """The Mailchimp source reader over `read_members` (None: not available)."""

    async def read(context: PullContext) -> AsyncIterator[list[StagedRow]]:
        settings = context.source.settings
        assert isinstance(settings, MailchimpSourceSettings)
        if read_members is None:
            raise PullError(
                "unavailable", "pulling Mailchimp audiences is not available in this build; "
                "the audience is left as it was"
            )  # fmt: skip
        connection = dict(context.connection_settings)
        if settings.list_id:
            connection["list_id"] = settings.list_id
        wanted, line = frozenset(settings.statuses), 0
        async for page in read_members(connection, context.secrets, context.egress):
            batch: list[StagedRow] = []
            for email, status in page:
                line += 1
                found = member_of(email, "email") if status in wanted else None
                if found is None or isinstance(found, tuple):
                    context.report.rejected += 1  # another status, or not an email
                    continue
                batch.append((line, found.sha256, found.md5))
            context.report.read += len(page)
            if batch:
                yield batch

    return read
