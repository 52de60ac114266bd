"""Sailthru in the delivery engine (scheduled mode): each file of a delivery — the task's
layout rendered as CSV, email first — is spooled, uploaded as a list import job and
polled to completion; the receipt names the job and carries its counts.

The upload is a multipart POST read from the spooled file in chunks: memory holds one
chunk whatever the range. A resend's bytes are checked against the original's SHA-256
before anything is uploaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from services.common.egress import EgressPolicy
from services.delivery.spool import Spool, SpoolFullError
from services.delivery.transports.base import (
    Diagnosis,
    FileReceipt,
    ItemResult,
    OutgoingFile,
    OutgoingRecord,
    PermanentError,
    ProbeReport,
)
from services.delivery.transports.sailthru.client import JobPolling, SailthruClient, shared_gate
from services.delivery.transports.sailthru.settings import SailthruSettings


def first_column_is_email(head: bytes) -> bool:
    """Whether a CSV's header row starts with an `email` column (BOM and quotes aside)."""
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")
    first = line.split(",", 1)[0].strip().strip('"').strip()
    return first.lower() == "email"


class SailthruTransport:
    """One delivery's session with Sailthru (the import job API)."""

    def __init__(
        self,
        settings: SailthruSettings,
        secrets: Mapping[str, str],
        egress: EgressPolicy,
        *,
        spool: Spool | None = None,
        polling: JobPolling | None = None,
    ) -> None:
        self.settings = settings
        self._spool = spool or Spool()
        api_key = secrets.get("api_key", "")
        self._client = SailthruClient(
            settings.base_url,
            api_key,
            secrets.get("api_secret", ""),
            egress,
            timeout_s=settings.timeout_s,
            gate=shared_gate(api_key),
            polling=polling,
        )

    async def __aenter__(self) -> SailthruTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def send_file(self, file: OutgoingFile, chunks: AsyncIterator[bytes]) -> FileReceipt:
        """Import one CSV into the connection's list; the job's id and counts."""
        if not file.name.endswith(".csv"):
            raise PermanentError(
                Diagnosis.CONFIG,
                f"Sailthru imports CSV files: {file.name} is not one (set the task's format "
                "to CSV, without gzip)",
            )
        with self._spool.folder() as folder:
            path = Path(folder) / "import.csv"
            try:
                spooled = await self._spool.write(path, chunks)
            except SpoolFullError as exc:
                raise PermanentError(Diagnosis.FULL, str(exc)) from exc
            if file.expected_sha256 and spooled.sha256 != file.expected_sha256:
                raise PermanentError(
                    Diagnosis.MISMATCH,
                    f"{file.name} renders with SHA-256 {spooled.sha256} now, not the "
                    f"original's {file.expected_sha256}: nothing was uploaded",
                )
            with path.open("rb") as head:
                if not first_column_is_email(head.read(4096)):
                    raise PermanentError(
                        Diagnosis.CONFIG,
                        "Sailthru's import takes the email first: the task's layout must "
                        "start with the email column, headed 'email'",
                    )
            status = await self._client.import_file(
                self.settings.list_name, path, self.settings.postback_url
            )
        remote: dict[str, Any] = {"job_id": status.job_id, "status": status.state.value}
        remote |= dict(status.counts or {})
        return FileReceipt(
            f"sailthru:{self.settings.list_name}/job/{status.job_id}",
            spooled.size,
            spooled.sha256,
            remote=remote,
        )

    async def send_record(self, record: OutgoingRecord) -> ItemResult:
        """Scheduled Sailthru takes files; real time has its own sender (live loop)."""
        raise PermanentError(Diagnosis.CONFIG, "Sailthru deliveries are list imports (files)")

    async def probe(self) -> ProbeReport:
        """A signed `GET /list` of the connection's list."""
        return ProbeReport(tuple(await self._client.probe(self.settings.list_name)))


def sailthru_transport_factory(
    spool: Spool, polling: JobPolling | None = None
) -> Callable[[dict[str, Any], dict[str, str], EgressPolicy], SailthruTransport]:
    """The engine's factory for `sailthru` connections (`spool`: where import files wait
    for their upload; the deployment's spool, shared with email)."""

    def make(
        settings: dict[str, Any], secrets: dict[str, str], egress: EgressPolicy
    ) -> SailthruTransport:
        parsed = SailthruSettings.from_json(settings)
        if parsed.mode != "scheduled":
            raise PermanentError(
                Diagnosis.CONFIG,
                "this Sailthru connection runs in real time (each referral as it comes): set "
                "its mode to scheduled for a task to deliver through it",
            )
        return SailthruTransport(parsed, secrets, egress, spool=spool, polling=polling)

    return make
