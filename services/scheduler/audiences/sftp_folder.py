"""The SFTP-folder reader: every file of a folder on one of the account's SFTP
connections whose name matches the source's pattern, read through the delivery
transport's own session (the connection's pinned host key and sealed secrets, the egress
policy), each file streamed through the upload's line pipeline.

Names starting with '.' are skipped (files being written: Handoff's own rename mode and
most uploaders write `.name.part` first). A folder with no matching file fails the pull
instead of emptying the audience: that is far more often a file not written yet than a
customer list that became empty, and an emptied exclusion list would let through the
very people it suppresses.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator

from services.common.audiences.lines import BadGzipError, BodyTooLargeError, LineReader, Unpacker
from services.common.audiences.sources import (
    MAX_FILES,
    FileOutcome,
    PullContext,
    PullError,
    SftpFolderSettings,
)
from services.common.audiences.staging import MAX_FILE_BYTES, LineTally, StagedRow, staged_batches
from services.delivery.transports.sftp import RemoteFile, SftpSecrets, SftpTransport, sftp_settings


def matching(files: list[RemoteFile], settings: SftpFolderSettings) -> list[RemoteFile]:
    """The files a pull reads: not hidden, matching the pattern, by name."""
    return [
        f for f in files
        if not f.name.startswith(".") and fnmatch.fnmatchcase(f.name, settings.pattern)
    ]  # fmt: skip


async def read_sftp_folder(
    context: PullContext, *, max_bytes: int = MAX_FILE_BYTES
) -> AsyncIterator[list[StagedRow]]:
    """The members of every matching file, file after file (see the module doc)."""
    settings = context.source.settings
    assert isinstance(settings, SftpFolderSettings)
    where = sftp_settings({**context.connection_settings, "remote_dir": settings.folder})
    secrets = context.secrets
    credentials = SftpSecrets(
        secrets.get("password", ""), secrets.get("private_key", ""), secrets.get("passphrase", "")
    )
    async with SftpTransport(where, credentials, context.egress) as sftp:
        files = matching(await sftp.list_files(), settings)
        if not files:
            raise PullError(
                "missing", f"no file in {settings.folder!r} matches {settings.pattern!r}; "
                "the audience is left as it was", retryable=True
            )  # fmt: skip
        if len(files) > MAX_FILES:
            raise PullError(
                "config", f"{len(files)} files in {settings.folder!r} match "
                f"{settings.pattern!r}, more than {MAX_FILES}: narrow the pattern"
            )  # fmt: skip
        for file in files:
            reader = LineReader(csv_body=settings.csv_for(file.name), column=settings.column)
            tally = LineTally(shown=20)
            unpacker = Unpacker(max_bytes)  # gzip when the file starts with its magic bytes
            valid = 0
            try:
                async for batch in staged_batches(
                    sftp.read_file(file.name), unpacker, reader, tally
                ):
                    valid += len(batch)
                    yield batch
            except (BadGzipError, BodyTooLargeError) as exc:
                raise PullError("format", f"{file.name}: {exc}") from exc
            if reader.failure is not None:
                raise PullError("format", f"{file.name}: {reader.failure.reason}")
            lines = reader.number - (1 if reader.header else 0)
            context.report.files.append(
                FileOutcome(
                    file.name,
                    file.size,
                    lines,
                    valid,
                    tally.rejected,
                    tuple(e.document() for e in tally.errors),
                )
            )
            context.report.read += lines
            context.report.rejected += tally.rejected
