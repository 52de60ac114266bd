"""The reader of each pulled source kind."""

from __future__ import annotations

from services.common.audiences.sources import SourceReader
from services.delivery.key_slots import KeySlots
from services.delivery.transports.mailchimp.batch import member_reader
from services.scheduler.audiences.mailchimp import MemberReader, mailchimp_reader
from services.scheduler.audiences.sftp_folder import read_sftp_folder


def source_readers(
    *, mailchimp_members: MemberReader | None = None, slots: KeySlots | None = None
) -> dict[str, SourceReader]:
    """Readers by source kind. Mailchimp audiences are paged by the integration's own
    member reader, counted against the per-key cap of `slots` (shared with deliveries
    across replicas) unless a test passes its own `mailchimp_members`."""
    members = mailchimp_members or member_reader(slots)
    return {"sftp_folder": read_sftp_folder, "mailchimp": mailchimp_reader(members)}
